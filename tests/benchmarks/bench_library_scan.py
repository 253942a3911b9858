"""Benchmark: library scan of 100 models, cold and warm (target from issue #2: warm rescan <= 100 ms).

Each model has 32 blocks (291 tensors, like a 7B llama) so the on-disk index holds realistic tensor lists.
Run: python tests/benchmarks/bench_library_scan.py
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app.core.library import Library
from app.core.paths import AppPaths
from app.core.settings import Settings
from app.core.tiny_model import TinyModelSpec, write_tiny_model


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="hearth-bench-lib-"))
    paths = AppPaths.under(base).ensure()
    settings = Settings(paths.settings_file)
    settings.set("scan_external_libraries", False)
    source = write_tiny_model(base / "src.gguf", TinyModelSpec(n_layer=32, n_embd=32, n_head=4, n_ff=64))
    for i in range(100):
        folder = paths.models_dir / f"publisher{i % 10}" / f"repo{i}"
        folder.mkdir(parents=True)
        shutil.copy(source, folder / f"model-{i:03d}.Q4_K_M.gguf")

    start = time.perf_counter()
    entries = Library(paths, settings).scan()
    cold = (time.perf_counter() - start) * 1000
    assert len(entries) == 100 and all(e.ok for e in entries)

    restart = []
    for _ in range(10):
        start = time.perf_counter()
        Library(paths, settings).scan()  # a new process/library: reads the on-disk index
        restart.append((time.perf_counter() - start) * 1000)
    library = Library(paths, settings)
    library.scan()
    same = []
    for _ in range(10):
        start = time.perf_counter()
        library.scan()  # the same library rescanning (the GUI's refresh)
        same.append((time.perf_counter() - start) * 1000)
    os.utime(paths.models_dir / "publisher3" / "repo3" / "model-003.Q4_K_M.gguf")
    start = time.perf_counter()
    library.scan()
    one_changed = (time.perf_counter() - start) * 1000

    index_kib = paths.library_index.stat().st_size / 1024
    print(f"{'scan of 100 models (291 tensors each)':<44} {'ms':>8}   target")
    print(f"{'cold (every header parsed)':<44} {cold:>8.1f}")
    print(f"{'warm, new Library (index from disk)':<44} {statistics.median(restart):>8.1f}   <= 100")
    print(f"{'warm, same Library':<44} {statistics.median(same):>8.1f}   <= 100")
    print(f"{'one file touched':<44} {one_changed:>8.1f}")
    print(f"index file: {index_kib:.0f} KiB")
    shutil.rmtree(base)


if __name__ == "__main__":
    main()
