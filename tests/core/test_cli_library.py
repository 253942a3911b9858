"""`hearth info` and `hearth models` as a user runs them: a real subprocess, real files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REQUIRED_INFO_KEYS = {
    "architecture",
    "name",
    "parameters",
    "file_type",
    "context_length",
    "block_count",
    "embedding_length",
    "head_count",
    "head_count_kv",
    "chat_template",
    "bos_token",
    "eos_token",
    "size_bytes",
}


def hearth(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        input=stdin,
        timeout=120,
    )


def test_info_json_is_one_object_with_the_documented_keys(gemma_path: Path):
    result = hearth("info", str(gemma_path), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data.keys() >= REQUIRED_INFO_KEYS
    assert data["architecture"] == "gemma3" and data["file_type"] == "Q4_K_M"
    assert data["bos_token"] == "<bos>" and data["chat_template"] is None
    assert "tensors" not in data and data["tensor_count"] == 236


def test_info_text(tiny_model: Path):
    result = hearth("info", str(tiny_model))
    assert result.returncode == 0
    assert "Tiny Llama Test" in result.stdout and "F32" in result.stdout and "context length  2048" in result.stdout


def test_bad_file_exits_2_with_one_line_and_no_traceback(tmp_path: Path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 40)
    too_long = "m" * 300  # over every file system's 255-byte name limit: the OS refuses even to look
    targets = (
        bad,
        tmp_path / "missing.gguf",
        tmp_path / f"{too_long}.gguf",
        tmp_path / f"{too_long}-00001-of-00002.gguf",  # a split part's siblings are looked for first
        tmp_path / too_long / "model.gguf",
    )
    for target in targets:
        result = hearth("info", str(target), "--json")
        assert result.returncode == 2
        assert result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr and "unexpected error" not in result.stderr, result.stderr
    assert "cannot read: File name too long" in result.stderr


def test_models_list_import_and_delete(tiny_model: Path, tmp_path: Path):
    result = hearth("models")
    assert result.returncode == 0 and "No models yet" in result.stdout
    broken = Path(os.environ["HEARTH_HOME"]) / "models" / "broken.gguf"
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_text("<html>this is an error page, not a model</html>")
    src = tmp_path / "new.gguf"
    shutil.copy(tiny_model, src)
    assert hearth("models", "import", str(src)).returncode == 0
    listing = json.loads(hearth("models", "--json").stdout)
    assert sorted(Path(e["path"]).name for e in listing) == ["broken.gguf", "new.gguf"]
    broken_entry = next(e for e in listing if e["error"])
    assert "not a GGUF file" in broken_entry["error"]
    text = hearth("models").stdout
    assert "BROKEN" in text and "Tiny Llama Test" in text and "2 models, 1 broken" in text
    refused = hearth("models", "delete", str(broken.parent / "new.gguf"))
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert hearth("models", "delete", str(broken.parent / "new.gguf"), "--yes").returncode == 0
    assert not (broken.parent / "new.gguf").exists()


def test_models_import_move_and_link(tiny_model: Path, tmp_path: Path):
    models = Path(os.environ["HEARTH_HOME"]) / "models"
    moved, linked = tmp_path / "moved.gguf", tmp_path / "linked.gguf"
    shutil.copy(tiny_model, moved)
    shutil.copy(tiny_model, linked)
    result = hearth("models", "import", "--move", str(moved))
    assert result.returncode == 0 and "Imported (move)" in result.stdout, result.stderr
    assert not moved.exists() and (models / "moved.gguf").is_file()
    result = hearth("models", "import", "--link", str(linked))
    assert result.returncode == 0 and "Imported (link)" in result.stdout, result.stderr
    assert linked.exists() and (models / "linked.gguf").is_symlink()
