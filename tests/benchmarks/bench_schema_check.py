"""Benchmark: checking a JSON schema as the user types (syntax, JSON Schema metaschema, llama.cpp's grammar
converter), and filling the `/` picker, against a one-frame budget.

Baseline: the editor checks 250 ms after the last keystroke (CHECK_DELAY_MS); a check made on the GUI thread
must fit in one frame at 60 Hz (16.7 ms) so typing never stutters. Those that do not (large schemas, and the
first check in a process, which imports jsonschema and llama-cpp-python's grammar module) are why the editor
runs checks on the app's task pool when given one. Run: python tests/benchmarks/bench_schema_check.py
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app.core.assistants import EXTRACTION_SCHEMA
from app.core.prompt_library import Prompt, PromptLibrary
from app.core.structured import find_schema_problem

FRAME_MS = 1000 / 60


def timed(fn: Callable[[], object], repeat: int = 50) -> float:
    fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def wide_schema(properties: int) -> dict:
    return {
        "type": "object",
        "properties": {
            f"field_{i}": {"type": ["string", "integer", "null"], "maxLength": 40} for i in range(properties)
        },
        "required": [f"field_{i}" for i in range(properties)],
    }


def first_check_ms() -> float:
    code = (
        "import time, sys; sys.path.insert(0, '.'); t = time.perf_counter();"
        'from app.core.structured import find_schema_problem; find_schema_problem(\'{"type": "object"}\');'
        "print((time.perf_counter() - t) * 1000)"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True)
    return float(out.stdout.strip())


def main() -> None:
    cases = {
        "syntax error (line 3)": '{\n  "type": "object",\n  "properties": {\n',
        "metaschema error": '{"type": "object", "properties": {"a": {"type": "stringy"}}}',
        "converter refuses ({'not': ...})": '{"not": {"type": "string"}}',
        "Text to JSON built-in (valid)": json.dumps(EXTRACTION_SCHEMA, indent=2),
        "50 properties (valid)": json.dumps(wide_schema(50), indent=2),
        "500 properties (valid)": json.dumps(wide_schema(500), indent=2),
    }
    print(f"{'check':<34} {'median ms':>10} {'budget ms':>10}  verdict")
    print(
        f"{'first check in a process':<34} {first_check_ms():>10.1f} {'(once)':>10}  imports jsonschema + llama_grammar"
    )
    for name, text in cases.items():
        ms = timed(lambda text=text: find_schema_problem(text))
        print(f"{name:<34} {ms:>10.2f} {FRAME_MS:>10.1f}  {'ok' if ms <= FRAME_MS else 'OVER'}")
    with tempfile.TemporaryDirectory() as folder:
        library = PromptLibrary(Path(folder))
        for i in range(200):
            library.save(Prompt("", f"Prompt {i:03d}", f"Do {{{{thing}}}} number {i}", "a saved prompt"))
        ms = timed(library.all, repeat=10)
        verdict = "ok" if ms <= FRAME_MS else "OVER"
        print(f"{'/ picker: read 200 saved prompts':<34} {ms:>10.2f} {FRAME_MS:>10.1f}  {verdict}")
        prompts = library.all()
        ms = timed(lambda: [p for p in prompts if p.matches("pro")])
        print(
            f"{'/ picker: filter 204 prompts':<34} {ms:>10.2f} {FRAME_MS:>10.1f}  {'ok' if ms <= FRAME_MS else 'OVER'}"
        )


if __name__ == "__main__":
    main()
