"""A GGUF header never costs more than its size: counts capped by what the file can hold, linear time."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from app.core.errors import GGUFError
from app.core.gguf_info import inspect
from app.core.gguf_reader import _StringArrayWalker
from tests.core.test_gguf_hostile import ARCH, gguf_string, header, naive_offsets
from tests.support.memory import PEAK_MB

REPO = Path(__file__).resolve().parents[2]


def kv_u32(key: bytes, value: int) -> bytes:
    return gguf_string(key) + struct.pack("<II", 4, value)


def block_count_file(tmp_path: Path, blocks: int) -> Path:
    """102 bytes: an architecture and a block count, nothing else."""
    path = tmp_path / f"blocks-{blocks}.gguf"
    path.write_bytes(header(0, 2, ARCH + kv_u32(b"llama.block_count", blocks)))
    return path


def run_measured(code: str) -> dict:
    """Run code in a fresh interpreter; its JSON result plus its wall time and how much its peak memory grew
    over what importing every command costs (MB)."""
    head = f"""
import json, sys, time
sys.path.insert(0, {str(REPO)!r})
import app.cli
app.cli.build_parser()  # every command module imported: the baseline
baseline = peak_mb()
started = time.perf_counter()
result = {{}}
"""
    tail = """
result["elapsed"] = time.perf_counter() - started
result["grown_mb"] = peak_mb() - baseline
print(json.dumps(result))
"""
    script = PEAK_MB + head + textwrap.dedent(code) + tail
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("blocks", [50_000_000, 0xFFFFFFFF, 10_000_000])
def test_a_huge_block_count_is_refused_cheaply_by_hearth_info(tmp_path: Path, blocks: int) -> None:
    path = block_count_file(tmp_path, blocks)
    assert path.stat().st_size == 102
    result = run_measured(
        f"""
        from app.cli import run
        import io, contextlib
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            result["status"] = run(["info", {str(path)!r}])
        result["stderr"] = err.getvalue()
        """
    )
    assert result["status"] == 2 and result["stderr"].count("\n") == 1, result
    assert "block" in result["stderr"] and "MemoryError" not in result["stderr"]
    assert result["grown_mb"] < 50 and result["elapsed"] < 5, result


@pytest.mark.timeout(120)
def test_a_library_scan_of_a_huge_block_count_is_fast_and_writes_a_small_index(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    block_count_file(folder, 10_000_000)
    home = tmp_path / "home"
    result = run_measured(
        f"""
        import os
        os.environ["HEARTH_HOME"] = {str(home)!r}
        from app.core.library import Library
        from app.core.paths import AppPaths
        paths = AppPaths.default().ensure()
        (paths.models_dir / "x.gguf").write_bytes(open({str(folder / "blocks-10000000.gguf")!r}, "rb").read())
        library = Library(paths)
        entries = library.scan()
        library = Library(paths)
        again = time.perf_counter()
        library.scan()
        result["rescan"] = time.perf_counter() - again
        result["errors"] = [e.error for e in entries]
        result["index_bytes"] = paths.library_index.stat().st_size
        """
    )
    assert result["errors"][0] and "block" in result["errors"][0], result
    assert result["elapsed"] < 5 and result["rescan"] < 1 and result["index_bytes"] < 10_000, result


def test_more_blocks_than_tensors_is_refused(tmp_path: Path, tiny_model: Path) -> None:
    data = bytearray(tiny_model.read_bytes())
    at = data.index(b"llama.block_count") + len(b"llama.block_count")
    assert struct.unpack_from("<II", data, at) == (4, 2)  # a u32 of 2: the tiny model's two blocks
    struct.pack_into("<I", data, at + 4, 1000)
    (tmp_path / "lying.gguf").write_bytes(bytes(data))
    with pytest.raises(GGUFError, match="block_count 1000"):
        inspect(tmp_path / "lying.gguf")
    (tmp_path / "vocab-only.gguf").write_bytes(header(0, 2, ARCH + kv_u32(b"llama.block_count", 64)))
    assert inspect(tmp_path / "vocab-only.gguf").block_count == 64  # no tensors: a plausible count is kept


def string_array_file(tmp_path: Path, items: list[bytes], key: bytes = b"tokenizer.ggml.tokens") -> Path:
    body = ARCH + gguf_string(key) + struct.pack("<IIQ", 9, 8, len(items)) + b"".join(gguf_string(i) for i in items)
    path = tmp_path / "strings.gguf"
    path.write_bytes(header(0, 2, body))
    return path


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "pattern",
    [
        [b""],  # 1 MiB of empty strings (was 50 s: a full window scan per element)
        [b"a", b""],  # alternating: every short run breaks
        [b"x" * 300, b""],  # long elements between empties
        [b"ab", b"c", b"", b"d" * 256],
    ],
    ids=["empty", "alternating", "long-empty", "mixed"],
)
def test_string_arrays_read_in_linear_time(tmp_path: Path, pattern: list[bytes]) -> None:
    per = sum(8 + len(p) for p in pattern)
    items = pattern * (1024 * 1024 // per)
    path = string_array_file(tmp_path, items)
    started = time.perf_counter()
    info = inspect(path)
    elapsed = time.perf_counter() - started
    assert info.vocab_size == len(items)
    assert elapsed < 1.5, f"{elapsed:.2f} s for {len(items):,} elements"
    buf = path.read_bytes()
    start = 24 + len(ARCH) + len(gguf_string(b"tokenizer.ggml.tokens")) + 16  # header, key, types, count
    end, offsets = _StringArrayWalker(buf, len(buf), "<").walk(start, len(items), "t", keep_offsets=True)
    assert (end, offsets.tolist()) == naive_offsets(buf, start, len(items))


def test_the_error_names_the_reason(tmp_path: Path) -> None:
    with pytest.raises(GGUFError, match=r"block_count 50000000") as info:
        inspect(block_count_file(tmp_path, 50_000_000))
    assert "\n" not in str(info.value)
    assert os.path.basename(str(info.value).split(":")[0]) == "blocks-50000000.gguf"


def test_a_damaged_library_index_entry_is_read_again_not_fatal(hearth_home, tiny_model: Path) -> None:
    import shutil

    from app.core.library import Library

    paths = hearth_home.ensure()
    shutil.copy(tiny_model, paths.models_dir / "m.gguf")
    Library(paths).scan()
    index = json.loads(paths.library_index.read_text())
    for record in index["entries"].values():
        record["info"]["layer_bytes"] = 5  # valid JSON, wrong shape
        record["info"]["unexpected"] = True
    paths.library_index.write_text(json.dumps(index))
    [entry] = Library(paths).scan()
    assert entry.ok and entry.info is not None and len(entry.info.layer_bytes) == 2


def test_a_file_name_claiming_99999_parts_is_one_file(tmp_path: Path, tiny_model: Path) -> None:
    import shutil

    from app.core.gguf_info import split_parts

    path = Path(shutil.copy(tiny_model, tmp_path / "model-00001-of-99999.gguf"))
    assert split_parts(path) is None  # not 99,999 file checks per look at it
    assert inspect(path).parts == (path,)
    assert len(split_parts(tmp_path / "model-00001-of-00003.gguf") or ()) == 3
