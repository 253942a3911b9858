"""A fast, defensive GGUF header parser: key/values and tensor infos from an mmap, weights never touched.

gguf.GGUFReader decodes every array eagerly (26 s for a 262k-token vocabulary); llama.cpp's vocab_only
load takes 0.84 s. A picker needs milliseconds, so this parser skips arrays it does not need and walks the
big string arrays (the vocabulary, BPE merges) with numpy instead of a Python loop (see _StringArrayWalker).
Neither numpy nor the `gguf` package is imported for a small header (see VECTORISE_FROM), so `hearth info`
answers at once: GGUF's numbering comes from app/core/gguf_constants.py.

Every read is bounds-checked against the file size, and every count is checked against the bytes that
could possibly hold it before anything is allocated, so a hostile or truncated file costs at most one pass
over its header and ends in a GGUFError with a one-line reason, never in a crash or a huge allocation.
"""

from __future__ import annotations

import bisect
import mmap
import os
import struct
import sys
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.core.errors import GGUFError
from app.core.gguf_constants import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGMLQuantizationType, GGUFValueType

if TYPE_CHECKING:
    from typing import TypeAlias

    import numpy as np

    # Each element's start offset in a string array: numpy's from the vectorised walk, array("q") otherwise.
    Offsets: TypeAlias = np.ndarray | array[int]

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
MAX_KEY_BYTES = 4096  # llama.cpp keys are < 100 bytes; anything near this is garbage
MAX_STRING_BYTES = 16 * 1024 * 1024  # a chat template is ~10 KiB; refuse to decode absurd values
MAX_TENSOR_NAME_BYTES = 1024  # GGML_MAX_NAME is 64; be lenient but bounded
MAX_DIMS = 4  # GGML_MAX_DIMS
SMALL_ARRAY_LIMIT = 256  # arrays up to this many scalars are decoded into the metadata (tags, per-layer values)
# The vectorised walk needs numpy, whose import alone costs 30-150 ms on a 2-core machine: in a fresh process
# `hearth info` on gemma-3-270m (262k-token vocabulary) took 33 ms with the plain walk, 47 ms importing numpy
# for the vectorised one (20 ms once loaded). So numpy is used when it is loaded already (the app, tests) or
# for an array longer than any vocabulary; both walks give the same offsets.
VECTORISE_FROM = 1_000_000

_SCALAR_FORMATS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "B",
    GGUFValueType.INT8: "b",
    GGUFValueType.UINT16: "H",
    GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I",
    GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f",
    GGUFValueType.BOOL: "?",
    GGUFValueType.UINT64: "Q",
    GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT64: "d",
}
_SCALAR_SIZES = {t: struct.calcsize(f) for t, f in _SCALAR_FORMATS.items()}


@dataclass(frozen=True)
class ArraySummary:
    """An array value the parser skipped: its element type and length, and where its elements start."""

    item_type: str
    length: int
    offset: int
    end: int = 0  # the byte after its last element (a vocabulary's bytes can be hashed without decoding)


@dataclass(frozen=True)
class RawTensor:
    """One tensor info record. `shape` is in ggml order (ne0 first); offset is relative to data_offset."""

    name: str
    type_id: int
    shape: tuple[int, ...]
    offset: int
    n_elements: int
    n_bytes: int

    @property
    def type_name(self) -> str:
        return GGMLQuantizationType(self.type_id).name


@dataclass
class RawHeader:
    """What one GGUF file's header says, with arrays other than small ones left undecoded."""

    path: Path
    file_size: int
    version: int
    byte_order: str  # "<" or ">"
    kv: dict[str, Any]
    tensors: list[RawTensor]
    alignment: int
    data_offset: int
    header_bytes: int  # bytes parsed (for diagnostics and benchmarks)
    # The text of each special token named by a tokenizer.ggml.*_token_id key (bos, eos, eot ...).
    token_texts: dict[int, str] = field(default_factory=dict)


class _Cursor:
    """Bounds-checked sequential reads over a buffer; every failure names the byte offset and the field."""

    __slots__ = ("buf", "end", "order", "pos")

    def __init__(self, buf: Any, end: int, order: str) -> None:
        self.buf = buf
        self.end = end
        self.order = order
        self.pos = 0

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.end:
            raise GGUFError(f"truncated at byte {self.pos}: {what} needs {n} bytes, {self.end - self.pos} left")

    def scalar(self, fmt: str, size: int, what: str) -> Any:
        self.need(size, what)
        (value,) = struct.unpack_from(self.order + fmt, self.buf, self.pos)
        self.pos += size
        return value

    def u32(self, what: str) -> int:
        return int(self.scalar("I", 4, what))

    def u64(self, what: str) -> int:
        return int(self.scalar("Q", 8, what))

    def raw_string(self, what: str, limit: int) -> bytes:
        length = self.u64(f"length of {what}")
        if length > limit:
            raise GGUFError(f"{what} claims {length} bytes (limit {limit}) at byte {self.pos - 8}")
        self.need(length, what)
        data = bytes(self.buf[self.pos : self.pos + length])
        self.pos += length
        return data

    def string(self, what: str, limit: int = MAX_STRING_BYTES) -> str:
        start = self.pos
        data = self.raw_string(what, limit)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise GGUFError(f"{what} at byte {start} is not valid UTF-8 ({exc.reason})") from None


class _StringArrayWalker:
    """Finds where each element of a GGUF string array starts, without a Python step per element.

    Each element is a u64 length followed by that many bytes, so element k+1 starts at start_k + 8 + len_k:
    inherently sequential. But almost every vocabulary entry is 1..255 bytes long, and the 8 bytes at the
    start of such an element, read as a little-endian u64, are in 1..255. Text bytes rarely give that
    (it needs seven NUL bytes in a row), and no other offset inside a length field does. So the candidates
    are found with one vectorised pass over an overlapping u64 view, and a candidate is accepted only where
    the previous accepted element's arithmetic lands on it: every accepted offset is exact. Elements that
    break the pattern (empty, >= 256 bytes) and false candidates cost one Python step each.
    """

    BYTES_PER_ELEMENT_GUESS = 18  # vocabularies average 13-18 bytes per entry including the length
    MIN_WINDOW = 4096
    GOOD_RUN = 64  # a vectorised pass that proves fewer elements than this did not pay for itself
    MAX_BURST = 1024

    def __init__(self, buf: Any, end: int, order: str) -> None:
        self.buf = buf
        self.end = end
        self.order = order

    def walk(
        self, pos: int, count: int, what: str, keep_offsets: bool, vectorise: bool | None = None
    ) -> tuple[int, Offsets | None]:
        """Return the end offset of the array (and each element's start offset when asked).

        vectorise: use numpy (None: when numpy is loaded already or the array is huge, see VECTORISE_FROM).
        Linear in the array's bytes whatever its shape: the vectorised pass runs only where an element is a
        candidate, over a window at most twice what the previous pass consumed, and after passes that
        proved little, a growing burst of elements is stepped over in Python first. (Scanning the whole
        rest of the array per element made 1 MiB of empty strings take 50 s.)"""
        if vectorise is None:
            vectorise = count >= VECTORISE_FROM or "numpy" in sys.modules
        if not vectorise:
            return self._walk_plain(pos, count, what, keep_offsets)
        import numpy as np

        offsets = np.empty(count, dtype=np.int64) if keep_offsets else None
        done = 0
        window = self.MIN_WINDOW
        burst = 0  # elements to step over in Python before the next vectorised pass
        poor_streak = 0
        while done < count:
            if burst == 0 and self._candidate_at(pos):
                remaining = count - done
                size = min(self.end - pos, remaining * self.BYTES_PER_ELEMENT_GUESS + 64, window)
                taken, new_pos = self._walk_window(pos, remaining, size, offsets, done)
                if taken:
                    window = max(self.MIN_WINDOW, 2 * (new_pos - pos))
                    done, pos = done + taken, new_pos
                if taken >= self.GOOD_RUN:
                    poor_streak = 0
                else:
                    poor_streak += 1
                    burst = min(1 << min(poor_streak, 10), self.MAX_BURST)
                continue
            if offsets is not None:
                offsets[done] = pos
            pos = self._step(pos, what, done)
            done += 1
            burst = max(burst - 1, 0)
        return pos, offsets

    def _walk_plain(self, pos: int, count: int, what: str, keep_offsets: bool) -> tuple[int, Offsets | None]:
        """One Python step per element: faster than importing numpy for anything but huge arrays."""
        offsets = array("q", bytes(8 * count)) if keep_offsets else None
        unpack = struct.Struct(self.order + "Q").unpack_from
        end = self.end
        for index in range(count):
            if offsets is not None:
                offsets[index] = pos
            if pos + 8 > end:
                self._step(pos, what, index)  # raises with the reason
            (length,) = unpack(self.buf, pos)
            if length > end - pos - 8:
                self._step(pos, what, index)
            pos += 8 + length
        return pos, offsets

    def _candidate_at(self, pos: int) -> bool:
        """Whether the element at pos is 1..255 bytes long (what the vectorised pass can start from)."""
        if self.order != "<" or pos + 16 > self.end:
            return False
        (length,) = struct.unpack_from("<Q", self.buf, pos)
        return 0 < length < 256

    def _step(self, pos: int, what: str, index: int) -> int:
        if pos + 8 > self.end:
            raise GGUFError(f"truncated at byte {pos}: element {index} of {what}")
        (length,) = struct.unpack_from(self.order + "Q", self.buf, pos)
        if length > self.end - pos - 8:
            raise GGUFError(f"element {index} of {what} claims {length} bytes at byte {pos}, past the end")
        return pos + 8 + length

    def _candidates(self, pos: int, window: int) -> np.ndarray:
        """Offsets (relative to pos) whose u64 is in 1..255: the likely starts of short elements."""
        import numpy as np

        n = window - 7
        words = np.ndarray(buffer=self.buf, offset=pos, dtype="<u8", shape=(n,), strides=(1,))
        mask = words < 256
        mask &= np.ndarray(buffer=self.buf, offset=pos, dtype=np.uint8, shape=(n,)) != 0
        return np.flatnonzero(mask)

    def _walk_window(
        self, pos: int, remaining: int, window: int, offsets: np.ndarray | None, done: int
    ) -> tuple[int, int]:
        """Accept as many consecutive elements starting at pos as the window's candidates prove."""
        import numpy as np

        if self.order != "<" or window < 16:
            return 0, pos
        cand = self._candidates(pos, window)
        if len(cand) == 0 or cand[0] != 0:
            return 0, pos
        lengths = np.ndarray(buffer=self.buf, offset=pos, dtype=np.uint8, shape=(window,))[cand]
        nxt = cand + 8 + lengths.astype(np.int64)
        # Breaks: where the next candidate is not the next element (a false candidate sits in between, or
        # the true next element is no candidate at all). Between breaks the chain is proven by arithmetic.
        breaks = np.flatnonzero(nxt[:-1] != cand[1:]).tolist()
        taken = 0
        i = 0
        last = 0
        while True:
            k = bisect.bisect_left(breaks, i)
            b = breaks[k] if k < len(breaks) else len(cand) - 1
            run = min(b - i + 1, remaining - taken)
            if offsets is not None:
                offsets[done + taken : done + taken + run] = cand[i : i + run] + pos
            taken += run
            last = i + run - 1
            if taken == remaining or last == len(cand) - 1:
                break
            j = int(np.searchsorted(cand, nxt[last]))
            if j < len(cand) and cand[j] == nxt[last]:
                i = j  # jump over false candidates inside the previous element's text
            else:
                break  # the next element is no candidate: the caller steps over it in Python
        end_pos = pos + int(nxt[last])
        if end_pos > self.end:
            raise GGUFError(f"truncated at byte {self.end}: a string array runs past the end of the file")
        return taken, end_pos


def _check_count(count: int, min_size: int, cur: _Cursor, what: str) -> None:
    room = (cur.end - cur.pos) // max(min_size, 1)
    if count > room:
        raise GGUFError(f"{what} claims {count} entries at byte {cur.pos}; the file has room for at most {room}")


def _value_type(raw: int, where: str) -> GGUFValueType:
    try:
        return GGUFValueType(raw)
    except ValueError:
        raise GGUFError(f"unknown value type {raw} for {where}") from None


def _read_array(cur: _Cursor, walker: _StringArrayWalker, key: str, header: dict[str, Any]) -> Any:
    item_type = _value_type(cur.u32(f"array type of {key!r}"), f"array {key!r}")
    count = cur.u64(f"array length of {key!r}")
    start = cur.pos
    if item_type == GGUFValueType.ARRAY:
        raise GGUFError(f"array {key!r} holds arrays; nested arrays are not supported (llama.cpp refuses them)")
    if item_type == GGUFValueType.STRING:
        _check_count(count, 8, cur, f"string array {key!r}")
        if count <= SMALL_ARRAY_LIMIT:
            return [cur.string(f"element {i} of {key!r}") for i in range(count)]
        keep = key == "tokenizer.ggml.tokens"
        cur.pos, offsets = walker.walk(cur.pos, count, repr(key), keep_offsets=keep)
        if keep:
            header["_token_offsets"] = offsets
        return ArraySummary("STRING", count, start, cur.pos)
    size = _SCALAR_SIZES[item_type]
    _check_count(count, size, cur, f"array {key!r}")
    if count <= SMALL_ARRAY_LIMIT:
        fmt = f"{cur.order}{count}{_SCALAR_FORMATS[item_type]}"
        values = list(struct.unpack_from(fmt, cur.buf, cur.pos))
        cur.pos += size * count
        return values
    cur.pos += size * count
    return ArraySummary(item_type.name, count, start, cur.pos)


def _read_value(cur: _Cursor, walker: _StringArrayWalker, key: str, vtype: GGUFValueType, extra: dict) -> Any:
    if vtype == GGUFValueType.STRING:
        return cur.string(f"value of {key!r}")
    if vtype == GGUFValueType.ARRAY:
        return _read_array(cur, walker, key, extra)
    return cur.scalar(_SCALAR_FORMATS[vtype], _SCALAR_SIZES[vtype], f"value of {key!r}")


def _read_tensor(cur: _Cursor, index: int) -> tuple[str, int, tuple[int, ...], int]:
    name = cur.string(f"name of tensor {index}", limit=MAX_TENSOR_NAME_BYTES)
    n_dims = cur.u32(f"dimension count of tensor {name!r}")
    if not 1 <= n_dims <= MAX_DIMS:
        raise GGUFError(f"tensor {name!r} has {n_dims} dimensions (1..{MAX_DIMS} allowed)")
    shape = tuple(cur.u64(f"dimension {d} of tensor {name!r}") for d in range(n_dims))
    type_id = cur.u32(f"type of tensor {name!r}")
    offset = cur.u64(f"data offset of tensor {name!r}")
    return name, type_id, shape, offset


def _tensor_from(name: str, type_id: int, shape: tuple[int, ...], offset: int, limit: int) -> RawTensor:
    try:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(type_id)]
    except (ValueError, KeyError):
        raise GGUFError(f"tensor {name!r} has unknown type {type_id}") from None
    n_elements = 1
    for dim in shape:
        n_elements *= dim
        if n_elements > limit * 8:  # no quantisation packs more than 8 values into a byte... by far
            raise GGUFError(f"tensor {name!r} shape {list(shape)} is larger than the whole file")
    if shape[0] % block:
        raise GGUFError(f"tensor {name!r} row of {shape[0]} is not a multiple of its block size {block}")
    return RawTensor(name, type_id, shape, offset, n_elements, n_elements // block * type_size)


def _open_map(path: Path) -> tuple[Any, int]:
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size < 24:
                raise GGUFError(f"only {size} bytes: too short to be a GGUF file")
            return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ), size
    except GGUFError:
        raise
    except IsADirectoryError:
        raise GGUFError("is a directory, not a GGUF file") from None
    except FileNotFoundError:
        raise GGUFError("file not found") from None
    except OSError as exc:
        raise GGUFError(f"cannot read: {exc.strerror or exc}") from None


def read_header(path: str | os.PathLike[str]) -> RawHeader:
    """Parse one GGUF file's header. Raises GGUFError (message prefixed with the file name) on any fault."""
    path = Path(path)
    try:
        return _read_header(path)
    except GGUFError as exc:
        raise GGUFError(f"{path.name}: {exc}") from None
    except (OverflowError, MemoryError, struct.error, ValueError) as exc:  # belt and braces: never a crash
        raise GGUFError(f"{path.name}: malformed header ({type(exc).__name__}: {exc})") from None


def _read_header(path: Path) -> RawHeader:
    buf, size = _open_map(path)
    try:
        if buf[:4] != GGUF_MAGIC:
            raise GGUFError(f"not a GGUF file (magic {bytes(buf[:4])!r}, expected b'GGUF')")
        order = "<"
        (version,) = struct.unpack_from("<I", buf, 4)
        if version not in SUPPORTED_VERSIONS and struct.unpack_from(">I", buf, 4)[0] in SUPPORTED_VERSIONS:
            order = ">"  # big-endian GGUF (s390x conversions): same layout, other byte order
            (version,) = struct.unpack_from(">I", buf, 4)
        if version not in SUPPORTED_VERSIONS:
            detail = " (GGUFv1 from 2023: re-convert the model)" if version == 1 else ""
            raise GGUFError(f"unsupported GGUF version {version}{detail}")
        cur = _Cursor(buf, size, order)
        cur.pos = 8
        n_tensors = cur.u64("tensor count")
        n_kv = cur.u64("key/value count")
        _check_count(n_kv, 8 + 4 + 1, cur, "the key/value section")
        walker = _StringArrayWalker(buf, size, order)
        kv: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for index in range(n_kv):
            key = cur.string(f"key {index}", limit=MAX_KEY_BYTES)
            if key in kv:
                raise GGUFError(f"duplicate key {key!r}")
            vtype = _value_type(cur.u32(f"value type of {key!r}"), f"key {key!r}")
            kv[key] = _read_value(cur, walker, key, vtype, extra)
        _check_count(n_tensors, 8 + 4 + 8 + 4 + 8, cur, "the tensor section")
        records = [_read_tensor(cur, i) for i in range(n_tensors)]
        alignment = kv.get("general.alignment", GGUF_DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise GGUFError(f"general.alignment {alignment!r} is not a power of two")
        data_offset = -(-cur.pos // alignment) * alignment
        tensors = [_tensor_from(*record, limit=size) for record in records]
        _check_tensor_layout(tensors, alignment, data_offset, size)
        return RawHeader(
            path=path,
            file_size=size,
            version=version,
            byte_order=order,
            kv=kv,
            tensors=tensors,
            alignment=alignment,
            data_offset=data_offset,
            header_bytes=cur.pos,
            token_texts=_special_token_texts(buf, order, kv, extra.get("_token_offsets")),
        )
    finally:
        try:
            buf.close()
        except BufferError:  # a view still lives in an exception's traceback; the mmap closes with it
            pass


def _special_token_texts(buf: Any, order: str, kv: dict[str, Any], offsets: Offsets | None) -> dict[int, str]:
    if offsets is None:
        return {}
    texts: dict[int, str] = {}
    for key, value in kv.items():
        is_token_id = key.startswith("tokenizer.ggml.") and key.endswith("_token_id")
        if is_token_id and isinstance(value, int) and 0 <= value < len(offsets):
            start = int(offsets[value])
            (length,) = struct.unpack_from(order + "Q", buf, start)
            texts[value] = bytes(buf[start + 8 : start + 8 + length]).decode("utf-8", errors="replace")
    return texts


def _check_tensor_layout(tensors: Iterable[RawTensor], alignment: int, data_offset: int, size: int) -> None:
    seen: set[str] = set()
    for tensor in tensors:
        if tensor.name in seen:
            raise GGUFError(f"duplicate tensor {tensor.name!r}")
        seen.add(tensor.name)
        if tensor.offset % alignment:
            raise GGUFError(f"tensor {tensor.name!r} offset {tensor.offset} is not aligned to {alignment}")
        end = data_offset + tensor.offset + tensor.n_bytes
        if end > size:
            raise GGUFError(
                f"tensor {tensor.name!r} ends at byte {end} but the file has {size} bytes "
                "(truncated or incomplete download?)"
            )
