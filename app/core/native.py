"""llama.cpp's native libraries: where they are, loading them (in the right order), and process-level helpers.

Every other module reaches llama_cpp through llama() here, so the backend is initialised once and llama.cpp's
log is routed into Hearth's before anything else runs.

Why preload: seen on an H100 machine (CUDA build of llama.cpp 0c1e570, numpy 2.5.2 from PyPI), when numpy is
imported before the CUDA backend library is loaded, every llama_model_load_from_file segfaults, whatever the
layer count; loading libggml-cuda first (as llama-cpp-python's own import order happens to do) avoids it.
Hearth's GGUF reader needs numpy long before the engine starts, so the entry points call
preload_llama_libraries() first. CPU-only builds are unaffected and skip it (start-up stays fast). This module
imports nothing heavy itself: every `hearth` command runs the preload, so even ctypes and tempfile are imported
where they are used.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ctypes

log = logging.getLogger("hearth.engine")

GPU_MARKERS = ("cuda", "vulkan", "hip", "metal", "sycl", "opencl", "musa")
_preloaded = False
_backend_ready = False
_backend_lock = threading.Lock()


def library_dir() -> Path | None:
    """Where llama-cpp-python loads llama.cpp from (LLAMA_CPP_LIB_PATH overrides its own lib/ folder), found
    without importing the package; None when llama-cpp-python is not installed."""
    override = os.environ.get("LLAMA_CPP_LIB_PATH")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).parent / "lib"


def preload_llama_libraries() -> list[str]:
    """Load the GPU backend (and what it needs) with RTLD_GLOBAL; returns the files loaded (idempotent)."""
    global _preloaded
    if _preloaded or ("numpy" in sys.modules and "llama_cpp" in sys.modules):
        return []
    _preloaded = True
    folder = library_dir()
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
    import ctypes

    loaded = []
    for path in chosen:
        try:
            ctypes.CDLL(str(path), mode=getattr(ctypes, "RTLD_GLOBAL", 0))
            loaded.append(path.name)
        except OSError as exc:  # the engine will report a broken install properly when it loads
            log.warning("could not preload %s: %s", path.name, exc)
    return loaded


def llama() -> Any:
    """The llama_cpp module, imported lazily (it loads native libraries), backend initialised once."""
    global _backend_ready
    import llama_cpp

    with _backend_lock:
        if not _backend_ready:
            from app.core import llama_log

            llama_log.install()
            llama_cpp.llama_backend_init()
            _backend_ready = True
    return llama_cpp


def ggml_library(stem: str) -> ctypes.CDLL:
    """The copy of a ggml library ("ggml", "ggml-base") that libllama itself runs on.

    Wheels and bundles hold copies, not symlinks (libggml.so, libggml.so.0, libggml.so.0.25.3): opening
    another copy by its path would load a second ggml, with its own backend registry (empty of the backends
    a GGML_BACKEND_DL build loads at start, such as RPC in the portable bundle). So the file already loaded
    is found with RTLD_NOLOAD; Windows has one DLL per name.
    """
    import ctypes

    llama()  # libllama loads its ggml first
    folder = library_dir()
    if folder is None:
        raise OSError("llama-cpp-python is not installed")
    candidates = [*sorted(folder.glob(f"lib{stem}.so*")), *sorted(folder.glob(f"lib{stem}.*dylib"))]
    candidates += [p for p in (folder / f"{stem}.dll", folder / f"lib{stem}.dll") if p.is_file()]
    if not candidates:
        raise OSError(f"llama.cpp's {stem} library is not in {folder}")
    no_load = getattr(os, "RTLD_NOLOAD", 0)
    if no_load:
        for path in candidates:
            try:
                return ctypes.CDLL(str(path), mode=no_load | os.RTLD_NOW)
            except OSError:  # not the copy in use
                continue
    return ctypes.CDLL(str(candidates[0]))


def backend_name() -> str:
    """Which GPU backend this llama-cpp-python build has, from the shared libraries it ships."""
    lib = library_dir()
    names = " ".join(p.name.lower() for p in lib.glob("*")) if lib is not None and lib.is_dir() else ""
    for marker, name in (
        ("cuda", "CUDA"),
        ("metal", "Metal"),
        ("vulkan", "Vulkan"),
        ("hip", "ROCm"),
        ("sycl", "SYCL"),
        ("opencl", "OpenCL"),
    ):
        if marker in names:
            return name
    return "Metal" if sys.platform == "darwin" and supports_gpu_offload() else "CPU"


def supports_gpu_offload() -> bool:
    """Whether layers can go to a GPU of this machine. llama_supports_gpu_offload() alone also says yes for
    any build with the RPC backend (RPC workers count as offload devices), even on a machine without a GPU."""
    lib = llama()
    if not lib.llama_supports_gpu_offload():
        return False
    if not lib.llama_supports_rpc():
        return True
    return bool(ggml().local_devices(("GPU", "IGPU")))


# ---- llama.cpp's backend registry through ctypes ------------------------------------------------------------
DEVICE_TYPES = {0: "CPU", 1: "GPU", 2: "IGPU", 3: "ACCEL", 4: "META"}  # enum ggml_backend_dev_type


class GgmlRegistry:
    """The few ggml-backend functions this module needs, from the libraries llama_cpp itself loaded."""

    def __init__(self) -> None:
        import ctypes

        try:  # the very copies libllama runs on (another copy would have a registry of its own)
            ggml, base = ggml_library("ggml"), ggml_library("ggml-base")
        except OSError as exc:
            raise OSError(f"llama.cpp's ggml libraries are not usable: {exc}") from None

        def bind(name: str, restype: Any, *argtypes: Any) -> Any:
            function = getattr(ggml, name, None) or getattr(base, name)
            function.restype, function.argtypes = restype, list(argtypes)
            return function

        vp = ctypes.c_void_p
        self.reg_by_name = bind("ggml_backend_reg_by_name", vp, ctypes.c_char_p)
        self.reg_get_proc_address = bind("ggml_backend_reg_get_proc_address", vp, vp, ctypes.c_char_p)
        self.reg_dev_count = bind("ggml_backend_reg_dev_count", ctypes.c_size_t, vp)
        self.reg_dev_get = bind("ggml_backend_reg_dev_get", vp, vp, ctypes.c_size_t)
        self.dev_count = bind("ggml_backend_dev_count", ctypes.c_size_t)
        self.dev_get = bind("ggml_backend_dev_get", vp, ctypes.c_size_t)
        self.dev_type = bind("ggml_backend_dev_type", ctypes.c_int, vp)
        self.dev_name = bind("ggml_backend_dev_name", ctypes.c_char_p, vp)
        self.dev_description = bind("ggml_backend_dev_description", ctypes.c_char_p, vp)
        size_p = ctypes.POINTER(ctypes.c_size_t)
        self.dev_memory = bind("ggml_backend_dev_memory", None, vp, size_p, size_p)

    def memory(self, device: int) -> tuple[int, int]:
        import ctypes

        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        self.dev_memory(device, ctypes.byref(free), ctypes.byref(total))
        return free.value, total.value

    def local_devices(self, kinds: tuple[str, ...]) -> list[int]:
        return [
            device
            for device in (self.dev_get(i) for i in range(self.dev_count()))
            if DEVICE_TYPES.get(self.dev_type(device)) in kinds
        ]


_registry: GgmlRegistry | None = None
_registry_lock = threading.Lock()


def ggml() -> GgmlRegistry:
    global _registry
    with _registry_lock:
        if _registry is None:
            _registry = GgmlRegistry()
        return _registry


class Captured:
    """What captured_stderr() collected (filled in when the block ends)."""

    text = ""


@contextlib.contextmanager
def captured_stderr() -> Iterator[Captured]:
    """Collect what native code writes to fd 2 during the block (and keep it off the terminal)."""
    import tempfile

    result = Captured()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield result
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            result.text = sink.read().decode("utf-8", errors="replace")


def release_heap() -> None:
    """Hand freed heap pages back to the OS after an unload (glibc keeps them otherwise, so the app would
    look as big as the last model long after ejecting it)."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
