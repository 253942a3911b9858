"""No command prints a control sequence it read from a file, the Hub or the history (--json aside)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

from app.cli import run
from app.cli.terminal import safe
from app.core.paths import AppPaths
from app.core.store import Store

EVIL = "Evil\x1b]0;pwned\x07\x1b[2J\x9b31m\u202e"


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = run(list(args))
    return status, out.getvalue(), err.getvalue()


def assert_clean(text: str) -> None:
    assert not any(ch in text for ch in "\x1b\x07\x9b\u202e"), repr(text[:300])


def test_safe_shows_controls_and_keeps_lines() -> None:
    assert safe("a\tb\nc\x1b[2Jd\r\x00\u202e") == "a\tb\nc\\x1b[2Jd\\x0d\\x00\\u202e"
    assert safe("plain é ✓") == "plain é ✓"


def test_info_and_models_print_a_hostile_model_name_safely(
    hearth_home: AppPaths, make_tiny_model: Callable[..., Path]
) -> None:
    paths = hearth_home.ensure()
    model = Path(shutil.copy(make_tiny_model("cli-evil.gguf", name=EVIL), paths.models_dir / "evil.gguf"))
    for args in (("info", str(model)), ("models",)):
        status, out, err = cli(*args)
        assert status == 0, err
        assert "Evil\\x1b]0;pwned\\x07" in out
        assert_clean(out + err)
    status, out, _ = cli("info", str(model), "--json")
    assert status == 0 and json.loads(out)["name"] == EVIL  # --json: exact, escaped by JSON itself
    status, out, _ = cli("models", "--json")
    assert json.loads(out)[0]["info"]["name"] == EVIL


def test_errors_naming_a_hostile_file_are_safe(tmp_path: Path) -> None:
    path = tmp_path / f"{EVIL}.gguf"
    path.write_bytes(b"not a gguf at all, just text")
    status, out, err = cli("info", str(path))
    assert status == 2 and err.count("\n") == 1
    assert_clean(out + err)


def test_history_commands_print_hostile_titles_and_replies_safely(hearth_home: AppPaths) -> None:
    paths = hearth_home.ensure()
    with Store.open(paths.history_db) as store:
        conv = store.create_conversation(title=f"Title {EVIL}")
        store.add_message(conv.id, "user", f"question {EVIL}")
    for args in (("history", "list"), ("history", "show", str(conv.id)), ("history", "search", "question")):
        status, out, err = cli(*args)
        assert status == 0, err
        assert "Evil" in out
        assert_clean(out + err)
    status, out, _ = cli("history", "export", "--format", "md")  # data for a pipe: byte-exact
    assert status == 0 and EVIL in out
