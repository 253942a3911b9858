"""Start-up of the frozen bundle against the baseline `python -m app` from the source tree.

Measures the time to a shown (mapped) main window under Xvfb, and the wall time of `--self-test`, and
saves a screenshot of the bundle's window. Needs Xvfb and xwininfo (Debian: xvfb, x11-utils) and the xcb
libraries the app needs. "cold" runs drop the page cache first when this process may (root on a
machine, not in most containers); otherwise every run is warm and the table says so.

    python tests/benchmarks/bench_bundle_startup.py [--bundle packaging/dist/Hearth] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DISPLAY = ":97"
WINDOW_TIMEOUT_S = 60.0


def drop_page_cache() -> bool:
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def mapped_window_id(title_prefix: str) -> str | None:
    tree = subprocess.run(
        ["xwininfo", "-root", "-tree", "-display", DISPLAY], capture_output=True, text=True, check=False
    ).stdout
    for match in re.finditer(r"^\s*(0x[0-9a-f]+) \"" + re.escape(title_prefix), tree, re.MULTILINE):
        info = subprocess.run(
            ["xwininfo", "-id", match.group(1), "-display", DISPLAY],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        if "Map State: IsViewable" in info:
            return match.group(1)
    return None


def time_to_window(command: list[str], env: dict[str, str], screenshot: Path | None) -> float:
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while mapped_window_id("Hearth") is None:
            if proc.poll() is not None:
                raise RuntimeError(f"{command[0]} exited with status {proc.returncode} before showing a window")
            if time.perf_counter() - start > WINDOW_TIMEOUT_S:
                raise RuntimeError(f"no Hearth window after {WINDOW_TIMEOUT_S:.0f} s")
            time.sleep(0.01)
        elapsed = time.perf_counter() - start
        if screenshot is not None:
            time.sleep(1.0)  # let the first frame paint fully before the picture
            grab_screen(screenshot, env)
        return elapsed
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def grab_screen(path: Path, env: dict[str, str]) -> None:
    code = (
        "import sys; from PySide6.QtGui import QGuiApplication; app = QGuiApplication([]); "
        "sys.exit(0 if app.primaryScreen().grabWindow(0).save(sys.argv[1]) else 1)"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], env=dict(env, QT_QPA_PLATFORM="xcb"), check=True)


def time_self_test(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run([*command, "--self-test"], env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"self-test failed: {result.stdout.strip()} {result.stderr[-500:]}")
    return time.perf_counter() - start


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "packaging" / "dist" / "Hearth")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--screenshot", type=Path, default=REPO / "packaging" / "build" / "bundle-window.png")
    args = parser.parse_args()
    for tool in ("Xvfb", "xwininfo"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: apt-get install xvfb x11-utils")
    bundle_exe = args.bundle / "hearth"
    if not bundle_exe.exists():
        sys.exit(f"{bundle_exe} is missing: build it with python packaging/build.py")

    xvfb = subprocess.Popen(["Xvfb", DISPLAY, "-screen", "0", "1280x800x24", "-nolisten", "tcp"])
    time.sleep(1.0)
    home = Path(tempfile.mkdtemp(prefix="hearth-bench-"))
    env = dict(os.environ, DISPLAY=DISPLAY, HEARTH_HOME=str(home), PYTHONPATH=str(REPO))
    env.pop("QT_QPA_PLATFORM", None)
    env.pop("WAYLAND_DISPLAY", None)
    variants = {
        "bundle (packaging/dist/Hearth/hearth)": [str(bundle_exe)],
        "baseline: python -m app (source tree, venv)": [sys.executable, "-m", "app"],
    }
    rows = []
    try:
        cold = drop_page_cache()
        for index, (label, command) in enumerate(variants.items()):
            if cold:
                drop_page_cache()
            first = time_to_window(command, env, args.screenshot if index == 0 else None)
            warm = [time_to_window(command, env, None) for _ in range(args.runs)]
            tests = [time_self_test(command, env) for _ in range(args.runs)]
            rows.append((label, first, statistics.median(warm), statistics.median(tests)))
    finally:
        xvfb.terminate()
        xvfb.wait(timeout=10)
        shutil.rmtree(home, ignore_errors=True)

    first_label = "first run (cold cache)" if cold else "first run (warm cache: cannot drop it here)"
    print(f"bundle size: {folder_size(args.bundle) / 2**20:.0f} MiB ({args.bundle})")
    print(f"screenshot of the bundle's window: {args.screenshot}")
    median = f"median of {args.runs}"
    print(f"| program | window shown, {first_label} | window shown, {median} | --self-test, {median} |")
    print("| --- | --- | --- | --- |")
    for label, first, warm, test in rows:
        print(f"| {label} | {first:.2f} s | {warm:.2f} s | {test:.2f} s |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
