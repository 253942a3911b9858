"""LoRA adapters: whether an adapter GGUF fits a base model (architecture and every tensor shape, as
llama.cpp checks them), which bases in the library each adapter fits, and PEFT adapter folders (Hugging
Face format) with the exact command that converts them to GGUF."""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from app.core.gguf_info import ALL_BLOCKS, ModelInfo, shape_of

if TYPE_CHECKING:
    from app.core.library import LibraryEntry

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
CONVERTER = "convert_lora_to_gguf.py"
CONVERTER_NEEDS = "pip install torch transformers safetensors gguf"


def lora_mismatch(adapter: ModelInfo, base: ModelInfo) -> str | None:
    """Why `adapter` cannot be applied to `base`, in one sentence, or None when it fits.

    The same rules as llama.cpp's llama_adapter_lora_init: general.type "adapter", adapter.type "lora", the
    base's architecture, and for each adapted weight W (W.lora_a, W.lora_b): W exists in the base, lora_a's
    input size is W's, lora_b's output size is W's, and the two share their rank (token_embd's pair is
    stored the other way round). Adapter files carry no embedding length or block count of their own, so
    the tensor shapes are what tell a 7B adapter from a 13B one.
    """
    name, base_name = adapter.path.name, base.display_name
    if not adapter.is_adapter:
        return f"{name} is not a LoRA adapter (its general.type is {adapter.model_type!r})"
    kind = adapter.metadata.get("adapter.type")
    if kind != "lora":
        return f"{name} is a {kind or 'untyped'} adapter; llama.cpp applies LoRA adapters only"
    if base.is_adapter:
        return f"{base.path.name} is itself an adapter, not a model"
    if adapter.architecture != base.architecture:
        return f"{name} is for {adapter.architecture} models; {base_name} is a {base.architecture} model"
    if not adapter.matrix_shapes or not base.matrix_shapes:
        return None  # infos from an older index: llama.cpp itself will check when loading
    pairs = _pairs(adapter)
    if not pairs:
        return f"{name} has no LoRA tensors (name.lora_a / name.lora_b)"
    adapter_blocks = (adapter.matrix_shapes.get(ALL_BLOCKS) or (0,))[0]
    base_blocks = (base.matrix_shapes.get(ALL_BLOCKS) or (0,))[0]
    if adapter_blocks > base_blocks:
        return f"{name} was made for a model with {adapter_blocks} layers; {base_name} has {base_blocks}"
    for weight, (a, b) in sorted(pairs.items()):
        if a is None or b is None:
            return f"{name} is damaged: {weight} has only one of its two LoRA tensors"
        blocks = range(adapter_blocks) if weight.startswith("blk.*.") else (None,)
        for block in blocks:
            full = weight if block is None else weight.replace("blk.*.", f"blk.{block}.", 1)
            target = shape_of(base.matrix_shapes, full)
            if target is None:
                return f"{name} changes {full}, which {base_name} does not have: it was made for another model"
            if not _fits(full, a, b, target):
                return (
                    f"{name} was made for a model of another size: it expects {full} to be {_dims(full, a, b)}, "
                    f"in {base_name} it is {target[0]}×{target[1]}{_size(base)}"
                )
    return None


def _fits(weight: str, a: tuple[int, ...], b: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """llama.cpp's shape rule for one adapted weight (ggml order: ne[0] is the input size)."""
    if weight.endswith("token_embd.weight"):  # the pair is stored the other way round (llm_build_inp_embd)
        return target[0] == b[1] and target[1] == a[1]
    return target[0] == a[0] and target[1] == b[1] and a[1] == b[0]


def _dims(weight: str, a: tuple[int, ...], b: tuple[int, ...]) -> str:
    return f"{b[1]}×{a[1]}" if weight.endswith("token_embd.weight") else f"{a[0]}×{b[1]}"


def _size(base: ModelInfo) -> str:
    if base.embedding_length and base.block_count:
        return f" (embedding length {base.embedding_length}, {base.block_count} layers)"
    return ""


def _pairs(adapter: ModelInfo) -> dict[str, list[tuple[int, ...] | None]]:
    pairs: dict[str, list[tuple[int, ...] | None]] = {}
    for tensor, shape in adapter.matrix_shapes.items():
        for index, suffix in enumerate((".lora_a", ".lora_b")):
            if tensor.endswith(suffix):
                pairs.setdefault(tensor.removesuffix(suffix), [None, None])[index] = shape
    return pairs


@dataclass(frozen=True)
class AdapterPlacement:
    """A LoRA adapter in the library, the bases there it fits, and (fitting none) why not."""

    adapter: LibraryEntry
    bases: tuple[LibraryEntry, ...]
    reason: str  # '' when it fits at least one base


def place_adapters(entries: Sequence[LibraryEntry]) -> list[AdapterPlacement]:
    """For each adapter among entries, the models it fits. The reason given for an adapter that fits none
    is the one for the closest model (same architecture first), so it says what to look for."""
    models = [e for e in entries if e.info is not None and not e.info.is_adapter]
    placements = []
    for entry in entries:
        if entry.info is None or not entry.info.is_adapter:
            continue
        reasons = [(m, lora_mismatch(entry.info, m.info)) for m in models if m.info is not None]
        fits = tuple(m for m, reason in reasons if reason is None)
        reason = ""
        if not fits:
            arch = entry.info.architecture
            same_arch = [r for m, r in reasons if r and m.info is not None and m.info.architecture == arch]
            reason = same_arch[0] if same_arch else f"no {arch} model in the library to apply it to"
        placements.append(AdapterPlacement(entry, fits, reason))
    return placements


# ---- PEFT adapter folders ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeftAdapter:
    """A Hugging Face PEFT LoRA adapter folder: adapter_config.json plus adapter_model.safetensors (or .bin)."""

    folder: Path
    weights: Path
    base_model: str | None  # adapter_config.json's base_model_name_or_path: a Hub id or a local folder
    rank: int | None
    alpha: float | None
    target_modules: tuple[str, ...]
    peft_type: str

    @property
    def name(self) -> str:
        return self.folder.name

    def gguf_name(self) -> str:
        return f"{self.folder.name}-lora-f16.gguf"

    def conversion_command(self, out_dir: Path | None = None, base_dir: Path | None = None) -> str:
        """The exact command line that converts this adapter with llama.cpp's convert_lora_to_gguf.py
        (arguments as in llama-cpp-python 0.3.36's vendored copy: --base DIR with the base model's
        config.json, or --base-model-id ID to fetch that config; --outfile; --outtype; the adapter folder)."""
        args = ["python", CONVERTER]
        if base_dir is not None:
            args += ["--base", str(base_dir)]
        elif self.base_model and Path(self.base_model).expanduser().is_dir():
            args += ["--base", str(Path(self.base_model).expanduser())]
        elif self.base_model:
            args += ["--base-model-id", self.base_model]
        else:
            args += ["--base", "BASE_MODEL_FOLDER"]
        outfile = (out_dir or self.folder) / self.gguf_name()
        args += ["--outfile", str(outfile), "--outtype", "f16", str(self.folder)]
        return shlex.join(args)

    def advice(self, out_dir: Path | None = None) -> str:
        """One paragraph for the user: what this is, and the command that makes it usable."""
        if self.base_model and not Path(self.base_model).expanduser().is_dir():
            base = (
                f"--base-model-id reads {self.base_model}'s config.json from Hugging Face; with that model "
                "downloaded, --base FOLDER works offline"
            )
        elif self.base_model:
            base = "--base is the base model's folder (its config.json is enough)"
        else:
            base = "BASE_MODEL_FOLDER is a folder with the base model's config.json"
        return (
            f"{self.name} is a PEFT LoRA adapter (Hugging Face format), which llama.cpp cannot load directly. "
            f"Convert it to GGUF with llama.cpp's {CONVERTER} (in llama.cpp's source; it needs `{CONVERTER_NEEDS}`; "
            f"{base}): {self.conversion_command(out_dir)}"
        )


def peft_adapter(path: str | os.PathLike[str]) -> PeftAdapter | None:
    """The PEFT adapter at path (its folder or a file in it), or None when path is not one."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    config_path = folder / PEFT_CONFIG
    weights = next((folder / w for w in PEFT_WEIGHTS if (folder / w).is_file()), None)
    if weights is None or not config_path.is_file():
        return None
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    peft_type = str(config.get("peft_type") or "LORA")
    base = config.get("base_model_name_or_path")
    rank = config.get("r")
    alpha = config.get("lora_alpha")
    modules = config.get("target_modules")
    return PeftAdapter(
        folder=folder,
        weights=weights,
        base_model=base if isinstance(base, str) and base else None,
        rank=rank if isinstance(rank, int) else None,
        alpha=float(alpha) if isinstance(alpha, (int, float)) and not isinstance(alpha, bool) else None,
        target_modules=tuple(m for m in modules if isinstance(m, str)) if isinstance(modules, list) else (),
        peft_type=peft_type,
    )


def find_peft_adapters(roots: Iterable[Path], max_depth: int = 6) -> list[PeftAdapter]:
    """Every PEFT adapter folder below the roots (hidden folders skipped), in path order."""
    found: dict[Path, PeftAdapter] = {}
    for root in roots:
        for folder in _folders_with_config(Path(root), max_depth):
            adapter = peft_adapter(folder)
            if adapter is not None:
                found.setdefault(Path(os.path.realpath(folder)), adapter)
    return sorted(found.values(), key=lambda a: str(a.folder))


def _folders_with_config(root: Path, depth: int) -> Iterator[Path]:
    try:
        with os.scandir(root) as it:
            entries = list(it)
    except OSError:
        return
    if any(e.name == PEFT_CONFIG for e in entries):
        yield root
    if depth <= 0:
        return
    for entry in entries:
        try:
            if not entry.name.startswith(".") and entry.is_dir():
                yield from _folders_with_config(Path(entry.path), depth - 1)
        except OSError:
            continue
