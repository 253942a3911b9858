"""What this machine has: CPU cores, RAM, GPUs with their memory, and which llama.cpp backend is installed.

Every probe fails soft: no NVIDIA driver, no GPU backend, a missing library or an odd platform all mean
"fewer devices", never an exception. GPUs come from llama.cpp's own device list (whatever backend the
installed build has: CUDA, Metal, Vulkan ...), refined by NVML on NVIDIA machines (driver-accurate free
memory), and on Apple Silicon the GPU shares RAM (Metal can use about 3/4 of it by default).
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("hearth.hardware")


@dataclass(frozen=True)
class GpuInfo:
    name: str
    total_bytes: int
    free_bytes: int
    source: str  # "llama.cpp", "nvml" or "unified"
    backend_device: str = ""  # llama.cpp's device name (CUDA0, Metal, Vulkan0 ...)
    unified: bool = False  # shares system RAM (Apple Silicon, integrated GPUs)


@dataclass(frozen=True)
class HardwareInfo:
    cpu_name: str
    physical_cores: int
    logical_cores: int
    total_ram: int
    available_ram: int
    gpus: tuple[GpuInfo, ...]
    backend: str  # the installed llama-cpp-python's GPU backend: "CPU", "CUDA", "Metal", "Vulkan" ...
    gpu_offload: bool  # whether that build can offload layers at all
    notes: tuple[str, ...] = field(default_factory=tuple)  # what a probe could not find, for `hearth hw`

    @property
    def vram_total(self) -> int:
        return sum(g.total_bytes for g in self.gpus if not g.unified)

    @property
    def vram_free(self) -> int:
        return sum(g.free_bytes for g in self.gpus)

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpus) and self.gpu_offload

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["vram_total"], data["vram_free"] = self.vram_total, self.vram_free
        return data


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def llama_devices() -> tuple[list[GpuInfo], str | None]:
    """GPU devices as llama.cpp's backend registry sees them (no GPU backend built in: an empty list)."""
    try:
        from app.core.native import DEVICE_TYPES, ggml_library

        ggml, ggml_base = ggml_library("ggml"), ggml_library("ggml-base")  # the copies libllama runs on
    except (ImportError, OSError) as exc:
        return [], f"llama.cpp is not usable: {exc}"
    try:
        ggml.ggml_backend_dev_count.restype = ctypes.c_size_t
        ggml.ggml_backend_dev_get.restype = ctypes.c_void_p
        ggml.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
        for lib in (ggml, ggml_base):
            for fn in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
                if hasattr(lib, fn):
                    getattr(lib, fn).restype = ctypes.c_char_p
                    getattr(lib, fn).argtypes = [ctypes.c_void_p]
        api = ggml_base if hasattr(ggml_base, "ggml_backend_dev_memory") else ggml
        api.ggml_backend_dev_memory.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_size_t),
            ctypes.POINTER(ctypes.c_size_t),
        ]
        api.ggml_backend_dev_type.restype = ctypes.c_int
        api.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
        names = ggml_base if hasattr(ggml_base, "ggml_backend_dev_name") else ggml
        gpus = []
        for index in range(ggml.ggml_backend_dev_count()):
            device = ggml.ggml_backend_dev_get(index)
            kind = DEVICE_TYPES.get(api.ggml_backend_dev_type(device), "?")
            if kind not in ("GPU", "IGPU"):
                continue
            free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
            api.ggml_backend_dev_memory(device, ctypes.byref(free), ctypes.byref(total))
            name = (names.ggml_backend_dev_name(device) or b"").decode(errors="replace")
            description = (names.ggml_backend_dev_description(device) or b"").decode(errors="replace")
            gpus.append(GpuInfo(description or name, total.value, free.value, "llama.cpp", name, kind == "IGPU"))
        return gpus, None
    except (AttributeError, OSError, ValueError) as exc:  # an older/newer ggml without these symbols
        return [], f"llama.cpp device list unavailable: {exc}"


def nvml_devices() -> tuple[list[GpuInfo], str | None]:
    """NVIDIA GPUs from the driver (NVML); an empty list without a driver."""
    try:
        import pynvml
    except ImportError:
        return [], "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # pynvml.NVMLError and friends: no driver, no GPU, no permission
        return [], f"no NVIDIA driver ({exc})"
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else str(name)
            gpus.append(GpuInfo(name, int(memory.total), int(memory.free), "nvml", f"CUDA{index}"))
        return gpus, None
    except Exception as exc:
        return [], f"NVML query failed ({exc})"
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def apple_unified(total_ram: int, available_ram: int) -> GpuInfo | None:
    """Apple Silicon: the GPU uses system RAM; Metal's default working-set limit is about 3/4 of it."""
    if platform.system() != "Darwin" or platform.machine() != "arm64":
        return None
    return GpuInfo(
        "Apple Silicon GPU",
        int(total_ram * 0.75),
        int(min(available_ram, total_ram * 0.75)),
        "unified",
        "Metal",
        unified=True,
    )


def installed_backend() -> tuple[str, bool]:
    """(backend name, can offload) of the installed llama-cpp-python build; ("unavailable", False) if none."""
    try:
        from app.core.native import backend_name, supports_gpu_offload

        return backend_name(), supports_gpu_offload()
    except Exception as exc:  # a broken or missing engine must not break hardware detection
        log.warning("llama.cpp backend unknown: %s", exc)
        return "unavailable", False


def detect_hardware(*, probe_gpus: bool = True) -> HardwareInfo:
    """A snapshot of this machine. probe_gpus=False skips the GPU probes (fast, CPU-only answers)."""
    import psutil  # here: a model's fit (and `hearth --help`, through the Hub commands) imports this module

    notes: list[str] = []
    try:
        memory = psutil.virtual_memory()
        total_ram, available_ram = int(memory.total), int(memory.available)
    except Exception as exc:
        total_ram = available_ram = 0
        notes.append(f"RAM unknown ({exc})")
    physical = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    logical = psutil.cpu_count(logical=True) or os.cpu_count() or physical
    backend, offload = installed_backend() if probe_gpus else ("CPU", False)
    gpus: list[GpuInfo] = []
    if probe_gpus:
        gpus, note = llama_devices()
        if note:
            notes.append(note)
        nvidia, note = nvml_devices()
        if note and not gpus:
            notes.append(note)
        if nvidia:  # the driver's free-memory figure is the one that counts for CUDA allocations
            by_index = {g.backend_device: g for g in nvidia}
            gpus = [by_index.pop(g.backend_device, g) if g.backend_device.startswith("CUDA") else g for g in gpus]
            gpus += list(by_index.values())
        unified = apple_unified(total_ram, available_ram)
        if unified and not any(g.unified for g in gpus):
            gpus.append(unified)
    if not offload and gpus:
        notes.append(
            f"this llama-cpp-python build is {backend}-only: GPUs cannot be used until a GPU build is "
            "installed (see README, GPU builds)"
        )
    return HardwareInfo(
        _cpu_name(), physical, logical, total_ram, available_ram, tuple(gpus), backend, offload, tuple(notes)
    )


_CACHED: tuple[float, HardwareInfo] | None = None


def current_hardware(max_age: float = 30.0) -> HardwareInfo:
    """detect_hardware(), remembered for max_age seconds (a Hub file list or a library view asks per file)."""
    global _CACHED
    if _CACHED is None or time.monotonic() - _CACHED[0] > max_age:
        _CACHED = (time.monotonic(), detect_hardware())
    return _CACHED[1]
