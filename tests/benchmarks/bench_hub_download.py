"""Download throughput from the local stand-in Hub: Hearth's resumable, sha256-checking download against
plain `hf_hub_download` of the same file (the baseline). Target: Hearth >= 95 % of the baseline.

    PYTHONPATH=. python tests/benchmarks/bench_hub_download.py [--size-mb 500] [--runs 3]

The server runs in its own process (sendfile, as a CDN would), each download in a fresh process; runs
alternate between the two clients so page-cache and CPU-frequency effects hit both alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = "bench/Bench-GGUF"
ROOT = Path(__file__).resolve().parents[2]

BASELINE = """
import sys, time
from huggingface_hub import hf_hub_download
url, name, dest = sys.argv[1:4]
t = time.perf_counter()
hf_hub_download("{repo}", name, local_dir=dest, endpoint=url, token=False)
print(time.perf_counter() - t)
"""

HEARTH = """
import sys, time
from pathlib import Path
from app.core.downloads import DownloadManager, DownloadState
from app.core.hub import HubClient
from app.core.hub_files import select_option
from app.core.paths import AppPaths
url, name, dest = sys.argv[1:4]
hub = HubClient(url)
details = hub.details("{repo}")
option = select_option(details.options, file=name)
manager = DownloadManager(AppPaths.under(Path(dest) / "home").ensure(), hub)
t = time.perf_counter()
status = manager.wait(manager.add("{repo}", option, revision=details.sha, dest_dir=Path(dest)).id)
elapsed = time.perf_counter() - t
assert status.state is DownloadState.DONE, status
print(elapsed)
"""


def make_file(path: Path, size_mb: int) -> None:
    with open(path, "wb") as handle:
        handle.write(b"GGUF")
        for _ in range(size_mb):
            handle.write(os.urandom(1 << 20))


def run_client(code: str, url: str, name: str, dest: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_DISABLE_TELEMETRY": "1", "NO_PROXY": "127.0.0.1"}
    env["HF_HOME"] = str(dest / "hf-home")
    out = subprocess.run(
        [sys.executable, "-c", code.format(repo=REPO), url, name, str(dest)],
        capture_output=True, text=True, env=env, check=True, timeout=600,
    )  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hearth-bench-") as tmp:
        work = Path(tmp)
        source = work / "bench-model-Q4_K_M.gguf"
        make_file(source, args.size_mb)
        size = source.stat().st_size
        server = subprocess.Popen(
            [sys.executable, "-m", "tests.support.fake_hub", REPO, str(source)],
            stdout=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        try:
            url = server.stdout.readline().strip()  # type: ignore[union-attr]
            times: dict[str, list[float]] = {"hf_hub_download": [], "hearth": []}
            for run in range(args.runs):
                for label, code in (("hf_hub_download", BASELINE), ("hearth", HEARTH)):
                    dest = work / f"{label}-{run}"
                    dest.mkdir()
                    times[label].append(run_client(code, url, source.name, dest))
                    for leftover in dest.rglob("*.gguf"):
                        leftover.unlink()  # keep the disk and page cache from filling up
        finally:
            server.terminate()
            server.wait()
    print(f"\nDownload of a {size / 1e6:.0f} MB file from the local stand-in Hub (median of {args.runs})")
    print(f"{'client':<18} {'median s':>9} {'MB/s':>8}   runs (s)")
    medians = {label: statistics.median(values) for label, values in times.items()}
    for label, values in times.items():
        runs = ", ".join(f"{v:.2f}" for v in values)
        print(f"{label:<18} {medians[label]:>9.2f} {size / 1e6 / medians[label]:>8.0f}   {runs}")
    ratio = medians["hf_hub_download"] / medians["hearth"]
    print(f"\nHearth throughput = {ratio:.1%} of hf_hub_download (target >= 95 %); Hearth also verifies sha256")


if __name__ == "__main__":
    main()
