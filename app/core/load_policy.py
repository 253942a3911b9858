"""How a model gets loaded, for every client: the user's load settings -> a concrete LoadConfig ("auto" GPU
layers from the fit estimate), the load itself with an out-of-memory retry, and the fit shown per model.

The app, `hearth chat`, `hearth serve` and the Models page all call these, so "auto" means the same layer
count everywhere, and the same one `hearth fit` reports.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.core.errors import ConfigError, GGUFError, ModelFileMissingError, ModelLoadError
from app.core.fields import DEFAULT_SETTING, LOAD_FIELDS, apply_load_values
from app.core.fit import (
    Fit,
    auto_gpu_layers,
    classify,
    estimate,
    load_with_oom_retry,
    model_fit,
    suggest_layers_after_oom,
)
from app.core.gguf_info import ModelInfo, format_bytes, inspect
from app.core.hardware import HardwareInfo
from app.core.load_config import AUTO_LAYERS, LoadConfig, LoraAdapter

if TYPE_CHECKING:
    from app.core.engine import Engine, LoadedModel, ProgressCallback
    from app.core.settings import Settings

log = logging.getLogger("hearth.engine")

LORAS = "loras"  # the key of a model's "load" override that holds its LoRA adapters


def default_load_values(settings: Settings) -> dict[str, Any]:
    """The user's default load settings in stored form (what the panel shows for a model never changed)."""
    return {f.name: settings.get(DEFAULT_SETTING[f.name]) for f in LOAD_FIELDS}


def model_load_values(settings: Settings, model_name: str) -> dict[str, Any]:
    """The load settings for one model file: the defaults, overridden by what the user chose for it."""
    values = default_load_values(settings)
    if model_name:
        override = settings.model_override(model_name).get("load", {})
        if isinstance(override, dict):
            values.update({k: v for k, v in override.items() if k in values})
    return values


def model_loras(settings: Settings, model_name: str) -> tuple[LoraAdapter, ...]:
    """The LoRA adapters the user attached to one model file (its "load" override's "loras": a list of
    {"path", "scale"}). An unusable entry is left out with a warning."""
    if not model_name:
        return ()
    stored = settings.model_override(model_name).get("load", {})
    items = stored.get(LORAS) if isinstance(stored, dict) else None
    adapters = []
    for item in items if isinstance(items, list) else ():
        try:
            adapters.append(LoraAdapter.from_dict(item))
        except ConfigError as exc:
            log.warning("LoRA adapter ignored for %s: %s", model_name, exc)
    return tuple(adapters)


def save_model_load(
    settings: Settings,
    model_name: str,
    values: dict[str, Any] | None = None,
    loras: tuple[LoraAdapter, ...] | None = None,
) -> None:
    """Store a model's load settings (the declared fields, stored form) and/or its LoRA adapters; what is not
    given keeps its stored value."""
    stored = settings.model_override(model_name).get("load", {})
    merged = dict(stored) if isinstance(stored, dict) else {}
    if values is not None:
        merged.update(values)
    if loras is not None:
        merged[LORAS] = [adapter.to_dict() for adapter in loras]
        if not loras:
            merged.pop(LORAS)
    settings.set_model_override(model_name, "load", merged or None)


def configured_load(settings: Settings, model_name: str = "", **changes: Any) -> LoadConfig:
    """The LoadConfig the user's settings ask for (GPU layers may still be "auto"), with the LoRA adapters
    attached to this model (changes["loras"], a tuple of LoraAdapter, replaces them). An invalid stored value
    falls back to its default with a warning: a hand-edited settings file never stops a load."""
    loras = changes.pop(LORAS, None)
    values = {**model_load_values(settings, model_name), **changes}
    config = LoadConfig()
    for name, stored in values.items():
        try:
            config = apply_load_values(config, {name: stored})
        except ConfigError as exc:
            log.warning("load setting %s ignored for %s: %s", name, model_name or "defaults", exc)
    loras = model_loras(settings, model_name) if loras is None else tuple(loras)
    return replace(config, loras=loras) if loras else config


@dataclass(frozen=True)
class LoadPlan:
    """A concrete config for one model on this machine, and why its GPU layer count was chosen."""

    path: Path
    info: ModelInfo
    config: LoadConfig
    reason: str


def plan_load(path: Path, config: LoadConfig, hardware: HardwareInfo) -> LoadPlan:
    """Resolve "auto" GPU layers with the fit estimate (exactly what `hearth fit` reports as auto).
    Raises ModelLoadError for a file that is not a readable GGUF, ConfigError for a bad config."""
    config.validate()  # before "auto"/"all" are resolved: a bad value must not be silently replaced
    path = Path(path)
    if not path.is_file():
        raise ModelFileMissingError(f"{path.name}: file not found ({path})")
    try:
        info = inspect(path)
    except GGUFError as exc:
        raise ModelLoadError(str(exc)) from None
    except OSError as exc:
        raise ModelLoadError(f"{Path(path).name}: {exc.strerror or exc}") from None
    config.validate(info)  # e.g. more GPU layers than the model has: refused on any machine
    layers = config.n_gpu_layers
    if not hardware.gpu_offload:
        return LoadPlan(path, info, replace(config, n_gpu_layers=0), f"this llama.cpp build is {hardware.backend}-only")
    if layers != AUTO_LAYERS:
        why = "all layers, as you chose" if layers == -1 else f"{layers} layers, as you chose"
        return LoadPlan(path, info, config, why)
    n_ctx = config.effective_ctx(info)
    hardware = _without_draft(hardware, config, n_ctx)
    layers = auto_gpu_layers(info, hardware, n_ctx, config.kv_cache_type, flash_attention=config.flash_attention)
    total = (info.block_count or 0) + 1
    reason = f"auto: {layers} of {total} layers fit in the free GPU memory" if hardware.has_gpu else "auto: no GPU"
    return LoadPlan(path, info, replace(config, n_gpu_layers=layers), reason)


def _without_draft(hardware: HardwareInfo, config: LoadConfig, n_ctx: int) -> HardwareInfo:
    """The machine as the target model sees it when a draft model loads beside it (all its layers on the
    GPU): the fit estimate counts both."""
    if not config.draft_model or not hardware.gpus:
        return hardware
    try:
        draft = inspect(Path(config.draft_model))
    except (GGUFError, OSError):
        return hardware  # the engine names the problem when it loads
    need = estimate(draft, (draft.block_count or 0) + 1, n_ctx, config.kv_cache_type).gpu_bytes
    gpus = tuple(replace(g, free_bytes=max(0, g.free_bytes - need)) for g in hardware.gpus)
    return replace(hardware, gpus=gpus)


@dataclass(frozen=True)
class LoadOutcome:
    model: LoadedModel
    notes: tuple[str, ...]  # what the user should know (e.g. "retried with fewer GPU layers")


def load_planned(
    engine: Engine,
    plan: LoadPlan,
    hardware: HardwareInfo,
    progress: ProgressCallback | None = None,
    *,
    retry: bool = True,
) -> LoadOutcome:
    """Load with the plan's layers; out of memory -> retried with fewer layers (down to the CPU), once the
    estimator's suggestion and then at least a quarter fewer each time. Raises the engine's errors."""
    info, config = plan.info, plan.config
    n_ctx = config.effective_ctx(info)
    if config.n_gpu_layers == 0:
        return LoadOutcome(engine.load_exact(plan.path, config, progress), ())
    model, used = load_with_oom_retry(
        lambda k: engine.load_exact(plan.path, replace(config, n_gpu_layers=k), progress),
        config.n_gpu_layers,
        lambda k: suggest_layers_after_oom(info, hardware, k, n_ctx, config.kv_cache_type),
        retry=retry,
    )
    notes: tuple[str, ...] = ()
    if used != config.n_gpu_layers:
        notes = (f"The GPU ran out of memory with {config.n_gpu_layers} layers; loaded with {used} instead.",)
    return LoadOutcome(model, notes)


# ---- the fit shown beside each model ------------------------------------------------------------------------


@dataclass(frozen=True)
class FitSummary:
    """How a model fits this machine with the chosen context, KV type and GPU layers."""

    verdict: Fit
    label: str  # "Fits on GPU", "20 of 33 layers on GPU", "CPU only", "Fits in RAM", "Tight", "Too big"
    tooltip: str  # the estimate in numbers
    gpu_layers: int
    layers_total: int


def fit_summary(info: ModelInfo, hardware: HardwareInfo, config: LoadConfig) -> FitSummary:
    """The picker's and Models page's fit column, from the core estimate (not the file size)."""
    n_ctx = config.effective_ctx(info)
    total = (info.block_count or 0) + 1
    if config.n_gpu_layers == AUTO_LAYERS or not hardware.gpu_offload:
        verdict, est = model_fit(info, hardware, n_ctx, config.kv_cache_type)
    else:
        layers = total if config.n_gpu_layers == -1 else min(config.n_gpu_layers, total)
        est = estimate(info, layers, n_ctx, config.kv_cache_type, flash_attention=config.flash_attention)
        verdict = classify(est, info.block_count or 0, hardware)
        best_free = max((g.free_bytes for g in hardware.gpus), default=0)
        if layers and est.gpu_bytes > best_free:  # the chosen layers do not fit: the load would retry
            verdict = Fit.TIGHT
    layers = est.n_gpu_layers
    if verdict is Fit.TOO_BIG:
        label = "Too big"
    elif verdict is Fit.TIGHT:
        label = "Tight"
    elif layers == 0:
        label = "CPU only"
    elif layers >= total:
        label = "Fits on GPU"
    else:
        label = f"{layers} of {total} layers on GPU"
    tooltip = (
        f"Context {n_ctx:,}, KV cache {config.kv_cache_type}: {layers} of {total} layers on the GPU; "
        f"needs {format_bytes(est.gpu_bytes)} of GPU memory and {format_bytes(est.cpu_bytes)} of RAM "
        f"({format_bytes(hardware.available_ram)} RAM available"
        + (f", {format_bytes(max(g.free_bytes for g in hardware.gpus))} GPU memory free)" if hardware.gpus else ")")
    )
    return FitSummary(verdict, label, tooltip, layers, total)


FitFunction = Callable[[ModelInfo], FitSummary]
