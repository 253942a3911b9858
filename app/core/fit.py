"""Will it fit? Memory a model needs on the GPU and in RAM for any number of offloaded layers.

The estimate follows where llama.cpp actually puts things (llama-model.cpp, load_tensors): with
n_gpu_layers = k, the *last* k-1 repeating blocks and the output layer go to the GPU (k = 1 offloads only
the output layer; k = n_layer + 1 offloads everything); the token embeddings always stay in RAM. Each
block's KV cache lives with the block. Compute buffers are the peak of three stages of the graph, measured
against llama.cpp's own reports: logits (n_ubatch x n_vocab floats), attention (without flash attention
the n_ubatch x n_ctx x n_head score matrix) and the rest. On the CPU, llama.cpp also keeps a repacked copy
of Q4_0/Q4_K/IQ4_NL weights for its faster kernels.
"""

from __future__ import annotations

import logging
import struct
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, TypeVar

from app.core.errors import ModelOutOfMemoryError

if TYPE_CHECKING:  # annotations only: the Hub's file list (and so `hearth --help`) imports this module
    from app.core.gguf_info import ModelInfo
    from app.core.hardware import HardwareInfo

log = logging.getLogger("hearth.hardware")
T = TypeVar("T")

MIB = 1024 * 1024
# Per process, outside llama.cpp's buffers: the CUDA context (527 MiB on an H100 by itself) plus cuBLAS and
# kernel modules. Measured 606-611 MiB on an H100 for every model, context and layer count tried
# (tests/benchmarks/gpu_verify.py, fresh process, NVML); smaller GPUs need less, so this errs on the safe side.
GPU_OVERHEAD = 640 * MIB
SAFETY = 0.95  # use at most this share of the free VRAM (other programs allocate too)
KV_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}  # bytes per cached K or V element
REPACKED_TYPES = {"Q4_0", "Q4_K", "IQ4_NL"}  # x86/ARM CPU kernels keep an interleaved copy of these


class Fit(StrEnum):
    """How a model fits this machine, as the picker and the Hub quant list show it."""

    FITS = "fits"  # fits fully: all layers on the GPU, or in free RAM on a CPU-only machine
    PARTLY = "partly"  # fits partly: some layers on the GPU, the rest in RAM
    TIGHT = "tight"  # only after other programs give memory back
    TOO_BIG = "too_big"  # does not fit

    @property
    def label(self) -> str:
        return {"fits": "fits fully", "partly": "fits partly", "tight": "tight", "too_big": "does not fit"}[self]


@dataclass(frozen=True)
class Estimate:
    n_gpu_layers: int
    gpu_bytes: int  # weights + KV + compute on the GPU (+ per-process overhead when anything is offloaded)
    cpu_bytes: int  # weights (mapped + repacked) + KV + compute in RAM
    weights_gpu: int
    weights_cpu: int
    kv_gpu: int
    kv_cpu: int
    compute_gpu: int
    compute_cpu: int

    @property
    def total(self) -> int:
        return self.gpu_bytes + self.cpu_bytes


def kv_cells(n_ctx: int) -> int:
    """llama.cpp sizes the KV cache in multiples of 256 cells."""
    return -(-max(n_ctx, 1) // 256) * 256


def kv_bytes_per_layer(info: ModelInfo, n_ctx: int, kv_type: str = "f16") -> int:
    heads = info.head_count_kv or info.head_count or 1
    k = info.key_length or (info.embedding_length or 0) // max(info.head_count or 1, 1)
    v = info.value_length or k
    return int(kv_cells(n_ctx) * heads * (k + v) * KV_BYTES[kv_type])


def compute_bytes(
    info: ModelInfo,
    n_ctx: int,
    n_ubatch: int = 512,
    flash_attention: bool = False,
    with_logits: bool = True,
    with_attention: bool = True,
) -> int:
    """Peak graph memory for one device (calibrated on llama.cpp's CPU reports; GPU verified separately)."""
    embd = info.embedding_length or 0
    heads = info.head_count or 1
    kv_dim = (info.head_count_kv or heads) * (info.key_length or embd // heads)
    cells = kv_cells(n_ctx)
    logits = n_ubatch * (info.vocab_size or 0) * 4 + 2 * n_ubatch * embd * 4 if with_logits else 0
    attention = 0
    if with_attention:
        scores = 0 if flash_attention else n_ubatch * cells * heads * 4
        attention = scores + 2 * cells * kv_dim * 4 * (not flash_attention) + int(5.25 * n_ubatch * embd * 4)
    feed_forward = 2 * n_ubatch * (info.feed_forward_length or 4 * embd) * 4 + 2 * n_ubatch * embd * 4
    return max(logits, attention, feed_forward if with_attention else 0)


def _output_bytes(info: ModelInfo, on_gpu: bool) -> int:
    weights = info.non_layer_bytes
    output = sum(size for name, size in weights.items() if name.startswith(("output.", "output_norm.")))
    if "output.weight" not in weights and on_gpu:  # tied embeddings: the GPU gets its own copy of token_embd
        output += weights.get("token_embd.weight", 0)
    return output


def _repacked(info: ModelInfo, cpu_layers: set[int]) -> int:
    """Bytes of the extra CPU copy llama.cpp makes of repackable weights that stay in RAM."""
    if not info.tensors:  # a slim info from the library index: assume the usual Q4_K share of the weights
        share = 0.72 if info.file_type in ("Q4_K_M", "Q4_K_S", "Q4_0", "IQ4_NL") else 0.0
        layer_bytes = sum(size for index, size in enumerate(info.layer_bytes) if index in cpu_layers)
        return int(layer_bytes * share)
    total = 0
    for tensor in info.tensors:
        if tensor.ggml_type in REPACKED_TYPES and len(tensor.shape) == 2 and tensor.layer in cpu_layers:
            total += tensor.n_bytes
    return total


def estimate(
    info: ModelInfo,
    n_gpu_layers: int,
    n_ctx: int,
    kv_type: str = "f16",
    *,
    n_ubatch: int = 512,
    flash_attention: bool | None = None,
    repack: bool = True,
) -> Estimate:
    """Memory for a load with these settings (n_gpu_layers -1 = all). flash_attention None is Hearth's
    auto: llama.cpp turns it on for a GPU that supports it, and Hearth keeps it off on the CPU."""
    blocks = info.block_count or len(info.layer_bytes)
    k = blocks + 1 if n_gpu_layers < 0 else min(n_gpu_layers, blocks + 1)
    first_gpu = blocks + 1 - k  # blocks with index >= first_gpu are offloaded; index `blocks` is the output
    gpu_layers = {i for i in range(blocks) if i >= first_gpu}
    cpu_layers = set(range(blocks)) - gpu_layers
    layer_bytes = list(info.layer_bytes) + [0] * (blocks - len(info.layer_bytes))
    output_on_gpu = k >= 1
    output = _output_bytes(info, output_on_gpu)
    rest = sum(info.non_layer_bytes.values()) - sum(
        size for name, size in info.non_layer_bytes.items() if name.startswith(("output.", "output_norm."))
    )
    weights_gpu = sum(layer_bytes[i] for i in gpu_layers) + (output if output_on_gpu else 0)
    weights_cpu = sum(layer_bytes[i] for i in cpu_layers) + rest + (0 if output_on_gpu else output)
    if repack:
        weights_cpu += _repacked(info, cpu_layers)
    per_layer_kv = kv_bytes_per_layer(info, n_ctx, kv_type)
    kv_gpu, kv_cpu = per_layer_kv * len(gpu_layers), per_layer_kv * len(cpu_layers)
    gpu_flash = True if flash_attention is None else flash_attention
    cpu_flash = bool(flash_attention) if k else False
    compute_gpu = compute_bytes(info, n_ctx, n_ubatch, gpu_flash, output_on_gpu, bool(gpu_layers)) if k else 0
    compute_cpu = compute_bytes(info, n_ctx, n_ubatch, cpu_flash, not output_on_gpu, bool(cpu_layers))
    gpu = weights_gpu + kv_gpu + compute_gpu + (GPU_OVERHEAD if k else 0)
    cpu = weights_cpu + kv_cpu + compute_cpu
    return Estimate(k, gpu, cpu, weights_gpu, weights_cpu, kv_gpu, kv_cpu, compute_gpu, compute_cpu)


@dataclass(frozen=True)
class DeviceShare:
    """One device's part of a model split across devices: its layers and the memory they take there."""

    name: str  # "CPU", "CUDA0", "RPC 10.0.0.2:50052" ...
    free_bytes: int  # the free memory the split was proportioned on
    layers: tuple[int, ...]  # block indexes; the index block_count stands for the output layer
    weights: int
    kv: int
    compute: int

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.compute

    @property
    def fits(self) -> bool:
        return self.total <= int(self.free_bytes * SAFETY)


@dataclass(frozen=True)
class SplitPlan:
    """Where each layer goes when a model is split across the local CPU and offload devices (local GPUs,
    RPC workers), and what llama.cpp must be told for that: n_gpu_layers and tensor_split."""

    n_gpu_layers: int
    tensor_split: tuple[float, ...]  # one weight per offload device, in the order of the devices
    shares: tuple[DeviceShare, ...]  # the CPU first (when it takes part), then every offload device

    @property
    def fits(self) -> bool:
        return all(share.fits for share in self.shares)


def _f32(value: float) -> float:
    """value rounded to a C float: the split points must come out exactly as llama.cpp computes them."""
    return struct.unpack("f", struct.pack("f", value))[0]


def _assign_layers(n_layers: int, n_gpu_layers: int, weights: Sequence[float]) -> list[int]:
    """Device index per layer (-1 = CPU), as llama.cpp's load_tensors assigns them: the first
    n_layers - n_gpu_layers stay on the CPU, the rest go to the devices by the cumulative, normalised
    tensor_split (in float arithmetic, as llama.cpp does it)."""
    cumulative, total = [], 0.0
    for weight in weights:
        total = _f32(total + _f32(weight))
        cumulative.append(total)
    points = [_f32(value / total) for value in cumulative] if total > 0 else [1.0] * len(weights)
    start = max(n_layers - n_gpu_layers, 0)
    active = min(n_gpu_layers, n_layers) if weights else 0
    devices = []
    for layer in range(n_layers):
        if layer < start or layer - start >= active:
            devices.append(-1)
        else:
            devices.append(min(bisect_right(points, _f32(_f32(layer - start) / active)), len(weights) - 1))
    return devices


def split_by_memory(
    info: ModelInfo,
    devices: Sequence[tuple[str, int]],
    n_ctx: int,
    kv_type: str = "f16",
    *,
    cpu_free: int | None = None,
    n_ubatch: int = 512,
    flash_attention: bool | None = None,
) -> SplitPlan:
    """Split the model's layers (blocks and the output layer) over the offload `devices` ((name, free
    bytes), in order) and, when cpu_free is given (no local GPU: the CPU is the local device), the local
    CPU, each in proportion to its free memory. The CPU keeps the first layers, as llama.cpp does."""
    blocks = info.block_count or len(info.layer_bytes)
    n_layers = blocks + 1
    frees = [max(free, 0) for _, free in devices]
    everyone = sum(frees) + (max(cpu_free, 0) if cpu_free is not None else 0)
    if not devices:
        cpu_layers = n_layers
    elif cpu_free is None or everyone <= 0:
        cpu_layers = 0
    else:
        cpu_layers = min(n_layers, round(n_layers * max(cpu_free, 0) / everyone))
    n_gpu = n_layers - cpu_layers
    # tensor_split in MiB: byte counts are beyond a float's exact range and only the proportions matter.
    weights = tuple(float(free // MIB) if everyone > 0 else 1.0 for free in frees)
    placed = _assign_layers(n_layers, n_gpu, weights)
    layer_bytes = list(info.layer_bytes) + [0] * (blocks - len(info.layer_bytes))
    per_layer_kv = kv_bytes_per_layer(info, n_ctx, kv_type)
    output_names = ("output.", "output_norm.")
    rest = sum(size for name, size in info.non_layer_bytes.items() if not name.startswith(output_names))
    shares = []
    participants = [("CPU", cpu_free or 0, -1)] if cpu_free is not None or not devices else []
    participants += [(name, free, index) for index, (name, free) in enumerate(devices)]
    for name, free, index in participants:
        layers = tuple(layer for layer, device in enumerate(placed) if device == index)
        block_set = {layer for layer in layers if layer < blocks}
        has_output = blocks in layers
        on_cpu = index == -1
        weights_here = sum(layer_bytes[i] for i in block_set)
        weights_here += _output_bytes(info, not on_cpu) if has_output else 0
        if on_cpu:
            weights_here += rest + _repacked(info, block_set)
        flash = (True if flash_attention is None else flash_attention) if not on_cpu else bool(flash_attention)
        compute = compute_bytes(info, n_ctx, n_ubatch, flash, has_output, bool(block_set)) if layers or on_cpu else 0
        shares.append(DeviceShare(name, free, layers, weights_here, per_layer_kv * len(block_set), compute))
    return SplitPlan(n_gpu, weights, tuple(shares))


def max_gpu_layers(
    info: ModelInfo, free_vram: int, n_ctx: int, kv_type: str = "f16", *, flash_attention: bool | None = None
) -> int:
    """The most layers (0 .. n_layer + 1) whose GPU share fits in SAFETY x free_vram."""
    budget = int(free_vram * SAFETY)
    blocks = info.block_count or len(info.layer_bytes)
    best = 0
    for k in range(1, blocks + 2):
        if estimate(info, k, n_ctx, kv_type, flash_attention=flash_attention).gpu_bytes <= budget:
            best = k
        else:
            break
    return best


def auto_gpu_layers(
    info: ModelInfo, hardware: HardwareInfo, n_ctx: int, kv_type: str = "f16", *, flash_attention: bool | None = None
) -> int:
    """What "auto" GPU layers means: as many as fit the best GPU, 0 without a usable GPU backend."""
    if not hardware.has_gpu:
        return 0
    best_gpu = max(hardware.gpus, key=lambda g: g.free_bytes)
    return max_gpu_layers(info, best_gpu.free_bytes, n_ctx, kv_type, flash_attention=flash_attention)


def model_fit(info: ModelInfo, hardware: HardwareInfo, n_ctx: int, kv_type: str = "f16") -> tuple[Fit, Estimate]:
    """Fit of a downloaded model with the layers "auto" would offload."""
    layers = auto_gpu_layers(info, hardware, n_ctx, kv_type)
    est = estimate(info, layers, n_ctx, kv_type)
    return classify(est, info.block_count or 0, hardware), est


def classify(est: Estimate, blocks: int, hardware: HardwareInfo) -> Fit:
    """Fit of an estimate: in free RAM (fully or partly offloaded), tight, or too big."""
    if est.cpu_bytes <= hardware.available_ram:
        if est.n_gpu_layers and est.n_gpu_layers < blocks + 1:
            return Fit.PARTLY
        return Fit.FITS
    if est.cpu_bytes <= int(hardware.total_ram * 0.9):
        return Fit.TIGHT
    return Fit.TOO_BIG


def fit_from_size(size_bytes: int, hardware: HardwareInfo, n_ctx: int = 4096) -> Fit:
    """Fit of a file not downloaded yet (Hub lists): weights ~ size; KV and compute from a typical model of
    that size (about 1.5 % of the weights per 1k context, at least 256 MiB)."""
    extra = max(256 * MIB, int(size_bytes * 0.015 * n_ctx / 1024)) + 128 * MIB
    need = size_bytes + extra
    if hardware.has_gpu:
        vram = int(max(g.free_bytes for g in hardware.gpus) * SAFETY) - GPU_OVERHEAD
        if need <= vram:
            return Fit.FITS
        if need - max(vram, 0) <= hardware.available_ram:
            return Fit.PARTLY
    elif need <= hardware.available_ram:
        return Fit.FITS
    if need <= int(hardware.total_ram * 0.9) + (hardware.vram_total if hardware.has_gpu else 0):
        return Fit.TIGHT
    return Fit.TOO_BIG


def suggest_layers_after_oom(
    info: ModelInfo, hardware: HardwareInfo, failed_layers: int, n_ctx: int, kv_type: str = "f16"
) -> int:
    """After an out-of-memory load: the estimator's answer, and in any case fewer layers than failed."""
    blocks = info.block_count or 0
    failed = blocks + 1 if failed_layers < 0 else failed_layers
    estimated = auto_gpu_layers(info, hardware, n_ctx, kv_type) if hardware.has_gpu else 0
    return max(0, min(estimated, failed - max(1, failed // 4)))


def load_with_oom_retry(
    load: Callable[[int], T], layers: int, suggest: Callable[[int], int], *, retry: bool = True, attempts: int = 4
) -> tuple[T, int]:
    """Call load(layers); on ModelOutOfMemoryError retry with fewer layers (the estimator's suggestion, and
    at least a quarter fewer each time, down to the CPU), at most `attempts` loads in all.

    Returns (result, layers used). Without retry, the error is raised at once with the suggested layer
    count in its message and in `.suggested_gpu_layers`.
    """
    current = layers
    for attempt in range(attempts):
        try:
            return load(current), current
        except ModelOutOfMemoryError as exc:
            if current == 0 or attempt == attempts - 1:
                raise
            ceiling = current if current >= 0 else 1 << 30
            smaller = max(0, min(suggest(current), ceiling - max(1, ceiling // 4)))
            if attempt == attempts - 2:
                smaller = 0  # the last try: all on the CPU
            if not retry:
                raise ModelOutOfMemoryError(f"{exc}; try {smaller} GPU layers", smaller) from None
            log.warning("out of memory with %s GPU layers; retrying with %s", current, smaller)
            current = smaller
    raise AssertionError("unreachable")
