"""Load llama.cpp's GPU-backend libraries before anything imports numpy.

Seen on an H100 machine (CUDA build of llama.cpp 0c1e570, numpy 2.5.2 from PyPI): when numpy is imported
before the CUDA backend library is loaded, every llama_model_load_from_file segfaults, whatever the
layer count; loading libggml-cuda first (as llama-cpp-python's own import order happens to do) avoids it.
Hearth's GGUF reader needs numpy long before the engine starts, so the entry points call this first.
CPU-only builds are unaffected and skip it (start-up stays fast). It imports nothing heavy itself.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("hearth.engine")

GPU_MARKERS = ("cuda", "vulkan", "hip", "metal", "sycl", "opencl", "musa")
_done = False


def llama_library_dir() -> Path | None:
    """llama-cpp-python's library folder, found without importing the package."""
    override = os.environ.get("LLAMA_CPP_LIB_PATH")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).parent / "lib"


def preload_llama_libraries() -> list[str]:
    """Load the GPU backend (and what it needs) with RTLD_GLOBAL; returns the files loaded (idempotent)."""
    global _done
    if _done or ("numpy" in sys.modules and "llama_cpp" in sys.modules):
        return []
    _done = True
    folder = llama_library_dir()
    if folder is None or not folder.is_dir():
        return []
    libraries = [p for p in folder.iterdir() if p.suffix in (".so", ".dylib", ".dll") or ".so." in p.name]
    if not any(marker in p.name.lower() for p in libraries for marker in GPU_MARKERS):
        return []
    order = ("ggml-base", "ggml-cpu", *GPU_MARKERS, "ggml.", "llama.")
    chosen: list[Path] = []
    for key in order:
        for path in sorted(libraries):
            name = path.name.lower()
            if key in name and path not in chosen and not path.is_symlink() and "bench" not in name:
                chosen.append(path)
    loaded = []
    for path in chosen:
        try:
            ctypes.CDLL(str(path), mode=getattr(ctypes, "RTLD_GLOBAL", 0))
            loaded.append(path.name)
        except OSError as exc:  # the engine will report a broken install properly when it loads
            log.warning("could not preload %s: %s", path.name, exc)
    return loaded
