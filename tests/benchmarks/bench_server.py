"""Benchmark: Hearth's local server against Hearth in-process and against llama.cpp's own llama-server, on
the same 1.1B Q4_K_M file (tests/benchmarks/bench_models.py) and the same thread count.

Rows (client-side timings: what an app using the API sees):
  one stream            `hearth serve` /v1/completions (streamed) vs `hearth bench` in-process: 256-token
                        prompt, 128 tokens, the same sampling. Targets: >= 97 % of the tok/s, TTFT +15 ms at most.
  4 streams x 128       aggregate tok/s through `hearth serve --parallel 4` vs `llama-server --parallel 4` (both
                        -t THREADS, context 4096). Targets: aggregate >= 0.95x llama-server's, and every stream
                        >= 20 % of a lone stream's speed.
  long prompt           a 4,000-token prompt from one client while 3 others stream through `hearth serve`
                        (context 16,384): the longest gap between two tokens of the 3 while it is evaluated.
                        Target: <= 500 ms.
                        (--long-reference runs the same against llama-server, for comparison.)
Baselines measured on this machine (2 cores) with llama.cpp's own server: one stream 40.8 t/s, four streams
49.8 t/s aggregate (the kernel limit at batch 4 here: llama-bench -p 4 = 43 t/s).

llama-server: --llama-server PATH, else tests/support/llama_tools.py (when present), else one found in
~/.cache/hearth-build, else built here from the llama-cpp-python sdist's vendored llama.cpp (CMake, a few
minutes, cached in ~/.cache/hearth-build/server-bench).

Run: python tests/benchmarks/bench_server.py [--model PATH] [--threads 2] [--runs 3] [--llama-server PATH]
     [--rows one,four,long] [--long-reference]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import importlib.metadata
import itertools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app.core.gguf_info import inspect
from tests.benchmarks.bench_models import bench_model
from tests.support.serve import ServeProcess

GEN = 128
PROMPT_TOKENS = 256
LONG_PROMPT_TOKENS = 4000
PHRASE = "the quick brown fox jumps over the lazy dog and "
BUILD_CACHE = Path(os.environ.get("HEARTH_BUILD_CACHE", Path.home() / ".cache" / "hearth-build"))


# ---- prompts of an exact token count ------------------------------------------------------------------------------
class Tokenizer:
    """The model's vocabulary only (no weights): counts tokens as the engine does (BOS, special tokens)."""

    def __init__(self, model: Path) -> None:
        from app.core.native import llama

        self.lib = lib = llama()
        params = lib.llama_model_default_params()
        params.vocab_only = True
        self.model = lib.llama_model_load_from_file(str(model).encode(), params)
        self.vocab = lib.llama_model_get_vocab(self.model)

    def count(self, text: str) -> int:
        data = text.encode()
        size = len(data) + 16
        buffer = (ctypes.c_int32 * size)()
        return int(self.lib.llama_tokenize(self.vocab, data, len(data), buffer, size, True, True))

    def prompt(self, tokens: int, shift: int = 0) -> str:
        """The longest word-aligned text of at most `tokens` tokens; shift starts the phrase at another word,
        so the server's prompt cache never holds a previous run's prompt."""
        words = (PHRASE * (tokens // 4 + 8)).split(" ")[shift % 10 :]
        low, high = 1, len(words)
        while low < high:
            mid = (low + high + 1) // 2
            if self.count(" ".join(words[:mid])) <= tokens:
                low = mid
            else:
                high = mid - 1
        return " ".join(words[:low])


# ---- streaming client --------------------------------------------------------------------------------------------
@dataclass
class Stream:
    """One streamed completion as the client saw it."""

    sent: float = 0.0
    times: list[float] = field(default_factory=list)  # arrival of each chunk with text
    tokens: int = 0  # from usage when the server sends it, else the chunks
    error: str = ""

    @property
    def ttft_ms(self) -> float:
        return (self.times[0] - self.sent) * 1000

    @property
    def tps(self) -> float:
        span = self.times[-1] - self.times[0]
        return (self.tokens - 1) / span if span > 0 and self.tokens > 1 else 0.0

    def max_gap(self, start: float, end: float) -> float:
        """The longest time without a token between start and end (or this stream's last token)."""
        end = min(end, self.times[-1])
        inside = [start, *[t for t in self.times if start < t < end], end]
        return max(b - a for a, b in itertools.pairwise(inside))


def sampling_body(eog: list[int], max_tokens: int, seed: int) -> dict[str, object]:
    """Hearth's default sampling chain (what `hearth bench` uses), spelled out so both servers run it."""
    return {
        "max_tokens": max_tokens,
        "temperature": 0.8,
        "top_k": 40,
        "top_p": 0.95,
        "min_p": 0.05,
        "repeat_penalty": 1.1,
        "repeat_last_n": 64,
        "seed": seed,
        "logit_bias": {str(t): -100 for t in eog},  # generate exactly max_tokens
    }


def stream_completion(base: str, body: dict[str, object], out: Stream, stop: threading.Event | None = None) -> None:
    host, port = base.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=3600)
    payload = json.dumps({**body, "stream": True, "stream_options": {"include_usage": True}})
    out.sent = time.perf_counter()
    try:
        connection.request("POST", "/v1/completions", payload, {"Content-Type": "application/json"})
        response = connection.getresponse()
        if response.status != 200:
            out.error = f"HTTP {response.status}: {response.read()[:300]!r}"
            return
        chunks = 0
        for line in response:
            if stop is not None and stop.is_set():
                break
            if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                continue
            now = time.perf_counter()
            data = json.loads(line[6:])
            if data.get("choices") and data["choices"][0].get("text"):
                out.times.append(now)
                chunks += 1
            usage = data.get("usage")
            if usage:
                out.tokens = int(usage["completion_tokens"])
        out.tokens = out.tokens or chunks
    except OSError as exc:
        out.error = str(exc)
    finally:
        connection.close()


def run_streams(base: str, bodies: list[dict[str, object]]) -> list[Stream]:
    streams = [Stream() for _ in bodies]
    threads = [
        threading.Thread(target=stream_completion, args=(base, b, s)) for b, s in zip(bodies, streams, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for stream in streams:
        if stream.error or not stream.times:
            raise RuntimeError(f"a stream failed: {stream.error or 'no tokens'}")
    return streams


# ---- servers -----------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def hearth_server(model: Path, threads: int, ctx: int, home: Path) -> Iterator[str]:
    process = ServeProcess(
        [str(model), "--threads", str(threads), "--ctx", str(ctx), "--parallel", "4", "--ngl", "0", "--queue", "8"],
        home,
        env={"HOME": str(home / "home"), "XDG_CACHE_HOME": str(home / "cache")},
        timeout=300,
    )
    try:
        yield process.base
    finally:
        process.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def llama_server(binary: Path, model: Path, threads: int, ctx: int) -> Iterator[str]:
    port = free_port()
    command = [str(binary), "-m", str(model), "-t", str(threads), "-tb", str(threads), "-c", str(ctx), "-np", "4"]
    command += ["--host", "127.0.0.1", "--port", str(port), "-ngl", "0", "-fa", "off", "--no-webui", "-kvu"]
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below, after the process ends
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"llama-server exited: {log.read()[-2000:].decode(errors='replace')}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                connection.request("GET", "/health")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("llama-server did not become ready in 300 s")
            time.sleep(0.5)
        yield base
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def find_llama_server(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    try:
        from tests.support import llama_tools  # the shared cached builder, once it is on main

        return Path(llama_tools.tool("llama-server"))  # type: ignore[attr-defined]
    except ImportError:
        pass
    found = sorted(BUILD_CACHE.glob("**/build/bin/llama-server"), key=lambda p: p.stat().st_mtime)
    if found:
        return found[-1]
    return build_llama_server()


def build_llama_server() -> Path:
    """llama-server from the vendored llama.cpp in the installed llama-cpp-python version's sdist."""
    version = importlib.metadata.version("llama-cpp-python")
    root = BUILD_CACHE / "server-bench" / f"llama-cpp-python-{version}"
    binary = root / "build" / "bin" / "llama-server"
    if binary.exists():
        return binary
    root.mkdir(parents=True, exist_ok=True)
    source = root / "src"
    if not (source / "CMakeLists.txt").exists():
        with tempfile.TemporaryDirectory() as tmp:
            sdist = f"llama-cpp-python=={version}"
            pip = [sys.executable, "-m", "pip", "download", sdist, "--no-binary", ":all:", "--no-deps", "-d", tmp]
            subprocess.run(pip, check=True)
            archive = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
            vendored = next(Path(tmp).glob("llama_cpp_python-*/vendor/llama.cpp"))
            shutil.copytree(vendored, source)
    flags = ["-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=ON"]
    flags += ["-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF"]  # else its build downloads the web UI
    print(f"building llama-server in {root} (a few minutes)…", file=sys.stderr)
    subprocess.run(["cmake", "-S", str(source), "-B", str(root / "build"), *flags], check=True)
    subprocess.run(["cmake", "--build", str(root / "build"), "--target", "llama-server", "-j2"], check=True)
    return binary


# ---- measurements ------------------------------------------------------------------------------------------------
def in_process(model: Path, threads: int, runs: int, home: Path) -> tuple[float, float]:
    """`hearth bench` (in-process engine): median gen tok/s and TTFT ms."""
    tps, ttft = [], []
    env = {**os.environ, "HEARTH_HOME": str(home), "HOME": str(home / "home")}
    command = [sys.executable, "-m", "app", "bench", str(model), "--prompt", str(PROMPT_TOKENS), "--gen", str(GEN)]
    command += ["--threads", str(threads), "--ctx", "4096", "--ngl", "0", "--json"]
    for _ in range(runs):
        out = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=True,
            env=env,
            cwd=Path(__file__).resolve().parents[2],
        ).stdout
        result = json.loads(out)
        tps.append(result["gen_tps"])
        ttft.append(result["ttft_ms"])
    return statistics.median(tps), statistics.median(ttft)


def one_stream(base: str, tokenizer: Tokenizer, eog: list[int], runs: int) -> tuple[float, float]:
    tps, ttft = [], []
    for run in range(runs):
        body = {"prompt": tokenizer.prompt(PROMPT_TOKENS, shift=run + 1), **sampling_body(eog, GEN, 1)}
        (stream,) = run_streams(base, [body])
        assert stream.tokens == GEN, stream.tokens
        tps.append(stream.tps)
        ttft.append(stream.ttft_ms)
    return statistics.median(tps), statistics.median(ttft)


def four_streams(base: str, tokenizer: Tokenizer, eog: list[int], shift: int) -> tuple[float, list[float]]:
    bodies = [
        {"prompt": f"Client {i}: " + tokenizer.prompt(32, shift=shift + i), **sampling_body(eog, GEN, 10 + i)}
        for i in range(4)
    ]
    streams = run_streams(base, bodies)
    first = min(s.times[0] for s in streams)
    last = max(s.times[-1] for s in streams)
    total = sum(s.tokens for s in streams)
    return total / (last - first), [s.tps for s in streams]


def long_prompt(base: str, tokenizer: Tokenizer, eog: list[int], tokens: int) -> tuple[float, float, int]:
    """3 streams, then a long prompt: (worst gap of the 3 while it was evaluated, its TTFT in s, the tokens the
    3 streamed meanwhile). The server's context must hold 3 x 3,000 + the prompt (16,384 does)."""
    stop = threading.Event()
    streams = [Stream() for _ in range(3)]
    threads = [
        threading.Thread(
            target=stream_completion,
            args=(base, {"prompt": f"Stream {i}: " + tokenizer.prompt(32, shift=i), **sampling_body(eog, 3000, i)}, s),
            kwargs={"stop": stop},
        )
        for i, s in enumerate(streams)
    ]
    for thread in threads:
        thread.start()
    while not all(s.times for s in streams):
        if any(s.error for s in streams):
            raise RuntimeError(next(s.error for s in streams if s.error))
        time.sleep(0.05)
    time.sleep(1.0)
    long = Stream()
    body = {"prompt": tokenizer.prompt(tokens, shift=7), **sampling_body(eog, 4, 99)}
    stream_completion(base, body, long)
    stop.set()
    for thread in threads:
        thread.join(120)
    if long.error or not long.times:
        raise RuntimeError(f"the long prompt failed: {long.error}")
    start, end = long.sent, long.times[0]
    meanwhile = sum(1 for s in streams for t in s.times if start < t < end)
    return max(s.max_gap(start, end) for s in streams), end - start, meanwhile


# ---- table -------------------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="GGUF file (default: the generated 1.1B Q4_K_M)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--llama-server", type=Path, help="llama.cpp's llama-server binary")
    parser.add_argument(
        "--rows", default="one,four,long", help="which rows: one (stream), four (streams), long (prompt)"
    )
    parser.add_argument("--long-reference", action="store_true", help="also run the long prompt on llama-server")
    parser.add_argument("--long-tokens", type=int, default=LONG_PROMPT_TOKENS, help="the long prompt's tokens")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # a timeout's TERM still stops the servers it started
    model = args.model or bench_model("1.1b")
    info = inspect(model)
    eog = sorted({t for t in (info.eos_token_id, info.eot_token_id) if t is not None})
    tokenizer = Tokenizer(model)
    wanted = set(args.rows.split(","))
    binary = find_llama_server(args.llama_server) if wanted & {"four"} or args.long_reference else None
    load = os.getloadavg()[0]
    print(f"model {model.name}, {args.threads} threads, llama-server {binary}")
    print(f"load average at start {load:.1f} on {os.cpu_count()} CPUs: figures taken under load when it is high\n")
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        (home / "models").mkdir()
        lone = 0.0
        if wanted & {"one", "four"}:
            base_tps, base_ttft = in_process(model, args.threads, args.runs, home) if "one" in wanted else (0.0, 0.0)
            with hearth_server(model, args.threads, 4096, home) as hearth:
                lone, ttft = one_stream(hearth, tokenizer, eog, args.runs)
                if "four" in wanted:
                    aggregate, per_stream = four_streams(hearth, tokenizer, eog, shift=3)
            if "one" in wanted:
                rows.append(
                    (
                        "one stream: tok/s",
                        f"{lone:.2f}",
                        f"{base_tps:.2f} (hearth bench)",
                        f"{lone / base_tps:.1%} (>= 97 %)",
                    )
                )
                rows.append(
                    (
                        "one stream: TTFT ms",
                        f"{ttft:.0f}",
                        f"{base_ttft:.0f} (hearth bench)",
                        f"{ttft - base_ttft:+.0f} ms (<= +15)",
                    )
                )
        if "four" in wanted:
            assert binary is not None
            with llama_server(binary, model, args.threads, 4096) as reference:
                ref_one, _ = one_stream(reference, tokenizer, eog, 1)
                ref_aggregate, ref_streams = four_streams(reference, tokenizer, eog, shift=5)
            rows.append(("one stream: tok/s (llama-server)", "", f"{ref_one:.2f}", "reference"))
            rows.append(
                (
                    "4 x 128: aggregate tok/s",
                    f"{aggregate:.2f}",
                    f"{ref_aggregate:.2f} (llama-server)",
                    f"{aggregate / ref_aggregate:.2f}x (>= 0.95x)",
                )
            )
            slowest = min(per_stream)
            rows.append(
                (
                    "4 x 128: slowest stream tok/s",
                    f"{slowest:.2f}",
                    f"{min(ref_streams):.2f} (llama-server)",
                    f"{slowest / lone:.0%} of a lone stream (>= 20 %)",
                )
            )
        if "long" in wanted:
            with hearth_server(model, args.threads, 16384, home) as hearth:
                gap, seconds, meanwhile = long_prompt(hearth, tokenizer, eog, args.long_tokens)
            reference_gap = ""
            if args.long_reference:
                assert binary is not None
                with llama_server(binary, model, args.threads, 16384) as reference:
                    ref_gap, _, _ = long_prompt(reference, tokenizer, eog, args.long_tokens)
                reference_gap = f"{ref_gap * 1000:.0f} ms (llama-server)"
            rows.append(
                (
                    f"{args.long_tokens:,}-token prompt beside 3 streams: worst stall",
                    f"{gap * 1000:.0f} ms",
                    reference_gap,
                    f"{'meets' if gap <= 0.5 else 'misses'} <= 500 ms (the prompt took {seconds:.0f} s; the 3 "
                    f"streamed {meanwhile} tokens meanwhile)",
                )
            )
    width = [max(len(r[i]) for r in rows) for i in range(4)]
    header = ("measure", "Hearth server", "baseline", "result")
    width = [max(w, len(h)) for w, h in zip(width, header, strict=True)]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, width, strict=True))

    print(line(header))
    print(line(tuple("-" * w for w in width)))
    for row in rows:
        print(line(row))
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
