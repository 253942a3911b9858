"""`hearth assistants` and `hearth prompts` as a user runs them: list, show, import, export, and bad files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import run
from app.core.assistants import AssistantLibrary
from app.core.paths import AppPaths


def hearth(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = run(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def test_assistants_list_show_export_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    status, out, _ = hearth(capsys, "assistants", "list")
    assert status == 0
    assert [line.split("  ")[0] for line in out.splitlines()[:4]] == [
        "Translator",
        "Summariser",
        "Text to JSON",
        "Classifier",
    ]
    status, out, _ = hearth(capsys, "assistants", "show", "translator")
    assert status == 0 and "{{target language}}  (default 'English')" in out and "Precise: temperature 0.2" in out
    status, out, _ = hearth(capsys, "assistants", "list", "--json")
    assert [a["builtin"] for a in json.loads(out)] == [True] * 4

    exported = tmp_path / "classifier.json"
    status, _, err = hearth(capsys, "assistants", "export", "Classifier", "-o", str(exported))
    assert status == 0 and f"Exported to {exported}" in err
    data = json.loads(exported.read_text())
    data["name"] = "Spam filter"
    data["defaults"] = {"categories": "spam, not spam"}
    exported.write_text(json.dumps(data))
    status, out, _ = hearth(capsys, "assistants", "import", str(exported))
    assert status == 0 and out.strip() == "Imported 'Spam filter'."
    status, out, _ = hearth(capsys, "assistants", "show", "spam filter", "--json")
    shown = json.loads(out)
    assert shown["defaults"] == {"categories": "spam, not spam"} and shown["reply_format"]["kind"] == "json_schema"
    status, out, _ = hearth(capsys, "assistants", "export", "Spam filter")
    assert json.loads(out)["name"] == "Spam filter"


def test_bad_assistant_input_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "X", "sampling": {"top_p": 3}}')
    status, _, err = hearth(capsys, "assistants", "import", str(bad))
    assert status == 2 and err == "hearth: bad.json: top_p must be between 0 and 1; got 3\n"
    status, _, err = hearth(capsys, "assistants", "show", "Nobody")
    assert status == 2 and err.startswith("hearth: no assistant named 'Nobody'; there are: Translator")


def test_broken_assistant_file_is_reported_and_kept(capsys: pytest.CaptureFixture[str], hearth_home: AppPaths):
    folder = hearth_home.assistants_dir
    folder.mkdir(parents=True)
    (folder / "mine-1.json").write_text("{", encoding="utf-8")
    status, out, err = hearth(capsys, "assistants", "list")
    assert status == 0 and "Translator" in out
    assert "warning: assistant file mine-1.json is unusable (not valid JSON (line 1, column 2" in err
    assert [p.name.startswith("mine-1.json.broken-") for p in folder.iterdir()] == [True]
    assert AssistantLibrary.default(hearth_home).problems == []  # moved aside once, then quiet


def test_prompts_list_show_export_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    status, out, _ = hearth(capsys, "prompts", "list")
    assert status == 0 and out.splitlines()[0].startswith("Translate") and "[language, text]" in out
    status, out, _ = hearth(
        capsys, "prompts", "show", "Summarise", "--var", "text=Long text.", "--var", "length=a line"
    )
    assert status == 0 and out.startswith("Summarise the following text in a line.") and out.endswith("Long text.\n")
    status, _, err = hearth(capsys, "prompts", "show", "Summarise")
    assert status == 0
    status, _, err = hearth(capsys, "prompts", "show", "Summarise", "--var", "length=x")
    assert status == 2 and err == "hearth: fill in {{text}}: it has no value and no default\n"

    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps([{"name": "Haiku", "text": "A haiku about {{topic}}", "defaults": {"topic": "tea"}}]))
    status, out, _ = hearth(capsys, "prompts", "import", str(mine))
    assert status == 0 and out.strip() == "Imported 1 prompt: Haiku"
    status, out, _ = hearth(capsys, "prompts", "export")
    document = json.loads(out)
    assert [p["name"] for p in document["prompts"]] == ["Haiku"]
    exported = tmp_path / "two.json"
    status, _, _ = hearth(capsys, "prompts", "export", "Haiku", "Translate", "-o", str(exported))
    assert [p["name"] for p in json.loads(exported.read_text())["prompts"]] == ["Haiku", "Translate"]
    status, out, _ = hearth(capsys, "prompts", "import", str(exported))
    assert out.strip() == "Imported 2 prompts: Haiku (2), Translate (2)"


def test_prompts_import_refuses_a_bad_file_whole(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"prompts": [{"name": "fine", "text": "ok"}, {"name": "", "text": "x"}]}))
    status, _, err = hearth(capsys, "prompts", "import", str(bad))
    assert status == 2 and err.startswith("hearth: bad.json: prompt 2: a prompt needs a one-line name")
    status, _, err = hearth(capsys, "prompts", "export")
    assert status == 2 and "no prompts of your own" in err  # the good entry was not saved either


def test_commands_work_as_a_subprocess(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "app", "assistants", "show", "Text to JSON"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=120,
    )
    assert result.returncode == 0 and '"required": [' in result.stdout
