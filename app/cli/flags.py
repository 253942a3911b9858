"""Command-line flags built from the declared settings (app/core/fields.py): load and sampling flags.

A flag left out means "as the app would": the user's default load settings (and the model's own overrides)
from the settings file, the chosen sampling preset. So `hearth chat` loads a model exactly as the window
does, and `--ngl auto` is the default there too.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.core.errors import ConfigError
from app.core.fields import LOAD_FIELDS, SAMPLING_FIELDS, Field, apply_sampling_values
from app.core.load_config import LoraAdapter

if TYPE_CHECKING:
    from app.cli.context import CliContext
    from app.core.load_config import LoadConfig
    from app.core.sampling import SamplingSettings


def _dest(prefix: str, field: Field) -> str:
    return f"{prefix}_{field.name}"


def _help(field: Field) -> str:
    names = [c.label.lower() for c in (*field.special, *field.choices)]
    shown = " | ".join(names) if field.choices else " | ".join([*names, "N"]) if names else "N"
    return f"{field.help} [{shown}]"


def add_load_flags(parser: argparse.ArgumentParser) -> None:
    """--ctx --ngl --threads --flash-attn --kv --parallel and --lora (defaults: the app's settings)."""
    group = parser.add_argument_group("loading (default: your Hearth settings for this model)")
    for field in LOAD_FIELDS:
        if field.flag:
            group.add_argument(field.flag, dest=_dest("load", field), metavar=field.name.upper(), help=_help(field))
    group.add_argument("--lora", action="append", default=[], metavar="FILE[:SCALE]", help="apply a LoRA adapter")
    group.add_argument(
        "--rpc",
        default="",
        metavar="HOST:PORT,...",
        help="split the model over these `hearth rpc-worker` machines too (in proportion to free memory)",
    )
    group.add_argument(
        "--draft", default="", metavar="FILE|auto", help="a small model with the same vocabulary drafting tokens"
    )


def add_sampling_flags(parser: argparse.ArgumentParser) -> None:
    """--temperature --top-k --top-p --min-p --repeat-penalty ... --max-tokens --seed."""
    group = parser.add_argument_group("sampling (default: the preset's values)")
    for field in SAMPLING_FIELDS:
        group.add_argument(field.flag, dest=_dest("sampling", field), metavar="N", help=_help(field))


def load_values(args: argparse.Namespace) -> dict[str, Any]:
    """The load fields given on the command line, in stored form, validated (ConfigError names the flag)."""
    values: dict[str, Any] = {}
    for field in LOAD_FIELDS:
        text = getattr(args, _dest("load", field), None)
        if text is not None:
            values[field.name] = _checked(field, text)
    return values


def load_config(args: argparse.Namespace, ctx: CliContext, model: Path) -> LoadConfig:
    """The user's load settings for this model (as the app would load it), with the flags given applied."""
    from app.core.load_policy import configured_load

    config = configured_load(ctx.settings, Path(model).name, **load_values(args))
    return apply_file_flags(config, args, ctx, model)


def apply_file_flags(config: LoadConfig, args: argparse.Namespace, ctx: CliContext, model: Path) -> LoadConfig:
    """The load flags that name files or machines (--lora, --rpc, --draft) applied to a config; every command
    that loads a model takes them through here."""
    from app.core.rpc import parse_workers

    loras = tuple(LoraAdapter.parse(item) for item in getattr(args, "lora", []) or [])
    if loras:
        config = replace(config, loras=loras)
    workers = parse_workers(getattr(args, "rpc", "") or "")
    if workers:
        config = replace(config, rpc_workers=workers)
    draft = getattr(args, "draft", "") or ""
    if draft == "auto":
        draft = _library_draft(ctx, Path(model))
    if draft:
        config = replace(config, draft_model=draft)
    return config


def _library_draft(ctx: CliContext, model: Path) -> str:
    """--draft auto: the smallest model in the library that can draft for this one."""
    from app.core.draft_models import find_draft_model

    candidates = [entry.path for entry in ctx.library.scan() if entry.ok]
    found = find_draft_model(model, candidates)
    if found is None:
        raise ConfigError(f"no model in your library can draft for {model.name} (same vocabulary, much smaller)")
    return str(found)


def sampling(args: argparse.Namespace, base: SamplingSettings) -> SamplingSettings:
    """base (a preset) with the sampling flags given applied, validated."""
    values = {}
    for field in SAMPLING_FIELDS:
        text = getattr(args, _dest("sampling", field), None)
        if text is not None:
            values[field.name] = _checked(field, text)
    return apply_sampling_values(base, values) if values else base


def _checked(field: Field, text: str) -> Any:
    try:
        return field.validate(field.parse(text))
    except ConfigError as exc:
        raise ConfigError(f"{field.flag}: {exc}") from None
