"""Build Hearth's double-click bundle for this OS: `python packaging/build.py` (see README, "Packaging").

Steps: icons from resources/icons/hearth.svg; llama.cpp libraries built for any CPU of this architecture
(cached outside the repository, since the build takes long); PyInstaller one-folder bundle
(packaging/dist/Hearth); ggml's backend modules (CPU variants, RPC) moved next to the executable, where
ggml looks for them; then the OS's package: a tarball with an install script (Linux), an Inno Setup
installer when ISCC is installed (Windows), Hearth.app and a .dmg (macOS). Finally the bundle's own
`--self-test` must pass.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BUILD = HERE / "build"
DIST = HERE / "dist"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from bundle_rules import is_backend_module, is_cpu_variant  # noqa: E402

from app import APP_NAME, __version__  # noqa: E402

LINUX = sys.platform.startswith("linux")
WINDOWS = sys.platform == "win32"
MACOS = sys.platform == "darwin"
X86 = platform.machine().lower() in {"x86_64", "amd64", "i686", "x86"}

# A bundle runs on other people's machines: never -march=native (llama.cpp's default build
# compiles for the build machine's CPU). On x86 every CPU
# variant of ggml is built (x64 baseline up to AVX-512/AMX) and the best one is loaded at run time; the
# multimodal library (mtmd) is left out, since Hearth does not use it. The RPC backend is in (RPC workers,
# `hearth rpc-worker`): llama-cpp-python's default build leaves it out.
PORTABLE_CMAKE_ARGS = ["-DGGML_NATIVE=OFF", "-DLLAVA_BUILD=OFF", "-DGGML_RPC=ON"]
DYNAMIC_BACKENDS = X86 and not MACOS  # GGML_BACKEND_DL: backends are modules loaded from the executable's folder
if DYNAMIC_BACKENDS:
    # No GGML_BACKEND_DIR: CMake makes it absolute (the build's temporary folder, which anyone could create
    # on a shared machine) and compiles it in as a search path. The variants land in the wheel's bin/.
    PORTABLE_CMAKE_ARGS += ["-DGGML_BACKEND_DL=ON", "-DGGML_CPU_ALL_VARIANTS=ON"]
if MACOS:
    PORTABLE_CMAKE_ARGS += ["-DGGML_METAL=ON"]


def log(message: str) -> None:
    print(f"[build] {message}", flush=True)


def cache_root() -> Path:
    """Where the slow-to-build engine wheel is kept between builds (outside the repository)."""
    override = os.environ.get("HEARTH_BUILD_CACHE")
    if override:
        return Path(override).expanduser()
    import platformdirs

    return platformdirs.user_cache_path("hearth-build", appauthor=False)


def engine_version() -> str:
    return importlib.metadata.version("llama-cpp-python")


def portable_wheel(rebuild: bool = False) -> Path:
    """The portable llama-cpp-python wheel, built once per version and CMAKE_ARGS and then reused.

    `--no-cache-dir` matters: pip's own wheel cache is keyed by version only and would hand back the
    -march=native wheel that `pip install .` built.
    """
    version = engine_version()
    key = hashlib.sha256(" ".join([version, platform.machine(), *PORTABLE_CMAKE_ARGS]).encode()).hexdigest()[:12]
    folder = cache_root() / "engine" / f"llama-cpp-python-{version}-{key}"
    wheels = sorted(folder.glob("llama_cpp_python-*.whl"))
    if wheels and not rebuild:
        log(f"engine: reusing {wheels[-1]}")
        return wheels[-1]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    log_path = BUILD / "engine-build.log"
    cmake_args = " ".join(PORTABLE_CMAKE_ARGS)
    log(f"engine: building llama-cpp-python {version} with {cmake_args} (takes long; log: {log_path})")
    env = dict(os.environ, CMAKE_ARGS=cmake_args, CMAKE_BUILD_PARALLEL_LEVEL=str(os.cpu_count() or 2))
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir"]
    command += ["--no-binary", "llama-cpp-python", "-w", str(folder), f"llama-cpp-python=={version}"]
    start = time.monotonic()
    with log_path.open("w") as out:
        result = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise SystemExit(f"build: the engine build failed; see {log_path}")
    log(f"engine: built in {time.monotonic() - start:.0f} s")
    return next(folder.glob("llama_cpp_python-*.whl"))


_FULL_VERSION = re.compile(r"\.so\.\d+\.\d+")  # libllama.so.0.5.0: a third copy nobody loads by that name


def extract_engine_libraries(wheel: Path, dest: Path) -> None:
    """Copy llama_cpp/lib/* and the CPU variants (installed by llama.cpp itself, elsewhere) from the wheel.

    Wheels cannot hold symlinks, so a library comes as libx.so, libx.so.0 and libx.so.0.y.z: keep the name
    Python loads and the soname the others link against.
    """
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            name = info.filename
            file_name = name.rsplit("/", 1)[-1]
            if name.endswith("/") or _FULL_VERSION.search(file_name):
                continue
            if not (name.startswith("llama_cpp/lib/") or is_cpu_variant(file_name)):
                continue
            target = dest / file_name
            target.write_bytes(archive.read(info))
            target.chmod(0o755)


def installed_engine_libraries(dest: Path) -> None:
    """The venv's own llama_cpp libraries: fast for trying the packaging, but built for this machine only."""
    import importlib.util

    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        raise SystemExit("build: llama_cpp is not installed in this Python")
    for path in (Path(spec.origin).parent / "lib").iterdir():
        if path.is_file() and not _FULL_VERSION.search(path.name):
            shutil.copy2(path, dest / path.name)


def prebuilt_engine_libraries(source: Path, dest: Path) -> None:
    """libllama and ggml's libraries from a CMake build of the same vendored llama.cpp (its bin folder).
    Other libraries there (the tools' common code, mtmd) are not the engine's."""
    names = [p for p in sorted(source.iterdir()) if p.name.startswith(("libllama.", "libggml", "llama.", "ggml"))]
    for path in names:
        if path.is_file() and path.suffix in (".so", ".dylib", ".dll", ".0") and not _FULL_VERSION.search(path.name):
            shutil.copy2(path, dest / path.name)  # follows the links: a file under each name ggml loads


def prepare_engine(kind: str, rebuild: bool, libs: Path | None = None) -> Path:
    dest = BUILD / "engine-lib"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    if libs is not None:
        log(f"engine: using the llama.cpp libraries in {libs} (portable only if that build was)")
        prebuilt_engine_libraries(libs, dest)
    elif kind == "portable":
        extract_engine_libraries(portable_wheel(rebuild), dest)
    else:
        log("engine: using the installed llama_cpp libraries (NOT portable: built for this machine's CPU)")
        installed_engine_libraries(dest)
    if not any(dest.iterdir()):
        raise SystemExit("build: no llama.cpp libraries were found for the bundle")
    return dest


def make_icons() -> Path:
    from icons import write_icons

    out = BUILD / "icons"
    write_icons(out)
    return out


def run_pyinstaller(engine_dir: Path, icon_dir: Path) -> Path:
    env = dict(os.environ, HEARTH_ENGINE_LIB_DIR=str(engine_dir), HEARTH_ICON_DIR=str(icon_dir))
    command = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--clean", "--log-level", "WARN"]
    command += ["--workpath", str(BUILD / "pyinstaller"), "--distpath", str(DIST), str(HERE / "hearth.spec")]
    subprocess.run(command, env=env, check=True)
    return DIST / APP_NAME


def move_backend_modules(bundle: Path, dynamic: bool) -> int:
    """A GGML_BACKEND_DL build of ggml looks for its backends (the CPU variants, RPC) in the executable's
    folder (and the working directory), not in the package: put them there. Their dependency on
    libggml-base is already loaded when they are. dynamic: the engine is such a build (the portable one on
    x86); in any other build these are ordinary libraries that stay where the others link them."""
    lib_dir = bundle / "_internal" / "llama_cpp" / "lib"
    moved = 0
    for path in sorted(lib_dir.glob("*")) if lib_dir.is_dir() and dynamic else []:
        if is_backend_module(path.name):
            shutil.move(str(path), bundle / path.name)
            moved += 1
    return moved


def executable(bundle: Path) -> Path:
    if WINDOWS:
        return bundle / "hearth-cli.exe"
    return bundle / "hearth"


def self_test(bundle: Path) -> None:
    result = subprocess.run([str(executable(bundle)), "--self-test"], capture_output=True, text=True, check=False)
    print(result.stdout.strip(), flush=True)
    if result.returncode != 0:
        raise SystemExit(f"build: the bundle's self-test failed (exit {result.returncode}): {result.stderr[-2000:]}")


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def linux_tarball(bundle: Path, icon_dir: Path) -> Path:
    """Hearth-<version>-linux-<arch>.tar.gz: the bundle, install.sh/uninstall.sh, the desktop entry, icons."""
    stage = BUILD / "tarball" / f"{APP_NAME}-{__version__}"
    shutil.rmtree(stage.parent, ignore_errors=True)
    shutil.copytree(bundle, stage / APP_NAME, symlinks=True)
    for name in ("install.sh", "uninstall.sh", "hearth.desktop"):
        shutil.copy2(HERE / "linux" / name, stage / name)
    (stage / "icons").mkdir()
    for png in sorted(icon_dir.glob("hearth-*.png")):
        shutil.copy2(png, stage / "icons" / png.name)
    shutil.copy2(REPO / "resources" / "icons" / "hearth.svg", stage / "icons" / "hearth.svg")
    out = DIST / f"{APP_NAME}-{__version__}-linux-{platform.machine()}.tar.gz"
    with tarfile.open(out, "w:gz", compresslevel=6) as tar:
        tar.add(stage, arcname=stage.name)
    return out


def windows_installer(icon_dir: Path) -> Path | None:
    iscc = shutil.which("iscc") or shutil.which(r"C:\Program Files (x86)\Inno Setup 6\ISCC.exe")
    if iscc is None:
        log("windows: Inno Setup's ISCC not found; the bundle is in packaging/dist/Hearth (installer skipped)")
        return None
    defines = [f"/DAppVersion={__version__}", f"/DIconFile={icon_dir / 'hearth.ico'}", f"/DDistDir={DIST}"]
    subprocess.run([iscc, *defines, str(HERE / "windows" / "hearth.iss")], check=True)
    return DIST / f"{APP_NAME}-{__version__}-setup.exe"


def macos_dmg() -> Path:
    out = DIST / f"{APP_NAME}-{__version__}-macos-{platform.machine()}.dmg"
    out.unlink(missing_ok=True)
    source = DIST / f"{APP_NAME}.app"
    command = [
        "hdiutil",
        "create",
        "-volname",
        APP_NAME,
        "-srcfolder",
        str(source),
        "-format",
        "UDZO",
        str(out),
    ]
    subprocess.run(command, check=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--engine",
        choices=("portable", "installed"),
        default="portable",
        help="portable (default): llama.cpp built for any CPU, cached; installed: this venv's (not portable)",
    )
    parser.add_argument("--rebuild-engine", action="store_true", help="rebuild the cached portable engine")
    parser.add_argument(
        "--engine-libs",
        type=Path,
        metavar="DIR",
        help="take libllama and ggml's libraries from DIR (a CMake build's bin folder of the same llama.cpp)",
    )
    parser.add_argument("--no-package", action="store_true", help="stop after the bundle (no tarball/installer)")
    args = parser.parse_args(argv)

    start = time.monotonic()
    BUILD.mkdir(parents=True, exist_ok=True)
    icon_dir = make_icons()
    engine_dir = prepare_engine(args.engine, args.rebuild_engine, args.engine_libs)
    engine_ready = time.monotonic()
    bundle = run_pyinstaller(engine_dir, icon_dir)
    dynamic = args.engine == "portable" and args.engine_libs is None and DYNAMIC_BACKENDS
    variants = move_backend_modules(bundle, dynamic)
    bundled = time.monotonic()
    log(f"bundle: {bundle} ({folder_size(bundle) / 2**20:.0f} MiB, {variants} backend modules)")
    self_test(bundle)
    if not args.no_package:
        package = None
        if LINUX:
            package = linux_tarball(bundle, icon_dir)
        elif WINDOWS:
            package = windows_installer(icon_dir)
        elif MACOS:
            package = macos_dmg()
        if package is not None:
            log(f"package: {package} ({package.stat().st_size / 2**20:.0f} MiB)")
    log(
        f"done in {time.monotonic() - start:.0f} s "
        f"(engine {engine_ready - start:.0f} s, PyInstaller {bundled - engine_ready:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
