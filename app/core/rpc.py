"""RPC workers: llama.cpp's RPC backend (ggml-rpc) to split a model across machines, and to serve as a worker.

How llama.cpp does it (ggml-rpc of llama.cpp 0c1e570): a worker runs `ggml_backend_rpc_start_server` on its
GPU or CPU; a client adds it with `ggml_backend_rpc_add_server(endpoint)` (through the RPC registry's
proc-address table), gets one backend device per device of the worker, and passes those devices with the
local ones in `llama_model_params.devices`; `n_gpu_layers` and `tensor_split` decide which layers go where.

Three facts shape this module:
- The protocol has no authentication: whoever reaches the port can run graphs and read memory there.
  Workers bind 127.0.0.1 unless told otherwise.
- The RPC *client* calls GGML_ABORT (the whole process ends) when a worker cannot be reached or drops the
  connection mid-request. So every worker is probed first, here in Python (a HELLO handshake, the device
  count, each device's memory), and named in a clean error when it does not answer; and a model split over
  workers is loaded in a child process (app/core/isolated_engine.py) so a worker that dies mid-reply ends
  that child, not Hearth.
- A worker serves one client at a time (its accept loop runs clients in turn): a worker busy with another
  client answers nothing until that client leaves, which the probe reports as busy.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.core.errors import ConfigError, HearthError, ModelLoadError
from app.core.fit import GPU_OVERHEAD, SplitPlan, split_by_memory
from app.core.gguf_info import ModelInfo, format_bytes
from app.core.native import GgmlRegistry, ggml

if TYPE_CHECKING:
    from app.core.load_config import LoadConfig

log = logging.getLogger("hearth.rpc")

DEFAULT_PORT = 50052
PROTOCOL_MAJOR = 7  # RPC_PROTO_MAJOR_VERSION of ggml-rpc.h in llama.cpp 0c1e570: workers must match it
PROBE_TIMEOUT = 5.0  # seconds for a worker to accept and answer the handshake
REBUILD_COMMAND = 'CMAKE_ARGS="-DGGML_RPC=ON" pip install --no-cache-dir --force-reinstall llama-cpp-python'

# ggml-rpc's wire format: | command (1 byte) | payload size (uint64) | payload |, answered by
# | size (uint64) | payload |. Command numbers and sizes from ggml-rpc.cpp (RPC_CMD_HELLO is fixed at 14).
_CMD_GET_DEVICE_MEMORY = 11
_CMD_HELLO = 14
_CMD_DEVICE_COUNT = 15
_CONN_CAPS = 24  # RPC_CONN_CAPS_SIZE: transport upgrades offered (none here: plain TCP)


class RpcWorkerError(ModelLoadError):
    """An RPC worker is unreachable, busy, of another protocol version, or this engine build lacks RPC."""


def no_rpc_message() -> str:
    return f"this llama.cpp build has no RPC backend; rebuild it with: {REBUILD_COMMAND}"


# ---- worker addresses -----------------------------------------------------------------------------------
def parse_endpoint(text: str) -> str:
    """ "host:port" (or "host", meaning port 50052) checked and normalised; ConfigError otherwise."""
    value = text.strip()
    host, sep, port_text = value.rpartition(":")
    if not sep:
        host, port_text = value, str(DEFAULT_PORT)
    # llama.cpp splits an endpoint at its first colon: an IPv6 literal cannot be written as one.
    if not host or ":" in host or any(c.isspace() for c in host) or host.startswith("["):
        raise ConfigError(f"RPC worker {text!r} must be HOST:PORT (a name or IPv4 address, e.g. 192.168.1.20:50052)")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"RPC worker {text!r}: the port must be 1 to 65535")
    return f"{host}:{int(port_text)}"


def parse_workers(value: str | Iterable[str]) -> tuple[str, ...]:
    """ "host:port,host:port" (or a list of them) -> normalised endpoints, in order, without repeats."""
    items = value.split(",") if isinstance(value, str) else list(value)
    endpoints: list[str] = []
    for item in items:
        if item.strip():
            endpoint = parse_endpoint(item)
            if endpoint not in endpoints:
                endpoints.append(endpoint)
    return tuple(endpoints)


# ---- talking to a worker (pure Python: never GGML_ABORT) ----------------------------------------------
@dataclass(frozen=True)
class WorkerDevice:
    free_bytes: int
    total_bytes: int


@dataclass(frozen=True)
class WorkerInfo:
    endpoint: str
    version: str
    devices: tuple[WorkerDevice, ...] = field(default_factory=tuple)

    @property
    def free_bytes(self) -> int:
        return sum(d.free_bytes for d in self.devices)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the worker closed the connection")
        data += chunk
    return data


def _command(sock: socket.socket, cmd: int, payload: bytes, answer_size: int) -> bytes:
    sock.sendall(struct.pack("<BQ", cmd, len(payload)) + payload)
    (size,) = struct.unpack("<Q", _recv_exact(sock, 8))
    if size != answer_size:
        raise ConnectionError(f"unexpected answer size {size} (not a llama.cpp RPC worker?)")
    return _recv_exact(sock, size)


def query_worker(endpoint: str, timeout: float = PROBE_TIMEOUT) -> WorkerInfo:
    """Handshake with a worker and read its devices' memory; RpcWorkerError naming it if that fails."""
    host, _, port = endpoint.rpartition(":")
    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout)
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise RpcWorkerError(
            f"RPC worker {endpoint} is unreachable ({reason}); start `hearth rpc-worker` there or remove it"
        ) from None
    with sock:
        try:
            hello = _command(sock, _CMD_HELLO, bytes(_CONN_CAPS), 4 + _CONN_CAPS)
            major, minor, patch = hello[0], hello[1], hello[2]
            if major != PROTOCOL_MAJOR:
                raise RpcWorkerError(
                    f"RPC worker {endpoint} speaks protocol {major}.{minor}.{patch}, this Hearth {PROTOCOL_MAJOR}.x: "
                    "run the same llama-cpp-python version on both machines"
                )
            (count,) = struct.unpack("<I", _command(sock, _CMD_DEVICE_COUNT, b"", 4))
            devices = []
            for index in range(count):
                free, total = struct.unpack("<QQ", _command(sock, _CMD_GET_DEVICE_MEMORY, struct.pack("<I", index), 16))
                devices.append(WorkerDevice(free, total))
        except TimeoutError:
            raise RpcWorkerError(
                f"RPC worker {endpoint} accepted but did not answer within {timeout:.0f} s "
                "(it serves one client at a time: is another program using it?)"
            ) from None
        except (ConnectionError, OSError) as exc:
            raise RpcWorkerError(f"RPC worker {endpoint} did not complete the handshake ({exc})") from None
    if not devices:
        raise RpcWorkerError(f"RPC worker {endpoint} has no device to offer")
    return WorkerInfo(endpoint, f"{major}.{minor}.{patch}", tuple(devices))


def reachable(endpoint: str, timeout: float = 2.0) -> bool:
    """Whether something accepts connections at endpoint (no handshake: a busy worker counts as up)."""
    host, _, port = endpoint.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def _rpc_proc(api: GgmlRegistry, name: bytes) -> int:
    """The address of one of ggml-rpc's functions, from the RPC backend's registry entry."""
    registry = api.reg_by_name(b"RPC") or None
    address = api.reg_get_proc_address(registry, name) if registry else None
    if not address:
        raise RpcWorkerError(no_rpc_message())
    return address


def rpc_available() -> bool:
    """Whether the installed llama.cpp build has the RPC backend (GGML_RPC=ON)."""
    from app.core.native import llama

    try:
        return bool(llama().llama_supports_rpc())
    except Exception as exc:  # a broken or missing engine has no RPC either
        log.warning("cannot tell whether llama.cpp has RPC: %s", exc)
        return False


# ---- placing a model on the local device and the workers ----------------------------------------------
@dataclass
class Placement:
    """What place_model() put into llama_model_params; the ctypes arrays must outlive the load call."""

    workers: tuple[WorkerInfo, ...]
    plan: SplitPlan
    devices: Any  # (ggml_backend_dev_t * (n + 1)), NULL-terminated
    tensor_split: Any  # float * llama_max_devices()

    def describe(self, n_layers: int) -> list[str]:
        return describe_plan(self.plan, n_layers)


last_placement: Placement | None = None  # the last RPC load's placement in this process (for reporting)
# Set by the engine child process (app/core/isolated_engine.py). Anywhere else an RPC load is refused: the
# RPC client aborts the process it runs in when a worker dies.
isolated = False


def describe_plan(plan: SplitPlan, n_layers: int) -> list[str]:
    """One line per device: which layers it holds and the memory they take there."""
    lines = []
    for share in plan.shares:
        layers = describe_layers(share.layers, n_layers - 1)
        lines.append(
            f"{share.name}: layers {layers or 'none'} ({format_bytes(share.total)}; "
            f"{format_bytes(share.free_bytes)} free)" + ("" if share.fits else "  <- does not fit")
        )
    return lines


def describe_layers(layers: tuple[int, ...], output: int) -> str:
    """ "0-7, 9, output": block ranges, with the output layer (index `output`) named."""
    parts: list[str] = []
    blocks = [layer for layer in layers if layer != output]
    start = prev = None
    for layer in [*blocks, None]:
        if layer is not None and prev is not None and layer == prev + 1:
            prev = layer
            continue
        if start is not None:
            parts.append(f"{start}" if start == prev else f"{start}-{prev}")
        start = prev = layer
    if output in layers:
        parts.append("output")
    return ", ".join(parts)


def plan_split(
    info: ModelInfo, workers: Iterable[WorkerInfo], n_ctx: int, kv_type: str = "f16"
) -> tuple[SplitPlan, list[str]]:
    """The split of a model over the local device(s) and the workers' devices, in proportion to free
    memory, with the device names in llama.cpp's order. Local GPUs take part when there are any (else the
    CPU, with its available RAM)."""
    cpu_free: int | None = None
    gpus = _local_gpus()
    names = list(gpus)
    if not gpus:
        import psutil

        cpu_free = int(psutil.virtual_memory().available)
    for worker in workers:
        for index, device in enumerate(worker.devices):
            suffix = f" #{index}" if len(worker.devices) > 1 else ""
            names.append((f"RPC {worker.endpoint}{suffix}", device.free_bytes))
    plan = split_by_memory(info, names, n_ctx, kv_type, cpu_free=cpu_free)
    return plan, [name for name, _ in names]


def _local_gpus() -> list[tuple[str, int]]:
    try:
        api = ggml()
    except HearthError:
        return []
    gpus = []
    for device in api.local_devices(("GPU", "IGPU")):
        free, _ = api.memory(device)
        free = max(free - GPU_OVERHEAD, 0)  # the backend's own context takes this much before any buffer
        gpus.append(((api.dev_name(device) or b"GPU").decode(errors="replace"), free))
    return gpus


def place_model(lib: Any, params: Any, config: LoadConfig, info: ModelInfo) -> Placement | None:
    """Fill llama_model_params for config.rpc_workers (None, params untouched, without workers).

    Every worker is probed first (an unreachable one is named in a RpcWorkerError, instead of llama.cpp
    aborting the process), then added to llama.cpp's RPC backend; the layers are split over the local
    device and the workers' devices in proportion to their free memory. Keep the returned object until
    llama_model_load_from_file has returned.
    """
    global last_placement
    workers_wanted = tuple(getattr(config, "rpc_workers", ()) or ())
    if not workers_wanted:
        return None
    if not isolated:
        raise RpcWorkerError(
            "a model split over RPC workers must be loaded through app.core.isolated_engine (engine_for): "
            "a worker that dies would end this process"
        )
    if not lib.llama_supports_rpc():
        raise RpcWorkerError(no_rpc_message())
    workers = tuple(query_worker(endpoint) for endpoint in workers_wanted)
    api = ggml()
    add_server = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)(_rpc_proc(api, b"ggml_backend_rpc_add_server"))
    remote: list[int] = []
    for worker in workers:
        registry = add_server(worker.endpoint.encode())
        if not registry:
            raise RpcWorkerError(f"RPC worker {worker.endpoint} could not be added (see the log)")
        remote += [api.reg_dev_get(registry, i) for i in range(api.reg_dev_count(registry))]
    local = api.local_devices(("GPU", "IGPU"))
    plan, names = plan_split(info, workers, config.effective_ctx(info), config.kv_cache_type)
    devices = (ctypes.c_void_p * (len(local) + len(remote) + 1))(*local, *remote, None)
    split = (ctypes.c_float * max(lib.llama_max_devices(), len(plan.tensor_split)))(*plan.tensor_split)
    params.devices = ctypes.cast(devices, ctypes.c_void_p).value
    params.tensor_split = split
    params.n_gpu_layers = plan.n_gpu_layers
    placement = Placement(workers, plan, devices, split)
    blocks = info.block_count or len(info.layer_bytes)
    log.info(
        "RPC split of %s over %s: %s", info.display_name, ", ".join(names), "; ".join(placement.describe(blocks + 1))
    )
    last_placement = placement
    return placement


# ---- serving as a worker ----------------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    """Whether only this machine can reach an address (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


@dataclass(frozen=True)
class WorkerDeviceInfo:
    name: str
    description: str
    free_bytes: int
    total_bytes: int


def worker_devices() -> list[WorkerDeviceInfo]:
    """The devices `hearth rpc-worker` serves: every GPU (as llama.cpp's rpc-server picks them), else the CPU."""
    api = ggml()
    if not api.reg_by_name(b"RPC"):
        raise RpcWorkerError(no_rpc_message())
    chosen = api.local_devices(("GPU", "IGPU")) or api.local_devices(("CPU",))[:1]
    result = []
    for device in chosen:
        free, total = api.memory(device)
        name = (api.dev_name(device) or b"").decode(errors="replace")
        description = (api.dev_description(device) or b"").decode(errors="replace")
        result.append(WorkerDeviceInfo(name, description, free, total))
    return result


def check_port_free(host: str, port: int) -> None:
    """Refuse early, with a clear message, when the address cannot be bound (llama.cpp would only print
    'Failed to create server socket')."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        with contextlib.suppress(OSError):
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as llama.cpp's server socket does
        try:
            probe.bind(address)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def serve(host: str, port: int, threads: int, cache_dir: Path | None) -> None:
    """Run llama.cpp's RPC server on this machine's devices; blocks for good (run it in a thread)."""
    api = ggml()
    start = ctypes.CFUNCTYPE(
        None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p)
    )(_rpc_proc(api, b"ggml_backend_rpc_start_server"))
    chosen = api.local_devices(("GPU", "IGPU")) or api.local_devices(("CPU",))[:1]
    devices = (ctypes.c_void_p * len(chosen))(*chosen)
    cache = str(cache_dir).encode() if cache_dir is not None else None
    start(f"{host}:{port}".encode(), cache, threads, len(chosen), devices)
