"""Imported history files never break the app: ranges validated on import, readers robust to odd rows."""

from __future__ import annotations

import contextlib
import io
import json
import math
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.cli import run
from app.core.errors import StoreError
from app.core.paths import AppPaths
from app.core.store import Store
from app.core.store_export import conversation_dict, export_json, export_markdown, import_json

DEEP: Any = 1
for _ in range(60):
    DEEP = [DEEP]


def document(**conversation: Any) -> dict[str, Any]:
    """A valid one-conversation export; keyword arguments replace fields, `message` fields of its message."""
    message_fields = conversation.pop("message", {})
    message = {
        "uuid": str(uuid.uuid4()),
        "parent": None,
        "role": "user",
        "content": "hello",
        "created_at": "2025-01-02T03:04:05.000Z",
        "complete": True,
        "model": "",
        "template": "",
        "active": True,
        "meta": {},
        **message_fields,
    }
    conv = {
        "uuid": str(uuid.uuid4()),
        "title": "A chat",
        "created_at": "2025-01-02T03:04:05.000Z",
        "updated_at": "2025-01-02T03:04:05.000Z",
        "pinned": False,
        "model_path": "",
        "template": "",
        "system_prompt": "",
        "sampling": {},
        "load_settings": {},
        "meta": {},
        "messages": [message],
        **conversation,
    }
    return {"format": "hearth-history", "version": 1, "conversations": [conv]}


def write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / f"import-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps(doc, allow_nan=True), encoding="utf-8")
    return path


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = run(list(args))
    return status, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    ("fields", "pattern"),
    [
        ({"updated_at": "0001-01-01T00:30:00+01:00"}, "out of range"),  # year 0 in UTC
        ({"created_at": "9999-12-31T23:59:59-01:00"}, "out of range"),  # year 10000 in UTC
        ({"created_at": "1969-12-31T23:59:59Z"}, "out of range"),
        ({"message": {"prompt_tokens": 10**30}}, "prompt_tokens"),
        ({"message": {"generated_tokens": -5}}, "generated_tokens"),
        ({"message": {"gen_tps": float("nan")}}, "gen_tps"),
        ({"message": {"ttft_ms": float("inf")}}, "ttft_ms"),
        ({"title": "bad \ud800 surrogate"}, "title"),
        ({"model_path": "/m/\x00evil.gguf"}, "model_path"),
        ({"meta": {"x": 10**400}}, "meta"),
        ({"sampling": {"temperature": float("nan")}}, "sampling"),
        ({"load_settings": {"a": DEEP}}, "deep"),
    ],
)
def test_out_of_range_values_are_refused_with_one_line_and_nothing_changes(
    tmp_path: Path, fields: dict[str, Any], pattern: str
) -> None:
    with Store.open(tmp_path / "h.sqlite3") as store:
        with pytest.raises(StoreError, match=pattern) as info:
            import_json(store, write(tmp_path, document(**fields)))
        assert "\n" not in str(info.value) and "nothing was imported" in str(info.value)
        assert store.list_conversations() == []


def test_the_issue_file_no_longer_breaks_history_commands(hearth_home: AppPaths, tmp_path: Path) -> None:
    path = write(tmp_path, document(updated_at="0001-01-01T00:30:00+01:00"))
    status, _, err = cli("history", "import", str(path))
    assert status == 2 and "out of range" in err
    listing, as_json, as_md = (
        ("history", "list"),
        ("history", "export", "--format", "json"),
        ("history", "export", "--format", "md"),
    )
    for args in (listing, as_json, as_md):
        status, _, err = cli(*args)
        assert status == 0, err


def test_rows_the_app_cannot_show_are_shown_anyway(hearth_home: AppPaths) -> None:
    """A history imported before this fix (or edited by hand): timestamps out of every calendar, text in a
    number column, a NaN speed. Listing, showing and exporting all still work."""
    paths = hearth_home.ensure()
    with Store.open(paths.history_db) as store:
        conv = store.create_conversation(title="Odd")
        message = store.add_message(conv.id, "tool", "a tool's answer")
        store.db.execute(
            "UPDATE conversations SET created_at = -62135600400, updated_at = 1e300, deleted_at = NULL WHERE id = ?",
            (conv.id,),
        )
        store.db.execute(
            "UPDATE messages SET created_at = 'yesterday', gen_tps = 1e999, prompt_tokens = 9223372036854775807 "
            "WHERE id = ?",
            (message.id,),
        )
    for args in (
        ("history", "list"),
        ("history", "show", str(conv.id)),
        ("history", "show", str(conv.id), "--json"),
        ("history", "export", "--format", "json"),
        ("history", "export", "--format", "md"),
    ):
        status, out, err = cli(*args)
        assert status == 0, (args, err)
        assert out


# ---- fuzzing ------------------------------------------------------------------------------------------------

_odd_text = st.sampled_from(["", "\x00", "\ud800", "\x1b[2J", "<img src=/dev/zero>", "é" * 3, "a" * 20_000])
_text = st.one_of(st.text(max_size=20), _odd_text)
_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    _text,
)
_json = st.recursive(
    _leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3), max_leaves=12
)
_times = st.one_of(
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.sampled_from(["2025-01-02T03:04:05Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-12:00", "nope"]),
)
_ints = st.one_of(st.none(), st.integers(min_value=-(2**70), max_value=2**70), st.sampled_from([0, 10, 2**63]))
_floats = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 10**20))


@st.composite
def _documents(draw: st.DrawFn) -> dict[str, Any]:
    def maybe(valid: Any, hostile: st.SearchStrategy[Any]) -> Any:
        return draw(hostile) if draw(st.integers(0, 3)) == 0 else valid

    messages = []
    for index in range(draw(st.integers(0, 4))):
        messages.append(
            {
                "uuid": str(uuid.uuid4()),
                "parent": messages[-1]["uuid"] if messages and draw(st.booleans()) else None,
                "role": maybe(["user", "assistant"][index % 2], st.sampled_from(["system", "tool", "x", ""])),
                "content": maybe("hello", st.one_of(_text, st.just("![x](/dev/zero)"))),
                "created_at": maybe("2025-01-02T03:04:05.000Z", _times),
                "complete": maybe(True, st.booleans()),
                "model": maybe("m.gguf", _text),
                "template": maybe("chatml", _text),
                "prompt_tokens": maybe(12, _ints),
                "generated_tokens": maybe(3, _ints),
                "gen_tps": maybe(10.5, _floats),
                "ttft_ms": maybe(120.0, _floats),
                "finish_reason": maybe("stop", st.one_of(st.none(), _text)),
                "prompt_text": maybe(None, st.one_of(st.none(), _text)),
                "active": maybe(True, st.booleans()),
                "meta": maybe({}, st.one_of(_json, st.fixed_dictionaries({"tool_calls": _json, "name": _json}))),
            }
        )
    conv = {
        "uuid": str(uuid.uuid4()),
        "title": maybe("A chat", _text),
        "created_at": maybe("2025-01-02T03:04:05.000Z", _times),
        "updated_at": maybe("2025-01-02T03:04:05.000Z", _times),
        "pinned": maybe(False, st.booleans()),
        "model_path": maybe("/m/model.gguf", _text),
        "template": maybe("", _text),
        "system_prompt": maybe("", _text),
        "sampling": maybe({}, st.one_of(_json, st.fixed_dictionaries({"temperature": _json, "top_k": _json}))),
        "load_settings": maybe({}, _json),
        "meta": maybe({}, _json),
        "messages": messages,
    }
    return {"format": "hearth-history", "version": 1, "conversations": [conv]}


def accepted_files_work_everywhere(store: Store, tmp_path: Path) -> None:
    """What an accepted import must allow: listing, showing, exporting, exporting again and re-importing."""
    ids = [c.id for c in store.list_conversations(limit=-1)]
    for cid in ids:
        json.dumps(conversation_dict(store, cid), allow_nan=False)
        store.messages(cid)
    export_markdown(store, ids)
    exported = tmp_path / "again.json"
    exported.write_text(export_json(store, ids), encoding="utf-8")
    with Store.open(tmp_path / f"other-{uuid.uuid4().hex[:6]}.sqlite3") as other:
        assert import_json(other, exported) == (len(ids), 0)
    for args in (("history", "list"), ("history", "export", "--format", "md")):
        status, _, err = cli(*args)
        assert status == 0, err


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(doc=_documents())
def test_fuzzed_imports_are_refused_cleanly_or_work_everywhere(hearth_home: AppPaths, tmp_path: Path, doc) -> None:
    paths = hearth_home.ensure()
    path = write(tmp_path, doc)
    with Store.open(paths.history_db) as store:
        try:
            import_json(store, path)
        except StoreError as exc:
            assert "\n" not in str(exc)
            return
        accepted_files_work_everywhere(store, tmp_path)
        for conv in doc["conversations"]:
            for message in conv["messages"]:
                for key in ("gen_tps", "ttft_ms"):
                    value = message[key]
                    assert value is None or math.isfinite(value)
