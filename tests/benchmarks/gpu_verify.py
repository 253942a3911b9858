"""GPU verification (issue #8): the fit estimate against real VRAM use, and Hearth's speed against llama-bench.

For each model size (generated with random weights, quantized to Q4_K_M) and context size: the VRAM the
estimator predicts for all layers and for half of them, against what NVML reports the process using after
the load (and llama.cpp's own buffer sizes from its log); then generation tok/s at 0, half and all layers
through Hearth's engine against llama.cpp's `llama-bench -ngl` on the same file and thread count.
Targets: estimate within 10 % of actual; Hearth >= 97 % of llama-bench.

Needs a CUDA build of llama.cpp (LLAMA_CPP_LIB_PATH pointing at its shared libraries) and llama-bench;
tests/benchmarks/gpu_verify.sh builds both from the llama-cpp-python sdist on a GPU machine and runs this.
`--cpu-only --shapes tiny` rehearses the whole script on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app.core.native import preload_llama_libraries

print("# preloaded:", preload_llama_libraries(), flush=True)  # before numpy: see app/core/native.py

from app.core.engine import GenerationStats, PromptRequest
from app.core.fit import MIB, estimate
from app.core.gguf_info import inspect
from app.core.llama_engine import LlamaCppEngine
from app.core.load_config import LoadConfig
from app.core.sampling import SamplingSettings
from app.core.tiny_model import TinyModelSpec
from tests.benchmarks.bench_models import SHAPES, bench_model

SHAPES.setdefault(
    "tiny", TinyModelSpec(n_embd=256, n_layer=4, n_head=8, n_head_kv=4, n_ff=512, f16=True, filler_tokens=4000)
)
PROMPT = "The history of the city begins with a small settlement on the river, where"
GEN = 128


class BufferLog(logging.Handler):
    """Collects llama.cpp's "<device> <kind> buffer size = X MiB" lines."""

    pattern = re.compile(r"(\S+) (model|KV|compute|output) buffer size = +([\d.]+) MiB")

    def __init__(self) -> None:
        super().__init__()
        self.sizes: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        match = self.pattern.search(record.getMessage())
        if match:
            key = f"{match.group(1)} {match.group(2)}"
            self.sizes[key] = self.sizes.get(key, 0.0) + float(match.group(3))


def used_vram() -> int:
    import pynvml

    pynvml.nvmlInit()
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
    finally:
        pynvml.nvmlShutdown()


def measure_load(path: Path, n_gpu_layers: int, n_ctx: int, threads: int, cpu_only: bool) -> dict:
    """One load in a fresh process, so the VRAM delta includes the CUDA context as a user's load does."""
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--measure",
            str(path),
            str(n_gpu_layers),
            str(n_ctx),
            str(threads),
            str(int(cpu_only)),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def _measure_here(path: Path, n_gpu_layers: int, n_ctx: int, threads: int, cpu_only: bool) -> dict:
    info = inspect(path)
    log = BufferLog()
    logging.getLogger("hearth.llama").addHandler(log)
    logging.getLogger("hearth.llama").setLevel(logging.DEBUG)
    before = 0 if cpu_only else used_vram()
    engine = LlamaCppEngine()
    engine.load(path, LoadConfig(n_gpu_layers=n_gpu_layers, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads))
    list(engine.generate(PromptRequest(PROMPT, sampling=SamplingSettings(max_tokens=4, seed=1))))
    after = 0 if cpu_only else used_vram()
    # A long prompt takes the batched matrix-multiply paths (cuBLAS workspace, larger graphs): what a real
    # first question costs on top of the load.
    repeats = 1
    while engine.count_tokens(" ".join([PROMPT] * (repeats * 2))) < n_ctx // 2:
        repeats *= 2
    long_prompt = " ".join([PROMPT] * repeats)
    list(engine.generate(PromptRequest(long_prompt, sampling=SamplingSettings(max_tokens=4, seed=1))))
    after_long = 0 if cpu_only else used_vram()
    flash = engine.model.config.flash_attention
    engine.unload()
    logging.getLogger("hearth.llama").removeHandler(log)
    est = estimate(info, n_gpu_layers, n_ctx, flash_attention=flash)
    gpu_log = sum(v for k, v in log.sizes.items() if k.startswith(("CUDA0", "Vulkan0", "Metal")))
    return {
        "model": path.name,
        "n_ctx": n_ctx,
        "n_gpu_layers": n_gpu_layers,
        "estimate_gpu_mib": round(est.gpu_bytes / MIB),
        "actual_gpu_mib": round((after - before) / MIB),
        "actual_long_prompt_gpu_mib": round((after_long - before) / MIB),
        "llama_gpu_buffers_mib": round(gpu_log),
        "estimate_buffers_mib": round((est.gpu_bytes - _overhead(est)) / MIB),
        "buffers": {k: round(v, 1) for k, v in sorted(log.sizes.items())},
    }


def _overhead(est) -> int:
    from app.core.fit import GPU_OVERHEAD

    return GPU_OVERHEAD if est.n_gpu_layers else 0


def hearth_tps(path: Path, n_gpu_layers: int, threads: int) -> float:
    engine = LlamaCppEngine()
    engine.load(path, LoadConfig(n_gpu_layers=n_gpu_layers, n_ctx=1024, n_threads=threads, n_threads_batch=threads))
    info = engine.model.info
    ban = tuple((t, -100.0) for t in {info.eos_token_id, info.eot_token_id} if t is not None)
    sampling = SamplingSettings(temperature=0.0, repeat_penalty=1.0, min_p=0.0, max_tokens=GEN, logit_bias=ban)
    runs = []
    for _ in range(3):
        stats = [e for e in engine.generate(PromptRequest(PROMPT, sampling=sampling)) if isinstance(e, GenerationStats)]
        runs.append(stats[0].gen_tps)
    engine.unload()
    return sorted(runs)[1]


def bench_tps(binary: Path, path: Path, n_gpu_layers: int, threads: int) -> float | None:
    if not binary.exists():
        return None
    flash = "0" if n_gpu_layers == 0 else "auto"  # as Hearth: flash attention off on the CPU, auto on a GPU
    out = subprocess.run(
        [
            str(binary),
            "-m",
            str(path),
            "-t",
            str(threads),
            "-ngl",
            str(n_gpu_layers),
            "-p",
            "0",
            "-n",
            str(GEN),
            "-r",
            "3",
            "-fa",
            flash,
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(json.loads(out)[0]["avg_ts"])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--measure":  # the child of measure_load
        path, layers, n_ctx, threads, cpu_only = sys.argv[2:7]
        print(json.dumps(_measure_here(Path(path), int(layers), int(n_ctx), int(threads), cpu_only == "1")))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["1.1b", "3b"])
    parser.add_argument("--contexts", nargs="+", type=int, default=[2048, 8192])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--llama-bench", type=Path, default=Path("llama-bench"))
    parser.add_argument("--cpu-only", action="store_true", help="rehearsal without a GPU (no VRAM figures)")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    parser.add_argument("--skip-speed", action="store_true", help="only the VRAM estimate")
    parser.add_argument("--skip-vram", action="store_true", help="only the speed comparison")
    args = parser.parse_args()
    from app.core.hardware import detect_hardware

    hardware = detect_hardware()
    print("# hardware:", json.dumps(hardware.to_dict()), flush=True)
    results: dict[str, list] = {"vram": [], "speed": [], "hardware": [hardware.to_dict()]}
    for shape in args.shapes:
        started = time.perf_counter()
        path = bench_model(shape)
        print(f"# {shape}: {path.name} ready in {time.perf_counter() - started:.0f} s", flush=True)
        blocks = inspect(path).block_count
        layer_counts = [] if args.skip_vram else [0] if args.cpu_only else [blocks + 1, (blocks + 1) // 2]
        for n_ctx in args.contexts:
            for layers in layer_counts:
                row = measure_load(path, layers, n_ctx, args.threads, args.cpu_only)
                results["vram"].append(row)
                error = (row["estimate_gpu_mib"] / row["actual_gpu_mib"] - 1) * 100 if row["actual_gpu_mib"] else 0
                print(
                    f"vram {shape} ctx {n_ctx} ngl {layers}: estimate {row['estimate_gpu_mib']} MiB, actual "
                    f"{row['actual_gpu_mib']} MiB ({error:+.1f} %), llama.cpp buffers {row['llama_gpu_buffers_mib']} "
                    f"MiB vs estimated {row['estimate_buffers_mib']} MiB; "
                    f"after a long prompt {row['actual_long_prompt_gpu_mib']} "
                    f"MiB; not in buffers {row['actual_long_prompt_gpu_mib'] - row['llama_gpu_buffers_mib']} MiB; "
                    f"{row['buffers']}",
                    flush=True,
                )
        for layers in (
            [] if args.skip_speed else sorted({0, (blocks + 1) // 2, blocks + 1} if not args.cpu_only else {0})
        ):
            ours = hearth_tps(path, layers, args.threads)
            theirs = bench_tps(args.llama_bench, path, layers, args.threads)
            ratio = f"{ours / theirs * 100:.1f} %" if theirs else "n/a"
            results["speed"].append(
                {"model": path.name, "ngl": layers, "hearth_tps": round(ours, 2), "llama_bench_tps": theirs}
            )
            print(f"speed {shape} ngl {layers}: Hearth {ours:.2f} t/s, llama-bench {theirs} t/s ({ratio})", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
