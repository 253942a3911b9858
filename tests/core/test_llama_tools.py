"""The cached llama.cpp build for tests (tests/support/llama_tools.py): its key, its refusals, its messages."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.support import llama_tools


def test_the_cache_key_follows_version_and_flags(monkeypatch: pytest.MonkeyPatch):
    key = llama_tools.build_key()
    assert llama_tools.build_dir().name == f"llama-cpp-python-{llama_tools.engine_version()}-{key}"
    assert "-DGGML_RPC=ON" in llama_tools.cmake_args() and "-DBUILD_SHARED_LIBS=ON" in llama_tools.cmake_args()
    monkeypatch.setenv("HEARTH_LLAMA_TOOLS_CMAKE_ARGS", "-DGGML_CUDA=ON")
    assert llama_tools.cmake_args()[-1] == "-DGGML_CUDA=ON" and llama_tools.build_key() != key


def test_unknown_targets_are_refused():
    with pytest.raises(ValueError, match="unknown llama.cpp targets \\['llama-cli'\\]"):
        llama_tools.ensure("llama-cli")


def test_a_machine_without_cmake_gets_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setattr(llama_tools, "CACHE_ROOT", tmp_path / "cache")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "venv" / "bin" / "python"))
    with pytest.raises(llama_tools.LlamaToolsError, match=r"^cmake is not installed, .* `pip install cmake`"):
        llama_tools.ensure(llama_tools.LIBS)
