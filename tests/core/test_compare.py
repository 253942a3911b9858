"""`hearth compare` on two tiny generated models with reference answers: one summary row per model, and
similarities that equal a direct computation with the same embedding model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.core.compare import read_prompts
from app.core.embedder import Embedder
from app.core.errors import ConfigError

PROMPTS = [
    {"prompt": "Name a river.", "reference": "The Danube is a river in Europe."},
    {"prompt": "Say hello.", "reference": "Hello there!"},
    {"prompt": "Count to three.", "system": "Be brief."},
]


def hearth(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args], capture_output=True, text=True, timeout=600, env=os.environ.copy()
    )


def write_prompts(path: Path) -> Path:
    path.write_text("\n".join(json.dumps(p) for p in PROMPTS) + "\n", encoding="utf-8")
    return path


@pytest.mark.slow
def test_compare_two_models_with_references(tmp_path: Path, make_tiny_model, embedding_model_path: Path):
    a = make_tiny_model("compare-a.gguf", name="Model A", seed=1)
    b = make_tiny_model("compare-b.gguf", name="Model B", seed=2)
    prompts = write_prompts(tmp_path / "prompts.jsonl")
    result = hearth(
        "compare", str(a), str(b), "--prompts", str(prompts), "--embed", str(embedding_model_path),
        "--max-tokens", "12", "--ctx", "1024", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [row["model"] for row in data["summary"]] == ["compare-a.gguf", "compare-b.gguf"]
    assert all(row["prompts"] == 3 for row in data["summary"])
    answers = data["answers"]
    assert len(answers) == 6
    with Embedder.open(embedding_model_path) as embedder:
        for answer in answers:
            reference = PROMPTS[answer["index"] - 1].get("reference")
            if reference is None:
                assert answer["similarity"] is None
                continue
            vectors = embedder.embed([answer["text"], reference])
            expected = float(np.dot(vectors[0], vectors[1]))
            assert -1.0 <= answer["similarity"] <= 1.0
            assert answer["similarity"] == pytest.approx(expected, abs=1e-4)
    csv = hearth(
        "compare",
        str(a),
        str(b),
        "--prompts",
        str(prompts),
        "--max-tokens",
        "8",
        "--ctx",
        "1024",
        "--csv",
    )  # fmt: skip  (no embedding model: each model's own mean-pooled vectors)
    assert csv.returncode == 0, csv.stderr
    lines = csv.stdout.strip().splitlines()
    assert lines[0].startswith("model,prompts,mean_tps") and len(lines) == 3
    assert "(mean pooling)" in lines[1]


def test_bad_prompt_files_are_refused_with_the_line(tmp_path: Path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"reference": "no prompt"}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="line 2"):
        read_prompts(bad)
    bad.write_text("not json\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="line 1: not JSON"):
        read_prompts(bad)
    result = hearth("compare", str(bad), str(bad), "--prompts", str(tmp_path / "missing.jsonl"))
    assert result.returncode == 2 and result.stderr.startswith("hearth: ")
