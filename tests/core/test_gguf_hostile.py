"""Hostile and broken GGUF input: always a GGUFError with a one-line reason, bounded time and memory."""

from __future__ import annotations

import struct
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core.errors import GGUFError
from app.core.gguf_info import inspect
from app.core.gguf_reader import _StringArrayWalker, read_header


def gguf_string(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


def kv_string(key: bytes, value: bytes) -> bytes:
    return gguf_string(key) + struct.pack("<I", 8) + gguf_string(value)


def header(n_tensors: int, n_kv: int, body: bytes, version: int = 3, magic: bytes = b"GGUF") -> bytes:
    return magic + struct.pack("<IQQ", version, n_tensors, n_kv) + body


ARCH = kv_string(b"general.architecture", b"llama")


def write(tmp_path: Path, data: bytes, name: str = "hostile.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def expect_error(path: Path, pattern: str) -> str:
    with pytest.raises(GGUFError, match=pattern) as info:
        inspect(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(path.name)
    return message


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        (b"", "too short"),
        (b"GGUF\x03\x00\x00\x00", "too short"),
        (header(0, 0, b"", magic=b"GGML"), "not a GGUF file"),
        (b"\x7fELF" + b"\x00" * 60, "not a GGUF file"),
        (header(0, 0, b"", version=1), "version 1.*re-convert"),
        (header(0, 0, b"", version=99), "unsupported GGUF version 99"),
        (header(0, 2**63, b""), "key/value section claims"),
        (header(2**40, 1, ARCH), "tensor section claims"),
        (header(0, 1, struct.pack("<Q", 2**62) + b"x" * 16), "claims"),
        (header(0, 1, gguf_string(b"k\xff\xfe") + struct.pack("<I", 4) + b"\0" * 4), "not valid UTF-8"),
        (header(0, 1, gguf_string(b"key") + struct.pack("<I", 13) + b"\0" * 8), "unknown value type 13"),
        (
            header(0, 1, gguf_string(b"key") + struct.pack("<II", 9, 9) + struct.pack("<Q", 1) + b"\0" * 16),
            "nested",
        ),
        (header(0, 1, gguf_string(b"k") + struct.pack("<II", 9, 4) + struct.pack("<Q", 2**61)), "claims"),
        (header(0, 1, gguf_string(b"k") + struct.pack("<II", 9, 8) + struct.pack("<Q", 2**61)), "claims"),
        (header(0, 2, ARCH + ARCH), "duplicate key"),
        (header(0, 1, kv_string(b"general.name", b"\xc3\x28")), "not valid UTF-8"),
        (header(0, 1, gguf_string(b"general.alignment") + struct.pack("<II", 4, 3)), "power of two"),
        (header(0, 1, kv_string(b"general.name", b"x")), "no general.architecture"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_hostile_headers(tmp_path: Path, data: bytes, pattern: str):
    expect_error(write(tmp_path, data), pattern)


def tensor_record(name: bytes, dims: list[int], type_id: int, offset: int) -> bytes:
    return (
        gguf_string(name)
        + struct.pack("<I", len(dims))
        + b"".join(struct.pack("<Q", d) for d in dims)
        + struct.pack("<IQ", type_id, offset)
    )


@pytest.mark.parametrize(
    ("record", "pattern"),
    [
        (tensor_record(b"t", [], 0, 0), "0 dimensions"),
        (tensor_record(b"t", [1, 1, 1, 1, 1], 0, 0), "5 dimensions"),
        (tensor_record(b"t", [4], 200, 0), "unknown type 200"),
        (tensor_record(b"t", [2**40, 2**40], 0, 0), "larger than the whole file"),
        (tensor_record(b"t", [33], 2, 0), "not a multiple of its block size 32"),  # Q4_0
        (tensor_record(b"t", [4], 0, 3), "not aligned"),
        (tensor_record(b"t", [128], 0, 0), "truncated or incomplete download"),
        (tensor_record(b"t" * 5000, [4], 0, 0), "limit"),
    ],
    ids=[
        "no-dims",
        "five-dims",
        "unknown-type",
        "huge-shape",
        "bad-block",
        "misaligned",
        "past-end",
        "long-name",
    ],
)
def test_hostile_tensor_records(tmp_path: Path, record: bytes, pattern: str):
    data = header(1, 1, ARCH + record)
    data += b"\0" * (-len(data) % 32) + b"\0" * 64
    expect_error(write(tmp_path, data), pattern)


def test_duplicate_tensor(tmp_path: Path):
    record = tensor_record(b"t", [4], 0, 0)
    data = header(2, 1, ARCH + record + record)
    data += b"\0" * (-len(data) % 32) + b"\0" * 64
    expect_error(write(tmp_path, data), "duplicate tensor")


def test_directory_and_missing_file(tmp_path: Path):
    with pytest.raises(GGUFError, match="directory"):
        read_header(tmp_path)
    with pytest.raises(GGUFError, match="not found"):
        read_header(tmp_path / "nope.gguf")


def test_every_truncation_of_a_real_header_is_a_clean_error(tmp_path: Path, tiny_model: Path):
    """Cut the file at every byte of the first 4 KiB and at sampled points through the rest of the header."""
    data = tiny_model.read_bytes()
    data_offset = read_header(tiny_model).data_offset
    cuts = list(range(0, 4096)) + list(range(4096, data_offset + 64, 97)) + [len(data) - 1]
    target = tmp_path / "cut.gguf"
    for cut in cuts:
        target.write_bytes(data[:cut])
        with pytest.raises(GGUFError):
            inspect(target)


def test_truncated_download_of_weights_is_reported(tmp_path: Path, gemma_path: Path):
    target = tmp_path / "partial.gguf"
    with open(gemma_path, "rb") as src:
        target.write_bytes(src.read(50 * 1024 * 1024))
    message = expect_error(target, "truncated or incomplete download")
    assert "bytes" in message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_real_headers_never_crash(tmp_path: Path, tiny_model: Path, data: st.DataObject):
    """Random byte mutations anywhere in a real header: parse or GGUFError, fast and small, nothing else."""
    original = bytearray(tiny_model.read_bytes())
    limit = read_header(tiny_model).data_offset
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, limit - 1))
        kind = data.draw(st.sampled_from(["byte", "u64", "u32"]))
        if kind == "byte":
            original[pos] = data.draw(st.integers(0, 255))
        else:
            width = 8 if kind == "u64" else 4
            value = data.draw(st.integers(0, 2 ** (8 * width) - 1))
            original[pos : pos + width] = value.to_bytes(width, "little")[: len(original) - pos]
    path = tmp_path / "mutated.gguf"
    path.write_bytes(bytes(original))
    inspect(tiny_model)  # warm: lazy imports on a first call are not the parser's memory
    tracemalloc.start()
    started = time.perf_counter()
    try:
        inspect(path)
    except GGUFError as exc:
        assert "\n" not in str(exc)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert time.perf_counter() - started < 5
    assert peak < 16 * 1024 * 1024  # never more than a small multiple of the 0.7 MB file


# ---- the vectorised string-array walker against the obvious loop ---------------------------------------


def naive_offsets(buf: bytes, pos: int, count: int) -> tuple[int, list[int]]:
    offsets = []
    for _ in range(count):
        offsets.append(pos)
        (length,) = struct.unpack_from("<Q", buf, pos)
        pos += 8 + length
    return pos, offsets


element = st.one_of(
    st.binary(min_size=1, max_size=40).filter(lambda b: b[0] != 0),
    st.binary(min_size=0, max_size=600),  # empty, long (>= 256) and NUL-led elements break the fast path
    st.just(b"\x00" * 9),
    st.just(b"\x05\x00\x00\x00\x00\x00\x00\x00x"),  # text that looks like a length field
)


@settings(max_examples=300, deadline=None)
@given(items=st.lists(element, min_size=1, max_size=300), tail=st.binary(max_size=64), lead=st.integers(0, 40))
def test_walker_matches_naive_walk(items: list[bytes], tail: bytes, lead: int):
    body = b"".join(gguf_string(item) for item in items)
    buf = b"\x01" * lead + body + tail
    walker = _StringArrayWalker(buf, len(buf), "<")
    expected_end, expected = naive_offsets(buf, lead, len(items))
    for vectorise in (True, False):  # numpy's walk and the plain one (small arrays, numpy not loaded)
        end, offsets = walker.walk(lead, len(items), "test array", keep_offsets=True, vectorise=vectorise)
        assert end == expected_end
        assert offsets is not None and offsets.tolist() == expected


def test_walker_on_a_large_vocabulary_shape():
    rng = np.random.default_rng(1)
    items = [bytes(rng.integers(32, 127, size=int(n))) for n in rng.integers(1, 20, size=50_000)]
    items[100] = b""
    items[2000] = b"y" * 300
    buf = b"".join(gguf_string(i) for i in items) + b"\xff" * 100
    walker = _StringArrayWalker(buf, len(buf), "<")
    end, offsets = walker.walk(0, len(items), "vocab", keep_offsets=True)
    assert (end, offsets.tolist()) == naive_offsets(buf, 0, len(items))


@pytest.mark.parametrize("vectorise", [True, False])
def test_walker_reports_truncation(vectorise: bool):
    buf = gguf_string(b"abc") + struct.pack("<Q", 100) + b"short"
    with pytest.raises(GGUFError, match="past the end"):
        _StringArrayWalker(buf, len(buf), "<").walk(0, 2, "tokens", keep_offsets=False, vectorise=vectorise)
    with pytest.raises(GGUFError, match="truncated at byte 11"):
        _StringArrayWalker(buf[:14], 14, "<").walk(0, 2, "tokens", keep_offsets=False, vectorise=vectorise)
