"""Benchmark: wall time of quick `hearth` commands, each in a fresh process, against the 150 ms target.

Issue "A CLI that answers at once": `hearth --help`, `hearth info FILE`, `hearth models` and `hearth history
list` must each answer in <= 150 ms. Each command runs as `python -m app ...` in a subprocess with a fresh
HEARTH_HOME holding one generated tiny model in its models folder; the table shows the median of --runs
wall times, and the baseline `python -c pass` (interpreter start-up, which every command pays too).

    python tests/benchmarks/bench_cli.py [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from app.core.tiny_model import write_tiny_model

TARGET_MS = 150.0


def median_ms(command: list[str], env: dict[str, str], runs: int) -> float:
    """Median wall time of `runs` runs after one warm-up run (so the file cache is warm for every one)."""
    samples = []
    for i in range(runs + 1):
        start = time.perf_counter()
        done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, timeout=60, check=False)
        elapsed = (time.perf_counter() - start) * 1000
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr.decode()[-500:]}")
        if i:
            samples.append(elapsed)
    return statistics.median(samples)


def report(runs: int = 10) -> dict[str, float]:
    """Measure every command and print the table; returns the medians in ms."""
    work = Path(tempfile.mkdtemp(prefix="hearth-bench-cli-"))
    env = dict(os.environ, HEARTH_HOME=str(work / "hearth"), HOME=str(work), PYTHONPATH=str(REPO))
    model = write_tiny_model(work / "hearth" / "models" / "tiny.gguf")
    python = [sys.executable]
    commands = {
        "python -c pass (baseline)": [*python, "-c", "pass"],
        "hearth --help": [*python, "-m", "app", "--help"],
        "hearth info FILE": [*python, "-m", "app", "info", str(model)],
        "hearth models": [*python, "-m", "app", "models"],
        "hearth history list": [*python, "-m", "app", "history", "list"],
    }
    results = {name: median_ms(command, env, runs) for name, command in commands.items()}
    baseline = results["python -c pass (baseline)"]
    print(f"median of {runs} runs, fresh process each; target {TARGET_MS:.0f} ms")
    print(f"{'command':28} {'median ms':>10} {'minus python':>13} {'target':>8}")
    for name, ms in results.items():
        verdict = "" if name.startswith("python") else "ok" if ms <= TARGET_MS else "MISSED"
        print(f"{name:28} {ms:10.0f} {ms - baseline:13.0f} {verdict:>8}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    report(parser.parse_args().runs)


if __name__ == "__main__":
    main()
