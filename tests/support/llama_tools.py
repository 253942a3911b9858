"""llama.cpp's own libraries and tools (RPC on), built once per machine from llama-cpp-python's vendored source.

Tests, benchmarks and scripts need what the PyPI build of llama-cpp-python does not ship: the RPC backend
(its default build has GGML_RPC off), `rpc-server`, `llama-server`, `llama-bench`, `llama-lookup`,
`llama-speculative`. They are built here from the sdist of the *installed* llama-cpp-python version (its
`vendor/llama.cpp`), so the shared libraries match the ctypes bindings exactly and can replace the
package's own through LLAMA_CPP_LIB_PATH.

The tree is configured once (CMake, shared libraries, RPC on, curl/OpenSSL/web UI off, this CPU's
instructions) and each target is built on demand; everything is kept in
`$HEARTH_BUILD_CACHE/llama-tools` (default `~/.cache/hearth-build/llama-tools`, the cache packaging/build.py
uses) under a key of the version and the flags. A file lock keeps two pytest processes from building at
once. `HEARTH_LLAMA_TOOLS_CMAKE_ARGS` adds flags (e.g. "-DGGML_CUDA=ON"); they are part of the key.

    python tests/support/llama_tools.py libs rpc-server llama-server    # build (or find) and print paths
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

# The cache root is read when this module is imported: tests point HOME and XDG_CACHE_HOME into a
# temporary folder per test (tests/conftest.py), and a build of several minutes must outlive that.
_ENV_CACHE = os.environ.get("HEARTH_BUILD_CACHE")


def _default_cache() -> Path:
    if _ENV_CACHE:
        return Path(_ENV_CACHE).expanduser()
    import platformdirs

    return platformdirs.user_cache_path("hearth-build", appauthor=False)


CACHE_ROOT = _default_cache() / "llama-tools"

BASE_CMAKE_ARGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=ON",
    "-DGGML_RPC=ON",
    "-DGGML_NATIVE=ON",  # for this machine only: these builds never leave it
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=ON",  # llama-lookup, llama-speculative
    "-DLLAMA_BUILD_TOOLS=ON",  # rpc-server, llama-server, llama-bench
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",  # else llama-server's build downloads its web UI from Hugging Face
)
LIBS = "libs"  # the shared libraries llama-cpp-python loads (libllama, libggml*, libggml-rpc)
# Tool name -> its CMake target, which is also the executable's name (llama.cpp names rpc-server's target
# ggml-rpc-server).
TOOLS = {
    "rpc-server": "ggml-rpc-server",
    "llama-server": "llama-server",
    "llama-bench": "llama-bench",
    "llama-lookup": "llama-lookup",
    "llama-speculative": "llama-speculative",
}
_LIB_TARGETS = ("llama", "ggml", "ggml-rpc")


class LlamaToolsError(RuntimeError):
    """The tools cannot be built here (no cmake, no compiler, no sdist); the message says what to install."""


def engine_version() -> str:
    return importlib.metadata.version("llama-cpp-python")


def extra_cmake_args() -> tuple[str, ...]:
    return tuple(shlex.split(os.environ.get("HEARTH_LLAMA_TOOLS_CMAKE_ARGS", "")))


def cmake_args() -> tuple[str, ...]:
    generator = ("-G", "Ninja") if shutil.which("ninja") else ()
    return (*generator, *BASE_CMAKE_ARGS, *extra_cmake_args())


def build_key() -> str:
    text = " ".join([engine_version(), platform.machine(), sys.platform, *cmake_args()])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def build_dir() -> Path:
    return CACHE_ROOT / f"llama-cpp-python-{engine_version()}-{build_key()}"


def bin_dir() -> Path:
    """Where llama.cpp's CMake puts both the shared libraries and the executables (build/bin)."""
    return build_dir() / "build" / "bin"


def _exe(name: str) -> str:
    return name + (".exe" if sys.platform == "win32" else "")


def _lib_files(folder: Path) -> list[Path]:
    suffix = {"win32": ".dll", "darwin": ".dylib"}.get(sys.platform, ".so")
    prefix = "" if sys.platform == "win32" else "lib"
    return [folder / f"{prefix}{name}{suffix}" for name in _LIB_TARGETS]


def _built(target: str) -> bool:
    if target == LIBS:
        return all(path.is_file() for path in _lib_files(bin_dir()))
    return (bin_dir() / _exe(TOOLS[target])).is_file()


def _cmake() -> str:
    """The cmake that configured the tree (a tree is built with the cmake that made it), else the system's,
    else this venv's (the `cmake` test dependency: a machine without cmake gets it from PyPI)."""
    configured = build_dir() / ".configured"
    if configured.is_file():
        recorded = json.loads(configured.read_text()).get("cmake", "")
        if recorded and Path(recorded).is_file():
            return recorded
    here = Path(sys.executable).parent / _exe("cmake")
    found = shutil.which("cmake") or (str(here) if here.is_file() else None)
    if found is None:
        raise LlamaToolsError(
            "cmake is not installed, so llama.cpp's RPC libraries and tools cannot be built for the tests: "
            "`pip install cmake` (it is in Hearth's test extra) or install it with your system's packages"
        )
    return found


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock across processes (two pytest runs must not build into one tree at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        if sys.platform == "win32":
            import msvcrt

            while True:
                try:
                    msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:  # LK_LOCK gives up after 10 s; keep waiting for the other build
                    continue
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if sys.platform == "win32":
                import msvcrt

                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
            else:
                import fcntl

                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _log(message: str) -> None:
    print(f"[llama-tools] {message}", file=sys.stderr, flush=True)


def _sdist() -> Path:
    """The llama-cpp-python sdist of the installed version ($HEARTH_LLAMA_SDIST, else `pip download`)."""
    given = os.environ.get("HEARTH_LLAMA_SDIST")
    if given:
        return Path(given)
    version = engine_version()
    folder = CACHE_ROOT / "sdist"
    found = sorted(folder.glob(f"llama_cpp_python-{version}.tar.gz"))
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", f"llama-cpp-python=={version}"]
    command += ["--no-binary", ":all:", "--no-deps", "-d", str(folder)]
    _log(f"downloading the llama-cpp-python {version} sdist")
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    found = sorted(folder.glob(f"llama_cpp_python-{version}.tar.gz"))
    if result.returncode != 0 and not found:
        reason = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise LlamaToolsError(
            f"could not download the llama-cpp-python {version} sdist ({reason}); set HEARTH_LLAMA_SDIST to a copy"
        )
    if not found:
        raise LlamaToolsError(f"pip download left no llama_cpp_python-{version}.tar.gz in {folder}")
    return found[0]


def source_dir() -> Path:
    """The vendored llama.cpp tree, extracted once per version (shared by every flag set)."""
    target = CACHE_ROOT / f"src-{engine_version()}"
    if (target / ".complete").is_file():
        return target
    sdist = _sdist()
    _log(f"extracting vendor/llama.cpp from {sdist.name}")
    shutil.rmtree(target, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix="src-", dir=CACHE_ROOT))
    with tarfile.open(sdist) as archive:
        prefix = None
        members = []
        for member in archive.getmembers():
            parts = member.name.split("/", 2)
            if len(parts) == 3 and parts[1] == "vendor" and parts[2].startswith("llama.cpp/"):
                prefix = f"{parts[0]}/vendor/"
                members.append(member)
        if prefix is None:
            raise LlamaToolsError(f"{sdist.name} has no vendor/llama.cpp")
        for member in members:
            member.name = member.name[len(prefix) :]
        archive.extractall(staging, members=members, filter="data")
    # The vendored tree carries a .git *file* pointing into llama-cpp-python's repository, which the sdist
    # lacks: without it, CMake's version probe quietly falls back instead of printing git errors.
    gitlink = staging / "llama.cpp" / ".git"
    if gitlink.is_file():
        gitlink.unlink()
    (staging / "llama.cpp").rename(target)
    shutil.rmtree(staging, ignore_errors=True)
    (target / ".complete").write_text(sdist.name)
    return target


def _run(command: list[str], log_path: Path, what: str) -> float:
    started = time.monotonic()
    with log_path.open("a") as out:
        out.write(f"\n$ {shlex.join(command)}\n")
        out.flush()
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        raise LlamaToolsError(f"{what} failed (exit {result.returncode}); log {log_path}:\n" + "\n".join(tail))
    return time.monotonic() - started


def _record(name: str, seconds: float) -> None:
    path = build_dir() / "timings.json"
    timings = json.loads(path.read_text()) if path.is_file() else {}
    timings[name] = round(seconds, 1)
    path.write_text(json.dumps(timings, indent=1))


def timings() -> dict[str, float]:
    """Seconds each step took when it was built on this machine (configure, libs, each tool)."""
    path = build_dir() / "timings.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _configure() -> None:
    build = build_dir() / "build"
    if (build / "CMakeCache.txt").is_file() and (build_dir() / ".configured").is_file():
        return
    cmake = _cmake()  # before fetching 76 MB of source that could not be built
    source = source_dir()
    build.mkdir(parents=True, exist_ok=True)
    _log(f"configuring llama.cpp ({' '.join(cmake_args())})")
    seconds = _run([cmake, "-S", str(source), "-B", str(build), *cmake_args()], build_dir() / "build.log", "configure")
    (build_dir() / ".configured").write_text(json.dumps({"cmake": cmake, "args": list(cmake_args())}))
    _record("configure", seconds)


def ensure(*targets: str) -> Path:
    """Build what is missing of `targets` ("libs" and/or tool names); returns the folder holding them all."""
    unknown = [t for t in targets if t != LIBS and t not in TOOLS]
    if unknown:
        raise ValueError(f"unknown llama.cpp targets {unknown}; known: {LIBS}, {', '.join(TOOLS)}")
    if all(_built(t) for t in targets):
        return bin_dir()
    with _locked(CACHE_ROOT / "build.lock"):
        _configure()
        jobs = str(os.cpu_count() or 2)
        for target in targets:
            if _built(target):
                continue
            names = list(_LIB_TARGETS) if target == LIBS else [TOOLS[target]]
            _log(f"building {target} (takes minutes the first time; log {build_dir() / 'build.log'})")
            command = [_cmake(), "--build", str(build_dir() / "build"), "--config", "Release", "-j", jobs]
            for name in names:
                command += ["--target", name]
            seconds = _run(command, build_dir() / "build.log", f"building {target}")
            _record(target, seconds)
            _log(f"built {target} in {seconds:.0f} s")
            if not _built(target):
                raise LlamaToolsError(f"building {target} reported success but {bin_dir()} lacks it")
    return bin_dir()


def lib_dir() -> Path:
    """A folder for LLAMA_CPP_LIB_PATH: llama-cpp-python's libraries built from the same source, RPC on."""
    return ensure(LIBS)


def tool(name: str) -> Path:
    """The path of one of llama.cpp's executables (built on first use)."""
    return ensure(name) / _exe(TOOLS[name])


def main(argv: list[str] | None = None) -> int:
    wanted = (argv if argv is not None else sys.argv[1:]) or [LIBS, *TOOLS]
    folder = ensure(*wanted)
    print(folder)
    for name, seconds in timings().items():
        print(f"  {name:<18} {seconds:>7.1f} s (when built)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
