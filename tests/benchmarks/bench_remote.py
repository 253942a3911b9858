"""Benchmark: a reply from a model on an OpenAI-compatible server through Hearth, against the same server called
directly with the official `openai` client.

The server is llama-cpp-python's own (`python -m llama_cpp.server`) on 127.0.0.1, serving the generated
1.1B-shape Q4_K_M (tests/benchmarks/bench_models.py) or, with --tiny, the tiny test model. Both clients send
the same request (greedy, the same sampling fields, end-of-text and byte tokens banned so every reply has
exactly --gen word-piece tokens), alternating, --runs times each; medians are compared.

Rows:
  openai client (direct)   time to first non-empty content chunk and tokens/s after it, measured around
                           `client.chat.completions.create(stream=True)`
  Hearth, as seen          the same, measured where a Hearth client receives ReplyChunk events from the host
                           (HTTP thread -> host stream thread -> client), i.e. what the window or CLI gets
  Hearth, as reported      the GenerationStats Hearth stores with the reply (measured on its HTTP thread)
Target: Hearth within 3 % of the direct client on both figures.

Run: python tests/benchmarks/bench_remote.py [--tiny] [--runs 5] [--gen 128] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app.core.host import EngineHost
from app.core.messages import ChatMessage
from app.core.remote_backend import request_body
from app.core.remote_catalog import RemoteCatalog
from app.core.remote_servers import ServerConfig
from app.core.reply import ReplyChunk, ReplyDone, ReplyRequest
from app.core.sampling import SamplingSettings
from tests.benchmarks.bench_models import bench_model
from tests.support.openai_servers import start_llama_cpp_server

PROMPT = "The history of the city begins with a small settlement on the river, where"
ALIAS = "bench"


def banned_tokens(model: Path) -> tuple[tuple[int, float], ...]:
    """End-of-text tokens (the reply runs to --gen) and the 256 byte tokens: llama-cpp-python's server holds
    back streamed text while it ends in an incomplete UTF-8 sequence, which random byte tokens make often."""
    from app.core.gguf_info import inspect

    info = inspect(model)
    ends = {t for t in (info.eos_token_id, info.eot_token_id) if t is not None}
    return tuple((token, -100.0) for token in sorted(ends | set(range(3, 259))))


def direct(client: object, body: dict, gen: int) -> tuple[float, float, int]:
    """(ttft ms, tok/s, content chunks) through the openai client."""
    llama_fields = {k: body[k] for k in ("top_k", "min_p", "typical_p", "repeat_penalty", "repeat_last_n")}
    started = time.perf_counter()
    first = last = 0.0
    chunks = 0
    stream = client.chat.completions.create(  # type: ignore[attr-defined]
        model=body["model"],
        messages=body["messages"],
        stream=True,
        stream_options=body["stream_options"],
        max_tokens=body["max_tokens"],
        temperature=body["temperature"],
        top_p=body["top_p"],
        presence_penalty=body["presence_penalty"],
        frequency_penalty=body["frequency_penalty"],
        seed=body["seed"],
        logit_bias=body["logit_bias"],
        extra_body=llama_fields,
    )
    for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content is not None:
                chunks += 1
                if choice.delta.content:
                    now = time.perf_counter()
                    first = first or now
                    last = now
    return (first - started) * 1000, (chunks - 1) / (last - first), chunks


def through_hearth(host: EngineHost, request: ReplyRequest) -> tuple[float, float, float, float, int]:
    """(ttft ms seen, tok/s seen, ttft ms reported, tok/s reported, generated tokens)."""
    job = host.client("bench").reply(request)
    started = time.perf_counter()
    first = last = 0.0
    done: ReplyDone | None = None
    for event in job.events(600):
        if isinstance(event, ReplyChunk) and event.text:
            now = time.perf_counter()
            first = first or now
            last = now
        elif isinstance(event, ReplyDone):
            done = event
    assert done is not None and done.stats is not None and done.error is None, done
    stats = done.stats
    seen_tps = (stats.generated_tokens - 1) / (last - first)
    return (first - started) * 1000, seen_tps, stats.ttft_ms, stats.gen_tps, stats.generated_tokens


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="serve the tiny test model instead of the 1.1B")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--gen", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    from openai import OpenAI

    work = Path(tempfile.mkdtemp(prefix="bench-remote-"))
    if args.tiny:
        from app.core.tiny_model import TinyModelSpec, write_tiny_model

        model = write_tiny_model(work / "tiny.gguf", TinyModelSpec(context_length=4096))
    else:
        model = bench_model("1.1b")
    server = start_llama_cpp_server(model, ALIAS, work, n_ctx=1024, threads=args.threads, timeout=300)
    host = EngineHost()
    catalog = RemoteCatalog(host)
    catalog.sync([ServerConfig("bench", server.url)])
    client = OpenAI(base_url=server.url, api_key="none", max_retries=0)
    sampling = SamplingSettings(temperature=0.0, max_tokens=args.gen, seed=1, logit_bias=banned_tokens(model))
    request = ReplyRequest((ChatMessage("user", PROMPT),), sampling, backend="bench", meta={"model": ALIAS})
    body = request_body(ALIAS, request)
    rows: dict[str, list[tuple[float, float]]] = {"direct": [], "seen": [], "reported": []}
    counts: set[tuple[str, int]] = set()  # tokens per reply, per client: the same work on both sides
    try:
        direct(client, body, args.gen)  # warm-up: the server's first request pays for lazy set-up
        through_hearth(host, request)
        for run in range(args.runs):
            order = ("direct", "hearth") if run % 2 == 0 else ("hearth", "direct")
            for which in order:
                if which == "direct":
                    ttft, tps, chunks = direct(client, body, args.gen)
                    rows["direct"].append((ttft, tps))
                    counts.add(("direct", chunks))
                else:
                    seen_ttft, seen_tps, ttft, tps, generated = through_hearth(host, request)
                    counts.add(("hearth", generated))
                    rows["seen"].append((seen_ttft, seen_tps))
                    rows["reported"].append((ttft, tps))
            d, h = rows["direct"][-1], rows["seen"][-1]
            print(
                f"run {run + 1}/{args.runs}: direct TTFT {d[0]:.1f} ms {d[1]:.2f} tok/s; "
                f"Hearth TTFT {h[0]:.1f} ms {h[1]:.2f} tok/s",
                file=sys.stderr,
            )
    finally:
        host.shutdown(10)
        catalog.close()
        server.stop()
    base_ttft = statistics.median(r[0] for r in rows["direct"])
    base_tps = statistics.median(r[1] for r in rows["direct"])
    name = "tiny test model" if args.tiny else "1.1B-shape Q4_K_M"
    print(f"\nRemote reply, {name} on llama-cpp-python's server (127.0.0.1, {args.threads} threads), ")
    print(f"{args.gen} tokens, median of {args.runs} runs each (measured under load: the machine is shared)")
    print(f"tokens per reply: {', '.join(f'{who} {n}' for who, n in sorted(counts))}\n")
    print(f"{'client':<24} {'TTFT ms':>9} {'vs direct':>10} {'tok/s':>8} {'vs direct':>10}")
    labels = {"direct": "openai client (direct)", "seen": "Hearth, as seen", "reported": "Hearth, as reported"}
    for key, label in labels.items():
        ttft = statistics.median(r[0] for r in rows[key])
        tps = statistics.median(r[1] for r in rows[key])
        print(f"{label:<24} {ttft:>9.1f} {ttft / base_ttft:>9.1%} {tps:>8.2f} {tps / base_tps:>9.1%}")
    # Runs of the two clients side by side in time see the same load: the median of their ratios is steadier
    # than the ratio of medians on a shared machine.
    pairs = list(zip(rows["seen"], rows["direct"]))
    ttft_ratio = statistics.median(h[0] / d[0] for h, d in pairs)
    tps_ratio = statistics.median(h[1] / d[1] for h, d in pairs)
    print(f"\nHearth (as seen) / direct, median of paired runs: TTFT {ttft_ratio:.1%}, tok/s {tps_ratio:.1%}")
    print("Target: Hearth within 3 % of the direct client (TTFT at most 103 %, tok/s at least 97 %).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
