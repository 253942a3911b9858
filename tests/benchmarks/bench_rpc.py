"""Local load vs the same model split over 2 `hearth rpc-worker` processes on 127.0.0.1: load time and tok/s.

Baseline: the same model loaded locally, by the same llama.cpp build (RPC on, from tests/support/llama_tools.py)
in the same kind of engine child process, so the only difference is the split. On one machine the workers
share its cores with the client: this measures RPC's overhead (every token crosses two sockets per worker),
not a speed-up, which needs workers with hardware of their own.

    python tests/benchmarks/bench_rpc.py [--model FILE] [--prompt 256] [--gen 128] [--threads 2] [--runs 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app.core.engine import GenerationStats, PromptRequest
from app.core.isolated_engine import IsolatedEngine
from app.core.load_config import LoadConfig
from app.core.sampling import SamplingSettings
from tests.benchmarks.bench_models import bench_model
from tests.support import llama_tools
from tests.support.rpc_workers import start_worker

WORDS = "the quick brown fox jumps over the lazy dog and "


def measure(model: Path, config: LoadConfig, prompt: int, gen: int) -> dict[str, float]:
    engine = IsolatedEngine()
    started = time.perf_counter()
    loaded = engine.load(model, config)
    load_s = time.perf_counter() - started
    try:
        info = loaded.info
        ban = tuple((t, -100.0) for t in {info.eos_token_id, info.eot_token_id} if t is not None)
        text = " ".join((WORDS * (prompt // 4 + 8)).split(" ")[: prompt * 2])
        tokens = engine.tokenize(text)
        while len(tokens) > prompt:  # trim whole words until the prompt has at most `prompt` tokens
            text = text.rsplit(" ", 1)[0]
            tokens = engine.tokenize(text)
        sampling = SamplingSettings(max_tokens=gen, seed=1, logit_bias=ban)
        events = list(engine.generate(PromptRequest(text, sampling=sampling)))
        stats = next(e for e in events if isinstance(e, GenerationStats))
        if stats.finish_reason != "length":
            raise SystemExit(f"generation ended with {stats.finish_reason}: {stats.error}")
        return {
            "load_s": load_s,
            "engine_load_ms": loaded.load_ms,
            "prompt_tokens": stats.evaluated_tokens,
            "prompt_tps": stats.prompt_tps,
            "gen_tps": stats.gen_tps,
            "placement": "; ".join(engine.placement) or "all on this machine",
        }
    finally:
        engine.unload()


def median_of(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = ("load_s", "engine_load_ms", "prompt_tps", "gen_tps")
    result = {key: statistics.median(row[key] for row in rows) for key in keys}
    result["prompt_tokens"] = rows[0]["prompt_tokens"]
    result["placement"] = rows[0]["placement"]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="GGUF file (default: the generated 1.1B Q4_K_M)")
    parser.add_argument("--prompt", type=int, default=256)
    parser.add_argument("--gen", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2, help="client threads (generation and prompt)")
    parser.add_argument("--worker-threads", type=int, default=1, help="CPU threads of each worker")
    parser.add_argument("--runs", type=int, default=2, help="loads per setup (the median is shown)")
    args = parser.parse_args()

    lib_dir = llama_tools.lib_dir()
    os.environ["LLAMA_CPP_LIB_PATH"] = str(lib_dir)  # for the engine children; this process loads nothing
    model = args.model or bench_model("1.1b")
    base = LoadConfig(n_ctx=1024, n_threads=args.threads, n_threads_batch=args.threads)
    home = Path(tempfile.mkdtemp(prefix="bench-rpc-"))
    workers = [
        start_worker(lib_dir, home / "a", threads=args.worker_threads),
        start_worker(lib_dir, home / "b", threads=args.worker_threads),
    ]
    try:
        endpoints = tuple(worker.endpoint for worker in workers)
        local = median_of([measure(model, base, args.prompt, args.gen) for _ in range(args.runs)])
        split_config = base.with_changes(rpc_workers=endpoints)
        split = median_of([measure(model, split_config, args.prompt, args.gen) for _ in range(args.runs)])
    finally:
        for worker in workers:
            worker.stop()

    print(
        f"model: {model.name}; prompt {local['prompt_tokens']:.0f} tokens, {args.gen} generated; "
        f"client threads {args.threads}, worker threads {args.worker_threads}; median of {args.runs} loads each"
    )
    print(f"split: {split['placement']}")
    print()
    print("| setup | load, wall (s) | load, llama.cpp (ms) | prompt tok/s | generation tok/s | vs local |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, row in (("local (baseline)", local), ("CPU + 2 RPC workers on 127.0.0.1", split)):
        ratio = row["gen_tps"] / local["gen_tps"] if local["gen_tps"] else 0.0
        print(
            f"| {name} | {row['load_s']:.2f} | {row['engine_load_ms']:.0f} | {row['prompt_tps']:.1f} | "
            f"{row['gen_tps']:.2f} | {ratio:.0%} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
