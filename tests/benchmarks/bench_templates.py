"""Benchmark: rendering a published chat template in the sandbox worker vs in this process.

Baseline: before issue 16 templates rendered in-process (template_sandbox.render_here, the same limited
Jinja environment without the worker). The worker adds a process round trip per render; target: a normal
render stays in the low milliseconds after the first (which starts the worker).
Run: python tests/benchmarks/bench_templates.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from app.core import template_sandbox

TEMPLATES = ROOT / "tests" / "data" / "chat-templates"


def conversation(turns: int) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": "You are helpful."}]
    for i in range(turns):
        messages.append({"role": "user", "content": f"Question {i}: " + "words " * 40})
        messages.append({"role": "assistant", "content": f"Answer {i}: " + "text " * 80})
    messages.append({"role": "user", "content": "And now?"})
    return messages


def median_ms(fn, repeat: int = 30) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> None:
    template_sandbox.shutdown()
    source = (TEMPLATES / "llama-3.1.jinja").read_text()
    started = time.perf_counter()
    template_sandbox.render_jinja(source, conversation(1), bos_token="<s>")
    first = (time.perf_counter() - started) * 1000
    print(f"first render (starts the worker): {first:.0f} ms")
    print(f"{'template':<28} {'turns':>5} {'in-process (baseline)':>22} {'worker':>9}")
    for name in ("chatml.jinja", "llama-3.1.jinja", "gemma-3.jinja", "mistral-instruct-v0.1.jinja"):
        source = (TEMPLATES / name).read_text()
        for turns in (1, 20):
            messages = conversation(turns)
            variables = {
                "messages": messages,
                "bos_token": "<s>",
                "eos_token": "</s>",
                "add_generation_prompt": True,
                "tools": None,
            }
            here = median_ms(lambda s=source, v=variables: template_sandbox.render_here(s, v))
            worker = median_ms(
                lambda s=source, m=messages: template_sandbox.render_jinja(s, m, bos_token="<s>", eos_token="</s>")
            )
            print(f"{name:<28} {turns:>5} {here:>19.2f} ms {worker:>6.2f} ms")
    peak = template_sandbox.worker_peak_bytes()
    print(f"worker peak memory: {peak / 2**20:.0f} MiB" if peak else "worker peak memory: unknown")


if __name__ == "__main__":
    main()
