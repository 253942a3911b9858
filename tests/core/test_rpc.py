"""RPC settings and plans without workers: worker addresses, the layer split by free memory (as llama.cpp
assigns layers), and the handshake probe against things that are not RPC workers."""

from __future__ import annotations

import ast
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.core.errors import ConfigError
from app.core.fit import SplitPlan, split_by_memory
from app.core.gguf_info import ModelInfo, inspect
from app.core.load_config import LoadConfig
from app.core.rpc import (
    RpcWorkerError,
    describe_layers,
    describe_plan,
    is_loopback,
    parse_endpoint,
    parse_workers,
    query_worker,
)

GIB = 1 << 30


def test_worker_addresses_are_checked_and_normalised():
    assert parse_endpoint(" 192.168.1.20:50052 ") == "192.168.1.20:50052"
    assert parse_endpoint("gpu-box") == "gpu-box:50052"
    assert parse_endpoint("gpu-box:0080") == "gpu-box:80"
    assert parse_workers("a:1, b:2,,a:1") == ("a:1", "b:2")
    assert parse_workers(["a", "b:7"]) == ("a:50052", "b:7")
    assert parse_workers("") == ()
    for bad in ("[::1]:50052", "::1", ":50052", "a b:1", "host:", "host:x", "host:0", "host:65536"):
        with pytest.raises(ConfigError, match="RPC worker"):
            parse_endpoint(bad)


def test_load_config_carries_rpc_workers():
    config = LoadConfig(rpc_workers=("10.0.0.2:50052", "10.0.0.3:50052")).validate()
    assert LoadConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["rpc_workers"] == ("10.0.0.2:50052", "10.0.0.3:50052")
    assert LoadConfig.from_dict({"n_ctx": 512}).rpc_workers == ()
    with pytest.raises(ConfigError, match="distinct HOST:PORT"):
        LoadConfig(rpc_workers=("10.0.0.2",)).validate()  # not normalised: the CLI normalises
    with pytest.raises(ConfigError, match="port must be"):
        LoadConfig(rpc_workers=("10.0.0.2:99999",)).validate()


@pytest.fixture(scope="module")
def info_22(make_tiny_model: Callable[..., Path]) -> ModelInfo:
    """TinyLlama's layer count (22 blocks + the output layer) at a tiny width."""
    return inspect(make_tiny_model("rpc-22.gguf", n_layer=22))


def layers_of(plan: SplitPlan) -> list[tuple[str, tuple[int, ...]]]:
    return [(share.name, share.layers) for share in plan.shares]


def test_the_split_follows_free_memory_with_the_cpu_first(info_22: ModelInfo):
    plan = split_by_memory(info_22, [("RPC a:1", 8 * GIB), ("RPC b:1", 8 * GIB)], 512, cpu_free=8 * GIB)
    # 23 layers in three equal shares: round(23/3) = 8 stay on the CPU; llama.cpp gets n_gpu_layers = 15
    # and splits those at 0.5: (il - 8) / 15 < 0.5 for il = 8..15.
    assert plan.n_gpu_layers == 15 and plan.tensor_split == (8192.0, 8192.0)
    assert layers_of(plan) == [
        ("CPU", tuple(range(8))),
        ("RPC a:1", tuple(range(8, 16))),
        ("RPC b:1", tuple(range(16, 23))),
    ]
    assert plan.fits
    lopsided = split_by_memory(info_22, [("RPC a:1", 3 * GIB), ("RPC b:1", 0)], 512, cpu_free=1 * GIB)
    assert layers_of(lopsided) == [("CPU", tuple(range(6))), ("RPC a:1", tuple(range(6, 23))), ("RPC b:1", ())]


def test_split_points_use_llamacpp_float_arithmetic(info_22: ModelInfo):
    # 16 offloaded layers over weights 1:1 put the split point exactly at 0.5; llama.cpp's upper_bound sends
    # the layer at 8/16 = 0.5 to the second device.
    # CPU 7/8 GiB of 2 7/8: 23 * 7/23 = 7 layers stay on it.
    plan = split_by_memory(info_22, [("A", GIB), ("B", GIB)], 512, cpu_free=GIB * 7 // 8)
    assert plan.n_gpu_layers == 16
    assert layers_of(plan)[1:] == [("A", tuple(range(7, 15))), ("B", tuple(range(15, 23)))]


def test_a_local_gpu_takes_part_instead_of_the_cpu(info_22: ModelInfo):
    plan = split_by_memory(info_22, [("CUDA0", 24 * GIB), ("RPC a:1", 8 * GIB)], 4096)
    assert plan.n_gpu_layers == 23 and [share.name for share in plan.shares] == ["CUDA0", "RPC a:1"]
    assert sum(len(share.layers) for share in plan.shares) == 23
    assert plan.shares[0].layers == tuple(range(18))  # layer il goes to the GPU while il / 23 < 3/4


def test_the_split_accounts_for_every_weight_and_flags_what_does_not_fit(info_22: ModelInfo):
    plan = split_by_memory(info_22, [("RPC a:1", GIB), ("RPC b:1", GIB)], 512, cpu_free=GIB)
    tensors = sum(info_22.layer_bytes) + sum(info_22.non_layer_bytes.values())
    assert sum(share.weights for share in plan.shares) >= tensors
    assert all(share.kv > 0 and share.compute > 0 for share in plan.shares)
    mib = 1 << 20
    tight = split_by_memory(info_22, [("RPC a:1", 64 * mib), ("RPC b:1", 64 * mib)], 131072, cpu_free=64 * mib)
    # 16 MiB of KV cache per block at this context, 6 to 8 blocks each: none of the three has room.
    assert not tight.fits and [s.name for s in tight.shares if not s.fits] == ["CPU", "RPC a:1", "RPC b:1"]
    assert all(s.kv >= 6 * 16 * mib for s in tight.shares)
    assert all(line.endswith("<- does not fit") for line in describe_plan(tight, 23))
    tiny = split_by_memory(info_22, [("RPC a:1", 1000), ("RPC b:1", GIB)], 512, cpu_free=GIB)
    assert tiny.shares[1].layers == () and describe_plan(tiny, 23)[1].startswith("RPC a:1: layers none (")
    alone = split_by_memory(info_22, [], 512, cpu_free=GIB)
    assert alone.n_gpu_layers == 0 and layers_of(alone) == [("CPU", tuple(range(23)))]


def test_layer_ranges_read_naturally():
    assert describe_layers((0, 1, 2, 5, 7, 8, 22), 22) == "0-2, 5, 7-8, output"
    assert describe_layers((), 22) == ""
    assert describe_layers((22,), 22) == "output"


def test_loopback_addresses():
    assert is_loopback("127.0.0.1") and is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("gpu-box")


@pytest.fixture
def tcp_server() -> Iterator[Callable[[bytes | None], str]]:
    """A TCP server on 127.0.0.1 that answers every connection with the given bytes (None: stays silent)."""
    sockets: list[socket.socket] = []

    def start(answer: bytes | None) -> str:
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen()
        sockets.append(server)

        def serve() -> None:
            while True:
                try:
                    client, _ = server.accept()
                except OSError:
                    return
                sockets.append(client)
                if answer is not None:
                    client.recv(1024)
                    client.sendall(answer)
                    client.close()

        threading.Thread(target=serve, daemon=True).start()
        return f"127.0.0.1:{server.getsockname()[1]}"

    yield start
    for sock in sockets:
        sock.close()


def test_the_probe_names_a_worker_that_is_not_there_or_not_a_worker(tcp_server):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(RpcWorkerError, match=rf"^RPC worker 127.0.0.1:{port} is unreachable \(Connection refused\)"):
        query_worker(f"127.0.0.1:{port}")
    web = tcp_server(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    with pytest.raises(RpcWorkerError, match=rf"^RPC worker {web} did not complete the handshake"):
        query_worker(web)
    silent = tcp_server(None)
    with pytest.raises(RpcWorkerError, match=rf"^RPC worker {silent} accepted but did not answer within 1 s"):
        query_worker(silent, timeout=1)
    old = tcp_server(bytes([28, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0]) + bytes(24))  # a protocol 3.0.0 worker
    with pytest.raises(RpcWorkerError, match=rf"^RPC worker {old} speaks protocol 3.0.0, this Hearth 7.x"):
        query_worker(old)


def test_rpc_loads_are_refused_outside_an_isolated_engine(tiny_model: Path):
    from app.core.llama_engine import LlamaCppEngine

    engine = LlamaCppEngine()
    with pytest.raises(RpcWorkerError, match="must be loaded through app.core.isolated_engine"):
        engine.load(tiny_model, LoadConfig(n_ctx=512, rpc_workers=("127.0.0.1:1",)))
    assert engine.model is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_ggml_is_used_through_the_copy_libllama_runs_on():
    # Wheels and bundles ship libggml.so, libggml.so.0 ... as copies: opening another one by path would map a
    # second ggml whose backend registry lacks what the first loaded (the RPC module of the bundle).
    script = (
        "from app.core.hardware import llama_devices; from app.core.native import ggml; llama_devices(); ggml()\n"
        "import re; maps = open('/proc/self/maps').read()\n"
        "print(sorted({m for m in re.findall(r'/(libggml(?:-base)?\\.so[.0-9]*)$', maps, re.M)}))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    loaded = ast.literal_eval(result.stdout.strip())
    assert len([name for name in loaded if name.startswith("libggml.")]) == 1, loaded
    assert len([name for name in loaded if name.startswith("libggml-base.")]) == 1, loaded
