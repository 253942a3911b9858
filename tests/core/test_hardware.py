"""Hardware detection and the fit estimator: hand-computed figures, llama.cpp's own numbers, the OOM path."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from app.core.errors import ModelOutOfMemoryError
from app.core.fit import (
    GPU_OVERHEAD,
    KV_BYTES,
    Fit,
    compute_bytes,
    estimate,
    fit_from_size,
    kv_bytes_per_layer,
    kv_cells,
    load_with_oom_retry,
    max_gpu_layers,
    model_fit,
    suggest_layers_after_oom,
)
from app.core.gguf_info import inspect
from app.core.hardware import GpuInfo, HardwareInfo, detect_hardware, llama_devices
from app.core.llama_engine import LlamaCppEngine
from app.core.load_config import LoadConfig

GIB = 1024**3
MIB = 1024**2


def machine(ram: int = 16 * GIB, free_ram: int = 12 * GIB, vram: int = 0, free_vram: int | None = None) -> HardwareInfo:
    gpus = (GpuInfo("Test GPU", vram, vram if free_vram is None else free_vram, "test", "CUDA0"),) if vram else ()
    return HardwareInfo("test CPU", 4, 8, ram, free_ram, gpus, "CUDA" if vram else "CPU", bool(vram))


# ---- detection ----------------------------------------------------------------------------------------------


def test_detection_on_this_cpu_only_machine_fails_soft():
    hw = detect_hardware()
    assert hw.physical_cores >= 1 and hw.logical_cores >= hw.physical_cores
    assert 0 < hw.available_ram <= hw.total_ram
    assert hw.backend == "CPU" and not hw.gpu_offload
    assert hw.gpus == () and not hw.has_gpu
    assert any("NVIDIA" in note or "NVML" in note for note in hw.notes)
    assert json.loads(json.dumps(hw.to_dict()))["backend"] == "CPU"
    gpus, problem = llama_devices()  # llama.cpp's device list: the CPU backend lists no GPU
    assert gpus == [] and problem is None


def test_default_threads_are_physical_cores():
    import psutil

    assert LoadConfig().threads == (psutil.cpu_count(logical=False) or os.cpu_count())


# ---- the estimator against hand-computed figures -------------------------------------------------------------

SHAPES = [
    {"n_embd": 256, "n_layer": 4, "n_head": 8, "n_head_kv": 4, "n_ff": 512},
    {"n_embd": 128, "n_layer": 6, "n_head": 4, "n_head_kv": 1, "n_ff": 384},
    {"n_embd": 192, "n_layer": 3, "n_head": 6, "n_head_kv": 6, "n_ff": 256},
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s['n_layer']}x{s['n_embd']}")
@pytest.mark.parametrize("kv_type", ["f16", "q8_0", "q4_0"])
def test_estimate_matches_hand_computed_figures(make_tiny_model, shape, kv_type):
    info = inspect(make_tiny_model(f"fit-{shape['n_layer']}x{shape['n_embd']}.gguf", **shape))
    embd, layers, heads, kv_heads, ff = (
        shape["n_embd"],
        shape["n_layer"],
        shape["n_head"],
        shape["n_head_kv"],
        shape["n_ff"],
    )
    head = embd // heads
    vocab = info.vocab_size
    layer = 4 * (2 * embd + 2 * embd * embd + 2 * kv_heads * head * embd + 3 * ff * embd)  # F32 weights
    output = 4 * (vocab * embd + embd)
    embeddings = 4 * vocab * embd
    kv_layer = int(1024 * kv_heads * 2 * head * KV_BYTES[kv_type])  # n_ctx 1000 -> 1024 cells
    assert kv_cells(1000) == 1024 and kv_bytes_per_layer(info, 1000, kv_type) == kv_layer

    cpu_only = estimate(info, 0, 1000, kv_type)
    assert (cpu_only.weights_gpu, cpu_only.kv_gpu, cpu_only.gpu_bytes) == (0, 0, 0)
    assert cpu_only.weights_cpu == layers * layer + output + embeddings  # F32: nothing is repacked
    assert cpu_only.kv_cpu == layers * kv_layer

    output_only = estimate(info, 1, 1000, kv_type)  # llama.cpp offloads the output layer first
    assert output_only.weights_gpu == output and output_only.kv_gpu == 0
    assert output_only.weights_cpu == layers * layer + embeddings

    half = layers // 2
    partial = estimate(info, half + 1, 1000, kv_type)  # the last `half` blocks and the output
    assert partial.weights_gpu == half * layer + output
    assert partial.kv_gpu == half * kv_layer and partial.kv_cpu == (layers - half) * kv_layer

    everything = estimate(info, -1, 1000, kv_type)
    assert everything.n_gpu_layers == layers + 1
    assert everything.weights_gpu == layers * layer + output and everything.weights_cpu == embeddings
    assert everything.gpu_bytes == everything.weights_gpu + everything.kv_gpu + everything.compute_gpu + GPU_OVERHEAD


def test_compute_buffer_formula_by_hand(make_tiny_model):
    info = inspect(make_tiny_model("fit-compute.gguf", n_embd=256, n_layer=2, n_head=8, n_head_kv=4, n_ff=512))
    logits = 512 * info.vocab_size * 4 + 2 * 512 * 256 * 4
    scores = 512 * 2048 * 8 * 4 + 2 * 2048 * 128 * 4 + int(5.25 * 512 * 256 * 4)
    assert compute_bytes(info, 2048, flash_attention=False) == max(logits, scores)
    assert compute_bytes(info, 2048, flash_attention=True) == max(
        logits, int(5.25 * 512 * 256 * 4), 2 * 512 * 512 * 4 + 2 * 512 * 256 * 4
    )


class _BufferSizes(logging.Handler):
    pattern = re.compile(r"(CPU\S*) (model|KV|compute) buffer size = +([\d.]+) MiB")

    def __init__(self) -> None:
        super().__init__()
        self.sizes: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        match = self.pattern.search(record.getMessage())
        if match:
            key = f"{match.group(1)} {match.group(2)}"
            self.sizes[key] = self.sizes.get(key, 0.0) + float(match.group(3))


@pytest.mark.parametrize("n_ctx", [512, 4096])
def test_cpu_estimate_matches_what_llama_cpp_allocates(gemma_path: Path, n_ctx: int):
    """llama.cpp reports every buffer it allocates; the estimate must agree (KV, compute, repacked weights)."""
    handler = _BufferSizes()
    logger = logging.getLogger("hearth.llama")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        engine = LlamaCppEngine()
        engine.load(gemma_path, LoadConfig(n_ctx=n_ctx))
        engine.unload()
    finally:
        logger.removeHandler(handler)
    est = estimate(inspect(gemma_path), 0, n_ctx)
    sizes = handler.sizes
    assert est.kv_cpu / MIB == pytest.approx(sizes["CPU KV"], rel=0.01)
    assert est.compute_cpu / MIB == pytest.approx(sizes["CPU compute"], rel=0.02)
    weights = sizes["CPU_Mapped model"] + sizes.get("CPU_REPACK model", 0)
    assert est.weights_cpu / MIB == pytest.approx(weights, rel=0.02)


# ---- layer choice, fit classes, the OOM path --------------------------------------------------------------


def test_max_gpu_layers_is_monotonic_and_bounded(make_tiny_model):
    info = inspect(make_tiny_model("fit-layers.gguf", n_embd=256, n_layer=8, n_head=8, n_head_kv=4, n_ff=512))
    counts = [max_gpu_layers(info, free, 2048) for free in (0, 100 * MIB, 200 * MIB, 400 * MIB, 10 * GIB)]
    assert counts == sorted(counts) and counts[0] == 0 and counts[-1] == 9
    limit = max_gpu_layers(info, 200 * MIB, 2048)
    assert estimate(info, limit, 2048).gpu_bytes <= 200 * MIB * 0.95
    if limit < 9:
        assert estimate(info, limit + 1, 2048).gpu_bytes > 200 * MIB * 0.95


def test_fit_classes(make_tiny_model):
    info = inspect(make_tiny_model("fit-classes.gguf"))
    assert model_fit(info, machine(), 2048)[0] is Fit.FITS
    assert model_fit(info, machine(vram=8 * GIB), 2048)[1].n_gpu_layers == info.block_count + 1
    assert fit_from_size(4 * GIB, machine()) is Fit.FITS
    assert fit_from_size(13 * GIB, machine()) is Fit.TIGHT
    assert fit_from_size(40 * GIB, machine()) is Fit.TOO_BIG
    assert fit_from_size(6 * GIB, machine(vram=8 * GIB)) is Fit.FITS
    assert fit_from_size(12 * GIB, machine(vram=8 * GIB)) is Fit.PARTLY
    assert Fit.PARTLY.label == "fits partly" and Fit.TOO_BIG.label == "does not fit"


def test_out_of_memory_load_is_retried_with_fewer_layers(make_tiny_model):
    info = inspect(make_tiny_model("fit-oom.gguf", n_embd=256, n_layer=8, n_head=8, n_head_kv=4, n_ff=512))
    FREE = GPU_OVERHEAD + 53 * MIB  # room for the CUDA context and about five of the tiny model's layers
    gpu = machine(vram=GIB, free_vram=FREE)
    attempts: list[int] = []

    def failing_load(layers: int) -> str:  # an injected GPU that has less memory than the driver claims
        attempts.append(layers)
        if layers > 4:
            raise ModelOutOfMemoryError("tiny: out of memory while allocating the model")
        return f"loaded with {layers}"

    suggest = lambda layers: suggest_layers_after_oom(info, gpu, layers, 2048)  # noqa: E731
    result, used = load_with_oom_retry(failing_load, 9, suggest)
    # the estimate (5 layers) was still too much for this GPU: a second, smaller retry succeeds
    assert attempts == [9, 5, 4] and used == 4 and result == "loaded with 4"
    assert max_gpu_layers(info, FREE, 2048) == 5
    attempts.clear()
    with pytest.raises(ModelOutOfMemoryError, match=r"try \d+ GPU layers") as error:
        load_with_oom_retry(failing_load, 9, suggest, retry=False)
    assert error.value.suggested_gpu_layers == suggest(9) and attempts == [9]
    with pytest.raises(ModelOutOfMemoryError):  # already on the CPU: nothing smaller to try
        load_with_oom_retry(lambda layers: failing_load(9), 0, suggest)


def test_auto_layers_on_a_cpu_build_load_on_the_cpu(tiny_model: Path):
    engine = LlamaCppEngine()
    loaded = engine.load(tiny_model, LoadConfig(n_ctx=256, n_gpu_layers=-2))
    engine.unload()
    assert loaded.n_gpu_layers == 0 and loaded.config.n_gpu_layers == 0


# ---- CLI ----------------------------------------------------------------------------------------------------


def hearth(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args], capture_output=True, text=True, timeout=120, env=os.environ.copy()
    )


def test_hw_and_fit_cli(tiny_model: Path):
    data = json.loads(hearth("hw", "--json").stdout)
    assert data["backend"] == "CPU" and data["physical_cores"] >= 1 and data["gpus"] == []
    text = hearth("hw").stdout
    assert "CPU only" in text and "none found" in text
    fit = json.loads(hearth("fit", str(tiny_model), "--ctx", "1024", "--kv", "f16", "--json").stdout)
    assert fit["fit"] == "fits" and fit["auto_gpu_layers"] == 0 and fit["n_ctx"] == 1024
    expected = estimate(inspect(tiny_model), 0, 1024)
    assert fit["estimates"][0]["cpu_bytes"] == expected.cpu_bytes
    assert "Verdict: fits fully" in hearth("fit", str(tiny_model)).stdout
    bad = hearth("fit", str(tiny_model), "--ctx", "1000")
    assert bad.returncode == 2 and "multiple of 256" in bad.stderr
