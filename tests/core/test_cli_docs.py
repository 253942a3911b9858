"""`hearth docs` as a user runs it: a real subprocess over real files and the real embedding model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support import documents as docs


def hearth(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", *args], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=300)  # fmt: skip


def test_add_index_search_list_remove(tmp_path: Path, embedding_model_path: Path, tiny_model: Path):
    folder = tmp_path / "papers"
    folder.mkdir()
    known = docs.write_pdf(folder / "report.pdf")[1]  # page 2
    docs.write_markdown(folder / "climate.md")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.5 nonsense")

    added = hearth("docs", "add", "papers", str(folder))
    assert added.returncode == 0 and "hearth docs index 'papers'" in added.stdout
    indexed = hearth("docs", "index", "papers")
    assert indexed.returncode == 0, indexed.stderr
    assert "2 added" in indexed.stdout and "keyword (BM25) search only" in indexed.stdout
    assert f"could not read {folder / 'broken.pdf'}: not a readable PDF" in indexed.stdout

    found = hearth("docs", "search", "papers", "secret code word for page 2", "-k", "2", "--json")
    assert found.returncode == 0, found.stderr
    result = json.loads(found.stdout)
    assert result["mode"] == "bm25" and "no embedding model" in result["note"]
    top = result["hits"][0]
    assert (top["file"], top["page"]) == (str(known.path), 2)
    assert top["line_start"] <= known.line <= top["line_end"] and known.sentence in top["text"]
    assert set(top) >= {"bm25", "bm25_rank", "vector", "vector_rank", "score", "rank", "heading"}

    refused = hearth("docs", "model", str(tiny_model))
    assert refused.returncode == 2 and "not an embedding model" in refused.stderr
    chosen = hearth("docs", "model", str(embedding_model_path))
    assert chosen.returncode == 0 and "384 dimensions, mean pooling" in chosen.stdout
    again = hearth("docs", "index", "papers")
    assert "0 added" in again.stdout and "2 unchanged" in again.stdout and " 0 vectors" not in again.stdout
    hybrid = json.loads(hearth("docs", "search", "papers", "How fast did the ice melt?", "--json").stdout)
    assert hybrid["mode"] == "hybrid" and hybrid["hits"][0]["file"].endswith("climate.md")
    assert hybrid["hits"][0]["vector"] is not None
    text = hearth("docs", "search", "papers", "glacier")
    assert "climate.md, line 7 (Climate notes > Glaciers)" in text.stdout and "vector" in text.stdout

    listed = json.loads(hearth("docs", "list", "--json").stdout)
    assert listed[0]["name"] == "papers" and listed[0]["files"] == 2 and listed[0]["failed"] == 1
    assert listed[0]["embedded"] == listed[0]["chunks"] > 0
    assert hearth("docs", "remove", "papers").returncode == 0
    missing = hearth("docs", "search", "papers", "x")
    assert missing.returncode == 2 and "no document collection named 'papers'" in missing.stderr
    assert hearth("docs", "add", "x", str(tmp_path / "nowhere")).returncode == 2
    assert (folder / "report.pdf").exists()  # removing a collection never touches the files
