"""ModelInfo: what a GGUF file is (architecture, size, quant, context, template ...), without loading it."""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from app.core.errors import GGUFError
from app.core.gguf_constants import GGMLQuantizationType, LlamaFileType
from app.core.gguf_reader import ArraySummary, RawHeader, RawTensor, read_header

# "-00001-of-00003.gguf": the naming llama.cpp's gguf-split writes and the Hub uses for big models.
SPLIT_RE = re.compile(r"^(?P<stem>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
_FTYPE_GUESSED_FLAG = 1024  # llama.cpp ORs this into general.file_type when it guessed the type
# The largest published models have ~130 transformer blocks. The block count sizes per-layer lists and the
# fit estimate's loops (quadratic in it): a 102-byte file declaring 50,000,000 blocks made `hearth info`
# use 847 MB and a library scan take 16 s, so a count beyond this (or beyond the tensors present) is refused.
MAX_BLOCK_COUNT = 1024
MAX_SPLIT_PARTS = 1024  # gguf-split of the largest published models gives a few dozen parts

# Pretty names for the file types whose enum names do not follow the MOSTLY_<quant> pattern.
_FILE_TYPE_NAMES = {
    LlamaFileType.ALL_F32: "F32",
    LlamaFileType.MOSTLY_F16: "F16",
    LlamaFileType.MOSTLY_BF16: "BF16",
}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor: name, ggml type ("Q4_K", "F32" ...), shape in ggml order, element and byte counts."""

    name: str
    ggml_type: str
    shape: tuple[int, ...]
    n_elements: int
    n_bytes: int

    @property
    def layer(self) -> int | None:
        """The transformer block this tensor belongs to ("blk.12.attn_q.weight" -> 12), None for others."""
        match = re.match(r"blk\.(\d+)\.", self.name)
        return int(match.group(1)) if match else None


@dataclass(frozen=True)
class ModelInfo:
    """Everything Hearth shows or needs about a model file before loading it. JSON-able via to_dict()."""

    path: Path
    size_bytes: int
    gguf_version: int
    architecture: str
    name: str | None
    basename: str | None
    finetune: str | None
    size_label: str | None
    license: str | None
    model_type: str  # general.type: "model", "adapter" (LoRA), "mmproj" ...
    parameters: int
    file_type: str  # "Q4_K_M", "Q8_0", "F16" ...
    file_type_guessed: bool
    context_length: int | None
    block_count: int | None
    embedding_length: int | None
    feed_forward_length: int | None
    head_count: int | None
    head_count_kv: int | None
    key_length: int | None  # per-head K size; n_embd/n_head unless the model says otherwise (gemma3: 256)
    value_length: int | None
    sliding_window: int | None
    expert_count: int | None
    vocab_size: int | None
    tokenizer_model: str | None
    chat_template: str | None
    chat_templates: dict[str, str]  # named variants: tokenizer.chat_template.<name>
    bos_token_id: int | None
    eos_token_id: int | None
    eot_token_id: int | None
    bos_token: str | None
    eos_token: str | None
    eot_token: str | None
    add_bos_token: bool | None
    parts: tuple[Path, ...]  # every file of a split model, first to last; (path,) otherwise
    # Weight bytes per transformer block (the unit of GPU offload), block 0 first, and of every tensor
    # outside the blocks (token_embd, output, norms): all the fit estimate needs, small enough to cache.
    layer_bytes: tuple[int, ...] = field(repr=False)
    non_layer_bytes: dict[str, int] = field(repr=False)
    metadata: dict[str, Any] = field(repr=False)  # every key/value, big arrays as {"array_of", "length"}
    # Every tensor. Filled by inspect(); empty in infos restored from the library index (to keep it small).
    tensors: tuple[TensorInfo, ...] = field(default=(), repr=False)
    # The 2-D tensors' shapes in compact form (see matrix_shapes()): kept in the library index, so a LoRA
    # adapter can be matched to the bases it fits without reading every header again.
    matrix_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict, repr=False)

    @property
    def display_name(self) -> str:
        return self.name or self.basename or self.path.stem

    @property
    def is_split(self) -> bool:
        return len(self.parts) > 1

    @property
    def is_adapter(self) -> bool:
        return self.model_type == "adapter"

    def to_dict(self, *, with_tensors: bool = True) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        data["parts"] = [str(p) for p in self.parts]
        data["layer_bytes"] = list(self.layer_bytes)
        data["tensors"] = [[t.name, t.ggml_type, list(t.shape), t.n_elements, t.n_bytes] for t in self.tensors]
        if not with_tensors:
            del data["tensors"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        values = dict(data)
        values["path"] = Path(values["path"])
        values["parts"] = tuple(Path(p) for p in values["parts"])
        values["layer_bytes"] = tuple(values["layer_bytes"])
        values["tensors"] = tuple(
            TensorInfo(name, gtype, tuple(shape), n_el, n_b)
            for name, gtype, shape, n_el, n_b in values.get("tensors", ())
        )
        values["matrix_shapes"] = {name: tuple(shape) for name, shape in values.get("matrix_shapes", {}).items()}
        return cls(**values)


def _jsonable(value: Any) -> Any:
    if isinstance(value, ArraySummary):
        return {"array_of": value.item_type, "length": value.length}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    return value


def split_parts(path: Path) -> tuple[Path, ...] | None:
    """For a file named like a split part, every part's path (existing or not); None for a single file."""
    match = SPLIT_RE.match(path.name)
    if not match:
        return None
    count = int(match.group("count"))
    if not 1 <= count <= MAX_SPLIT_PARTS:  # "-of-99999" would cost 99,999 file checks on every scan
        return None
    stem = match.group("stem")
    return tuple(path.with_name(f"{stem}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1))


def file_type_name(value: int) -> str | None:
    try:
        ftype = LlamaFileType(value & ~_FTYPE_GUESSED_FLAG)
    except ValueError:
        return None
    return _FILE_TYPE_NAMES.get(ftype, ftype.name.removeprefix("MOSTLY_"))


def _guess_file_type(tensors: list[RawTensor]) -> str:
    """The dominant weight type by bytes, used when general.file_type is absent (old or odd converters)."""
    weights: Counter[str] = Counter()
    for tensor in tensors:
        if len(tensor.shape) >= 2:
            weights[GGMLQuantizationType(tensor.type_id).name] += tensor.n_bytes
    return weights.most_common(1)[0][0] if weights else "unknown"


BLOCK_RE = re.compile(r"^blk\.(\d+)\.")
ALL_BLOCKS = "blk.*"  # matrix_shapes key whose value is (number of blocks the tensors cover,)


def matrix_shapes(tensors: list[TensorInfo]) -> dict[str, tuple[int, ...]]:
    """The shapes (ggml order: input size first) of the 2-D tensors, compactly: a tensor present in every
    block with one shape is stored once as "blk.*.NAME"; ALL_BLOCKS holds how many blocks there are.
    Others (a tensor in only some blocks, or with per-block shapes) keep their own names."""
    shapes: dict[str, tuple[int, ...]] = {}
    per_block: dict[str, dict[int, tuple[int, ...]]] = {}
    blocks = 0
    for tensor in tensors:
        if len(tensor.shape) != 2:
            continue
        match = BLOCK_RE.match(tensor.name)
        if match:
            block = int(match.group(1))
            blocks = max(blocks, block + 1)
            per_block.setdefault(tensor.name[match.end() :], {})[block] = tensor.shape
        else:
            shapes[tensor.name] = tensor.shape
    for rest, found in per_block.items():
        if len(found) == blocks and len(set(found.values())) == 1:
            shapes[f"blk.*.{rest}"] = next(iter(found.values()))
        else:
            shapes.update({f"blk.{block}.{rest}": shape for block, shape in found.items()})
    if blocks:
        shapes[ALL_BLOCKS] = (blocks,)
    return shapes


def shape_of(shapes: dict[str, tuple[int, ...]], name: str) -> tuple[int, ...] | None:
    """A tensor's shape from matrix_shapes(), by its full name ("blk.3.attn_q.weight") or pattern."""
    if name in shapes:
        return shapes[name]
    match = BLOCK_RE.match(name)
    if match and int(match.group(1)) < (shapes.get(ALL_BLOCKS) or (0,))[0]:
        return shapes.get(f"blk.*.{name[match.end() :]}")
    return None


def _int_or_max(value: Any) -> int | None:
    """head_count and friends may be per-layer arrays (OpenELM, gemma-3n): report the largest."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return max(value)
    return None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _tensor_info(t: RawTensor) -> TensorInfo:
    return TensorInfo(t.name, t.type_name, t.shape, t.n_elements, t.n_bytes)


def _size_summary(tensors: list[TensorInfo], block_count: int | None) -> tuple[tuple[int, ...], dict[str, int]]:
    layers = [0] * (block_count or 0)
    others: dict[str, int] = {}
    for tensor in tensors:
        layer = tensor.layer
        if layer is not None and 0 <= layer < len(layers):
            layers[layer] += tensor.n_bytes
        else:
            others[tensor.name] = others.get(tensor.name, 0) + tensor.n_bytes
    return tuple(layers), others


def _checked_block_count(first: RawHeader, count: int | None, n_tensors: int) -> int | None:
    """The declared block count when the file can back it: every block holds at least one tensor."""
    if count is None:
        return None
    if count < 0 or count > MAX_BLOCK_COUNT:
        raise GGUFError(f"{first.path.name}: block_count {count} is not plausible (at most {MAX_BLOCK_COUNT})")
    if n_tensors and count > n_tensors:
        raise GGUFError(f"{first.path.name}: block_count {count} but the model has only {n_tensors} tensors")
    return count


def inspect(path: str | os.PathLike[str]) -> ModelInfo:
    """Read a model's ModelInfo from its header(s) in milliseconds. Raises GGUFError with a one-line reason.

    For a split model, any part may be given: the first part's metadata is used and every part's tensors
    and sizes are added up; a missing part is an error.
    """
    path = Path(path)
    try:
        return _inspect(path)
    except OSError as exc:  # a name too long for the file system, a folder without access: one line
        raise GGUFError(f"{path.name}: cannot read: {exc.strerror or exc}") from None


def _inspect(path: Path) -> ModelInfo:
    parts = split_parts(path) or (path,)
    missing = [p.name for p in parts if not p.is_file()]
    if missing and len(parts) > 1:
        raise GGUFError(f"{path.name}: split model is incomplete, missing {', '.join(missing[:3])}")
    first = read_header(parts[0])
    tensors = list(first.tensors)
    size = first.file_size
    for part in parts[1:]:
        header = read_header(part)
        tensors.extend(header.tensors)
        size += header.file_size
    _check_split(first, len(parts))
    return _model_info(first, parts, tensors, size)


def _check_split(first: RawHeader, found: int) -> None:
    count = first.kv.get("split.count")
    if isinstance(count, int) and count > 1 and count != found:
        raise GGUFError(f"{first.path.name}: metadata says {count} parts, file names say {found}")


def _model_info(first: RawHeader, parts: tuple[Path, ...], tensors: list[RawTensor], size: int) -> ModelInfo:
    kv = first.kv
    arch = kv.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise GGUFError(f"{first.path.name}: no general.architecture key; not a model file")

    def arch_key(suffix: str) -> Any:
        return kv.get(f"{arch}.{suffix}")

    raw_ftype = kv.get("general.file_type")
    ftype = file_type_name(raw_ftype) if isinstance(raw_ftype, int) else None
    guessed = ftype is None or bool(isinstance(raw_ftype, int) and raw_ftype & _FTYPE_GUESSED_FLAG)
    tokens = kv.get("tokenizer.ggml.tokens")
    n_head = _int_or_max(arch_key("attention.head_count"))
    n_embd = _int_or_max(arch_key("embedding_length"))
    head_dim = n_embd // n_head if n_embd and n_head else None

    def special(name: str) -> tuple[int | None, str | None]:
        token_id = kv.get(f"tokenizer.ggml.{name}_token_id")
        if not isinstance(token_id, int) or isinstance(token_id, bool):
            return None, None
        return token_id, first.token_texts.get(token_id)

    bos_id, bos = special("bos")
    eos_id, eos = special("eos")
    eot_id, eot = special("eot")
    add_bos = kv.get("tokenizer.ggml.add_bos_token")
    templates = {
        key.removeprefix("tokenizer.chat_template."): value
        for key, value in kv.items()
        if key.startswith("tokenizer.chat_template.") and isinstance(value, str)
    }
    infos = [_tensor_info(t) for t in tensors]
    block_count = _checked_block_count(first, _int_or_max(arch_key("block_count")), len(tensors))
    layer_bytes, non_layer_bytes = _size_summary(infos, block_count)
    vocab_size = _int_or_max(arch_key("vocab_size"))
    if vocab_size is None and isinstance(tokens, (ArraySummary, list)):
        vocab_size = tokens.length if isinstance(tokens, ArraySummary) else len(tokens)
    return ModelInfo(
        path=parts[0],
        size_bytes=size,
        gguf_version=first.version,
        architecture=arch,
        name=_str_or_none(kv.get("general.name")),
        basename=_str_or_none(kv.get("general.basename")),
        finetune=_str_or_none(kv.get("general.finetune")),
        size_label=_str_or_none(kv.get("general.size_label")),
        license=_str_or_none(kv.get("general.license")),
        model_type=_str_or_none(kv.get("general.type")) or "model",
        parameters=sum(t.n_elements for t in tensors),
        file_type=ftype or _guess_file_type(tensors),
        file_type_guessed=guessed,
        context_length=_int_or_max(arch_key("context_length")),
        block_count=block_count,
        embedding_length=n_embd,
        feed_forward_length=_int_or_max(arch_key("feed_forward_length")),
        head_count=n_head,
        head_count_kv=_int_or_max(arch_key("attention.head_count_kv")) or n_head,
        key_length=_int_or_max(arch_key("attention.key_length")) or head_dim,
        value_length=_int_or_max(arch_key("attention.value_length")) or head_dim,
        sliding_window=_int_or_max(arch_key("attention.sliding_window")),
        expert_count=_int_or_max(arch_key("expert_count")),
        vocab_size=vocab_size,
        tokenizer_model=_str_or_none(kv.get("tokenizer.ggml.model")),
        chat_template=_str_or_none(kv.get("tokenizer.chat_template")),
        chat_templates=templates,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        eot_token_id=eot_id,
        bos_token=bos,
        eos_token=eos,
        eot_token=eot,
        add_bos_token=add_bos if isinstance(add_bos, bool) else None,
        parts=parts,
        layer_bytes=layer_bytes,
        non_layer_bytes=non_layer_bytes,
        metadata=_jsonable(kv),
        tensors=tuple(infos),
        matrix_shapes=matrix_shapes(infos),
    )


def format_params(count: int) -> str:
    """270_000_000 -> "270M", 7_241_732_096 -> "7.2B"."""
    if count >= 1_000_000_000:
        return f"{count / 1e9:.1f}B"
    if count >= 1_000_000:
        return f"{count / 1e6:.0f}M"
    if count >= 1_000:
        return f"{count / 1e3:.0f}K"
    return str(count)


def format_bytes(count: float) -> str:
    """Human size with binary units as file managers show them: 4.07 GiB, 253 MiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            if unit == "B":
                return f"{int(count)} B"
            return (
                f"{count:.2f} {unit}"
                if abs(count) < 10
                else f"{count:.1f} {unit}"
                if abs(count) < 100
                else f"{count:.0f} {unit}"
            )
        count /= 1024
    raise AssertionError("unreachable")
