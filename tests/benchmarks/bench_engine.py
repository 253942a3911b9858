"""Benchmark: Hearth's engine against llama.cpp itself, on the same Q4_K_M file and thread count.

Rows (generation of 128 tokens after a short prompt, median of --runs):
  llama-bench tg128        llama.cpp's own benchmark binary (pass --llama-bench PATH; build it from the
                           llama-cpp-python sdist's vendor/llama.cpp with -DLLAMA_BUILD_TOOLS=ON)
  low-level loop           the minimal decode loop through llama_cpp's C API (greedy sampler in C)
  Hearth engine            LlamaCppEngine.generate (what the GUI and CLI use), default sampling chain
  llama-cpp-python         Llama.create_completion(stream=True), the binding's high-level API
Baseline (issue #4, 1.1B-shape Q4_K_M, 2 threads): llama-bench 15.5 t/s; create_completion 14.65 t/s (94.5 %).
Target: Hearth >= 98 % of llama.cpp.

Also: follow-up latency over a 20-turn chat (TTFT and evaluated tokens per turn; target turn-20 TTFT <=
1.3 x turn-2) and resident memory across 10 load/unload cycles.

Run: python tests/benchmarks/bench_engine.py [--model PATH] [--threads 2] [--llama-bench PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app.core.engine import GenerationStats, PromptRequest
from app.core.llama_engine import LlamaCppEngine
from app.core.load_config import LoadConfig
from app.core.native import llama as _llama
from app.core.sampling import SamplingSettings
from tests.benchmarks.bench_models import bench_model

GEN = 128
PROMPT = "The history of the city begins with a small settlement on the river, where"


def llama_bench(binary: Path, model: Path, threads: int, runs: int) -> float:
    out = subprocess.run(
        [
            str(binary),
            "-m",
            str(model),
            "-t",
            str(threads),
            "-p",
            "0",
            "-n",
            str(GEN),
            "-r",
            str(runs),
            "-fa",
            "0",  # flash attention off, as Hearth runs on the CPU (see LlamaCppEngine._flash_attention)
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [r for r in json.loads(out) if r.get("n_gen") == GEN]
    return float(rows[0]["avg_ts"])


def low_level_loop(model: Path, threads: int) -> float:
    """The minimal C-API decode loop: what the engine would do with zero Python overhead of its own."""
    lib = _llama()
    mparams = lib.llama_model_default_params()
    handle = lib.llama_model_load_from_file(str(model).encode(), mparams)
    cparams = lib.llama_context_default_params()
    cparams.n_ctx, cparams.n_batch, cparams.n_threads, cparams.n_threads_batch = 1024, 512, threads, threads
    cparams.no_perf = True
    cparams.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_DISABLED  # as Hearth on the CPU, and llama-bench -fa 0
    ctx = lib.llama_init_from_model(handle, cparams)
    vocab = lib.llama_model_get_vocab(handle)
    data = PROMPT.encode()
    toks = (lib.llama_token * 256)()
    n = lib.llama_tokenize(vocab, data, len(data), toks, 256, True, True)
    lib.llama_decode(ctx, lib.llama_batch_get_one(toks, n))
    chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
    lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
    one = (lib.llama_token * 1)()
    first = None
    for i in range(GEN):
        one[0] = lib.llama_sampler_sample(chain, ctx, -1)
        if i == 0:
            first = time.perf_counter()
        lib.llama_decode(ctx, lib.llama_batch_get_one(one, 1))
    elapsed = time.perf_counter() - first
    lib.llama_sampler_free(chain)
    lib.llama_free(ctx)
    lib.llama_model_free(handle)
    return (GEN - 1) / elapsed


def hearth_engine(engine: LlamaCppEngine, sampling: SamplingSettings) -> float:
    stats = None
    for event in engine.generate(PromptRequest(PROMPT, sampling=sampling)):
        if isinstance(event, GenerationStats):
            stats = event
    assert stats is not None and stats.generated_tokens == GEN, stats
    return stats.gen_tps


def binding_high_level(model: Path, threads: int) -> float:
    from llama_cpp import Llama

    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        llm = Llama(
            str(model),
            n_ctx=1024,
            n_threads=threads,
            n_threads_batch=threads,
            flash_attn=False,
            verbose=False,
        )
    first = None
    count = 0
    for _ in llm.create_completion(PROMPT, max_tokens=GEN, temperature=0.0, stream=True):
        count += 1
        if first is None:
            first = time.perf_counter()
    elapsed = time.perf_counter() - first
    llm.close()
    return (count - 1) / elapsed


def speed_table(model: Path, threads: int, runs: int, bench_bin: Path | None) -> None:
    rows: list[tuple[str, float]] = []
    if bench_bin and bench_bin.exists():
        rows.append(("llama-bench tg128 (llama.cpp)", llama_bench(bench_bin, model, threads, runs)))
    rows.append(("low-level C-API loop", statistics.median(low_level_loop(model, threads) for _ in range(runs))))
    engine = LlamaCppEngine()
    engine.load(model, LoadConfig(n_ctx=1024, n_threads=threads, n_threads_batch=threads))
    info = engine.model.info
    ban_end = tuple((t, -100.0) for t in {info.eos_token_id, info.eot_token_id} if t is not None)  # exactly GEN
    greedy = SamplingSettings(temperature=0.0, repeat_penalty=1.0, max_tokens=GEN, min_p=0.0, logit_bias=ban_end)
    default = SamplingSettings(max_tokens=GEN, seed=1, logit_bias=ban_end)
    rows.append(("Hearth engine, greedy", statistics.median(hearth_engine(engine, greedy) for _ in range(runs))))
    rows.append(
        (
            "Hearth engine, default sampling",
            statistics.median(hearth_engine(engine, default) for _ in range(runs)),
        )
    )
    engine.unload()
    rows.append(
        (
            "llama-cpp-python create_completion",
            statistics.median(binding_high_level(model, threads) for _ in range(runs)),
        )
    )
    reference = rows[0][1]
    print(f"\nGeneration, {GEN} tokens, {threads} threads, {model.name}")
    print(f"{'path':<38} {'tok/s':>8} {'vs ' + rows[0][0].split()[0]:>16}")
    for name, tps in rows:
        print(f"{name:<38} {tps:>8.2f} {tps / reference * 100:>15.1f}%")


def follow_up_table(model: Path, threads: int, flash: bool | None) -> None:
    from app.core.conversation import ChatRunner
    from app.core.messages import ChatMessage

    engine = LlamaCppEngine()
    engine.load(model, LoadConfig(n_ctx=2048, n_threads=threads, n_threads_batch=threads, flash_attention=flash))
    runner = ChatRunner(engine)
    messages = [ChatMessage("system", "You are a helpful assistant.")]
    sampling = SamplingSettings(temperature=0.7, max_tokens=24, seed=5)
    print(f"\nFollow-up latency, 20 turns, same-length user messages (24-token replies), flash attention {flash}")
    print(f"{'turn':>4} {'prompt tok':>10} {'evaluated':>10} {'TTFT ms':>9} {'dropped':>8}")
    ttft: dict[int, float] = {}
    for turn in range(1, 21):
        messages.append(ChatMessage("user", f"Question {turn:02d}: tell me one more fact about rivers and towns."))
        reply, stats = "", None
        for event in runner.stream(messages, sampling, conversation="bench"):
            if isinstance(event, GenerationStats):
                stats = event
            else:
                reply += event.text
        messages.append(ChatMessage("assistant", reply))
        ttft[turn] = stats.ttft_ms
        print(
            f"{turn:>4} {stats.prompt_tokens:>10} {stats.evaluated_tokens:>10} {stats.ttft_ms:>9.1f} "
            f"{stats.dropped_messages:>8}"
        )
    engine.unload()
    print(f"turn-20 TTFT / turn-2 TTFT = {ttft[20] / ttft[2]:.2f} (target <= 1.3)")


def memory_table(model: Path) -> None:
    import psutil

    process = psutil.Process()
    engine = LlamaCppEngine()
    rss = []
    for _ in range(10):
        engine.load(model, LoadConfig(n_ctx=1024))
        list(engine.generate(PromptRequest(PROMPT, sampling=SamplingSettings(max_tokens=8, seed=1))))
        engine.unload()
        rss.append(process.memory_info().rss / 2**20)
    print("\nResident memory after each of 10 load/generate/unload cycles (MiB)")
    print(" ".join(f"{v:.0f}" for v in rss))
    print(f"cycle 10 vs cycle 1: {(rss[-1] / rss[0] - 1) * 100:+.1f} % (target within 5 %)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--llama-bench", type=Path, default=Path("/work/bench-cache/lb-build/bin/llama-bench"))
    parser.add_argument("--skip", nargs="*", default=[], choices=["speed", "followup", "memory"])
    parser.add_argument("--flash", choices=["auto", "on", "off"], default="auto", help="flash attention")
    args = parser.parse_args()
    model = args.model or bench_model("1.1b")
    if "speed" not in args.skip:
        speed_table(model, args.threads, args.runs, args.llama_bench)
    if "followup" not in args.skip:
        follow_up_table(model, args.threads, {"auto": None, "on": True, "off": False}[args.flash])
    if "memory" not in args.skip:
        memory_table(model)


if __name__ == "__main__":
    main()
