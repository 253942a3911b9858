"""Export conversations to Markdown or Hearth's JSON; import that JSON back, losslessly or not at all.

The JSON keeps everything: every branch (messages carry their parent's uuid and whether they are the
active child), statistics, settings, timestamps. Import validates the whole file first and writes in one
transaction: a malformed file changes nothing. Conversations already present (same uuid) are skipped, so
importing the same file twice adds nothing twice.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.core.errors import StoreError
from app.core.messages import ROLES
from app.core.store import MAX_TIME, MIN_TIME, Store, clean_count, clean_number, clean_time

FORMAT = "hearth-history"
VERSION = 1
MAX_IMPORT_BYTES = 512 * 1024 * 1024
MAX_TEXT = 10 * 1024 * 1024  # one message
MAX_SHORT = 10_000  # titles, names, paths
MAX_META = 1024 * 1024  # one message's or conversation's extras, as JSON text
MAX_DEPTH = 32  # nesting of extras (sampling, load settings, meta)
MAX_COUNT = 10**12  # token counts
MAX_NUMBER = 1e12  # speeds and times (tokens/s, ms)
MAX_INT = 2**63 - 1  # what SQLite (and most JSON readers) can hold


def _iso(seconds: Any) -> str:
    """A stored time as ISO 8601 UTC; a time outside what Hearth imports is written as the nearest end."""
    moment = datetime.fromtimestamp(clean_time(seconds), UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _seconds(text: str) -> float:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # no offset: read as UTC, whatever this machine's zone
    return moment.timestamp()


# ---- export ------------------------------------------------------------------------------------------------


def conversation_dict(store: Store, conversation_id: int) -> dict[str, Any]:
    conv = store.conversation(conversation_id)
    rows = store.db.execute(
        "SELECT m.id, m.uuid, p.uuid, m.role, m.content, m.created_at, m.complete, m.model, m.template, "
        "m.prompt_tokens, m.generated_tokens, m.gen_tps, m.ttft_ms, m.finish_reason, m.prompt_text, "
        "CASE WHEN m.parent_id IS NULL THEN c.active_root_id = m.id ELSE p.active_child_id = m.id END, m.meta_json "
        "FROM messages m JOIN conversations c ON c.id = m.conversation_id "
        "LEFT JOIN messages p ON p.id = m.parent_id WHERE m.conversation_id = ? ORDER BY m.id",
        (conversation_id,),
    ).fetchall()
    messages = [
        {
            "uuid": r[1],
            "parent": r[2],
            "role": r[3],
            "content": r[4],
            "created_at": _iso(r[5]),
            "complete": bool(r[6]),
            "model": r[7],
            "template": r[8],
            "prompt_tokens": clean_count(r[9]),
            "generated_tokens": clean_count(r[10]),
            "gen_tps": clean_number(r[11]),
            "ttft_ms": clean_number(r[12]),
            "finish_reason": r[13],
            "prompt_text": r[14],
            "active": bool(r[15]),
            "meta": _meta_of(r[16]),
        }
        for r in rows
    ]
    return {
        "uuid": conv.uuid,
        "title": conv.title,
        "created_at": _iso(conv.created_at),
        "updated_at": _iso(conv.updated_at),
        "pinned": conv.pinned,
        "model_path": conv.model_path,
        "template": conv.template,
        "system_prompt": conv.system_prompt,
        "sampling": conv.sampling,
        "load_settings": conv.load_settings,
        "meta": conv.meta,
        "messages": messages,
    }


def _meta_of(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def export_json(store: Store, conversation_ids: Iterable[int]) -> str:
    document = {
        "format": FORMAT,
        "version": VERSION,
        "exported_at": _iso(time.time()),
        "conversations": [conversation_dict(store, cid) for cid in conversation_ids],
    }
    return json.dumps(document, ensure_ascii=False, indent=1)


def export_markdown(store: Store, conversation_ids: Iterable[int]) -> str:
    """The visible (active) path of each conversation, readable anywhere."""
    parts = []
    for cid in conversation_ids:
        conv = store.conversation(cid)
        lines = [
            f"# {conv.title or 'Untitled chat'}",
            "",
            f"*{_iso(conv.created_at)[:16].replace('T', ' ')} UTC"
            + (f" · {Path(conv.model_path).name}" if conv.model_path else "")
            + "*",
            "",
        ]
        if conv.system_prompt:
            lines += ["> **System:** " + conv.system_prompt.replace("\n", "\n> "), ""]
        for message in store.messages(cid):
            who = {"user": "You", "assistant": "Assistant", "system": "System"}.get(message.role, "Tool")
            if message.role == "tool":
                who = f"Tool result ({message.meta.get('name') or 'tool'})"
            note = "" if message.complete else " *(unfinished)*"
            branch = (
                f" *(version {message.sibling_index} of {message.sibling_count})*" if message.sibling_count > 1 else ""
            )
            lines += [f"**{who}:**{branch}{note}", ""]
            if message.content.strip():
                lines += [message.content.rstrip(), ""]
            for call in message.to_chat().tool_calls:  # an assistant turn's tool calls
                lines += [f"*Called `{call.name}` with `{call.arguments}`*", ""]
            lines += _sources_lines(message.meta.get("sources"))
        parts.append("\n".join(lines).rstrip() + "\n")
    return "\n---\n\n".join(parts)


def _sources_lines(sources: Any) -> list[str]:
    """A reply's document sources (the [n] it cites) as a Markdown list; [] when it has none."""
    if not isinstance(sources, list) or not sources:
        return []
    from app.core.documents.retrieval import sources_from_meta

    try:
        labels = [source.label() for source in sources_from_meta(sources)]
    except (TypeError, ValueError, AttributeError):  # an imported file's malformed sources: shown as absent
        return []
    return ["*Sources:*", "", *(f"- {label}" for label in labels), ""]


# ---- import ------------------------------------------------------------------------------------------------


def import_json(store: Store, path: Path) -> tuple[int, int]:
    """Import a Hearth JSON export; returns (conversations added, conversations skipped as present)."""
    document = _load(path)
    conversations = _validate(document)
    known = {r[0] for r in store.db.execute("SELECT uuid FROM conversations")}
    added = skipped = 0
    with store._write() as db:
        for conv in conversations:
            if conv["uuid"] in known:
                skipped += 1
                continue
            _insert_conversation(db, conv)
            known.add(conv["uuid"])
            added += 1
    return added, skipped


def _load(path: Path) -> Any:
    try:
        size = path.stat().st_size
        if size > MAX_IMPORT_BYTES:
            raise StoreError(f"{path.name} is {size} bytes; Hearth imports files up to {MAX_IMPORT_BYTES} bytes")
        raw = path.read_bytes()
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StoreError(f"{path.name} is not UTF-8 text (byte {exc.start}); nothing was imported") from None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise StoreError(f"{path.name} is not valid JSON ({exc}); nothing was imported") from None


class _Invalid(Exception):
    pass


def _field(
    obj: dict[str, Any],
    key: str,
    kind: type | tuple[type, ...],
    where: str,
    *,
    optional: bool = False,
    limit: int = MAX_SHORT,
) -> Any:
    if key not in obj:
        if optional:
            return None
        raise _Invalid(f"{where}: missing {key!r}")
    value = obj[key]
    if value is None and optional:
        return None
    if isinstance(value, bool) and kind is not bool and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise _Invalid(f"{where}.{key}: expected {getattr(kind, '__name__', kind)}, got a boolean")
    if not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise _Invalid(f"{where}.{key}: expected {expected}, got {type(value).__name__}")
    if isinstance(value, str):
        if len(value) > limit:
            raise _Invalid(f"{where}.{key}: {len(value)} characters is too long (limit {limit})")
        _check_text(value, f"{where}.{key}", allow_nul=limit > MAX_SHORT)
    return value


def _check_text(value: str, where: str, *, allow_nul: bool = False) -> None:
    """Text SQLite can store and every part of Hearth can show: UTF-8 (no lone surrogates); short fields
    (names, paths) without NUL, which file APIs refuse."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _Invalid(f"{where}: not valid Unicode text (a lone surrogate)") from None
    if not allow_nul and "\x00" in value:
        raise _Invalid(f"{where}: contains a NUL character")


def _count(obj: dict[str, Any], key: str, where: str) -> int | None:
    value = _field(obj, key, int, where, optional=True)
    if value is not None and not 0 <= value <= MAX_COUNT:
        raise _Invalid(f"{where}.{key}: {_short(value)} is out of range (0 to {MAX_COUNT:,})")
    return value


def _number(obj: dict[str, Any], key: str, where: str) -> float | None:
    value = _field(obj, key, (int, float), where, optional=True)
    if value is None:
        return None
    if isinstance(value, int) and abs(value) > MAX_NUMBER:
        raise _Invalid(f"{where}.{key}: {_short(value)} is out of range (0 to {MAX_NUMBER:g})")
    number = float(value)
    if not math.isfinite(number) or not 0 <= number <= MAX_NUMBER:
        raise _Invalid(f"{where}.{key}: {_short(value)} is out of range (0 to {MAX_NUMBER:g})")
    return number


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, int) else str(value) if value.bit_length() < 200 else "a huge number"
    return text if len(text) <= 40 else text[:37] + "..."


def _extras(obj: dict[str, Any], key: str, where: str, *, optional: bool = False) -> dict[str, Any]:
    """An object of extras (sampling, load settings, meta): JSON values only, bounded depth and size."""
    value = _field(obj, key, dict, where, optional=optional) or {}
    _check_json(value, f"{where}.{key}", 0)
    if len(json.dumps(value, ensure_ascii=False)) > MAX_META:
        raise _Invalid(f"{where}.{key}: more than {MAX_META} characters")
    return value


def _check_json(value: Any, where: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise _Invalid(f"{where}: nested too deep (more than {MAX_DEPTH} levels)")
    if isinstance(value, dict):
        for name, item in value.items():
            _check_text(name, where)
            _check_json(item, f"{where}.{name[:40]}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, f"{where}[{index}]", depth + 1)
    elif isinstance(value, str):
        _check_text(value, where, allow_nul=True)
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int):
        if abs(value) > MAX_INT:
            raise _Invalid(f"{where}: {_short(value)} is too large")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _Invalid(f"{where}: {value!r} is not a finite number")
    else:
        raise _Invalid(f"{where}: unexpected {type(value).__name__}")


def _time(obj: dict[str, Any], key: str, where: str) -> float:
    text = _field(obj, key, str, where, limit=64)
    try:
        seconds = _seconds(text)
    except (ValueError, OverflowError):
        raise _Invalid(f"{where}.{key}: {text!r} is not an ISO 8601 time") from None
    if not MIN_TIME <= seconds < MAX_TIME:
        raise _Invalid(f"{where}.{key}: {text!r} is out of range (1970-01-02 to 2999-12-31)")
    return seconds


def _uuid(obj: dict[str, Any], key: str, where: str, optional: bool = False) -> str | None:
    value = _field(obj, key, str, where, optional=optional)
    if value is None:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise _Invalid(f"{where}.{key}: {value!r} is not a uuid") from None


def _validate(document: Any) -> list[dict[str, Any]]:
    try:
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise _Invalid(f'not a Hearth history export (no "format": "{FORMAT}")')
        if document.get("version") != VERSION:
            raise _Invalid(f"export version {document.get('version')!r} is not supported (expected {VERSION})")
        items = _field(document, "conversations", list, "file")
        return [_conversation(item, f"conversations[{i}]") for i, item in enumerate(items)]
    except _Invalid as exc:
        raise StoreError(f"cannot import: {exc}; nothing was imported") from None


def _conversation(item: Any, where: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise _Invalid(f"{where}: expected an object")
    conv = {
        "uuid": _uuid(item, "uuid", where),
        "title": _field(item, "title", str, where),
        "created_at": _time(item, "created_at", where),
        "updated_at": _time(item, "updated_at", where),
        "pinned": _field(item, "pinned", bool, where),
        "model_path": _field(item, "model_path", str, where),
        "template": _field(item, "template", str, where),
        "system_prompt": _field(item, "system_prompt", str, where, limit=MAX_TEXT),
        "sampling": _extras(item, "sampling", where),
        "load_settings": _extras(item, "load_settings", where),
        "meta": _extras(item, "meta", where, optional=True),
    }
    seen: dict[str, str] = {}
    messages = []
    for index, raw in enumerate(_field(item, "messages", list, where)):
        place = f"{where}.messages[{index}]"
        if not isinstance(raw, dict):
            raise _Invalid(f"{place}: expected an object")
        message = {
            "uuid": _uuid(raw, "uuid", place),
            "parent": _uuid(raw, "parent", place, optional=True),
            "role": _field(raw, "role", str, place),
            "content": _field(raw, "content", str, place, limit=MAX_TEXT),
            "created_at": _time(raw, "created_at", place),
            "complete": _field(raw, "complete", bool, place),
            "model": _field(raw, "model", str, place),
            "template": _field(raw, "template", str, place),
            "prompt_tokens": _count(raw, "prompt_tokens", place),
            "generated_tokens": _count(raw, "generated_tokens", place),
            "gen_tps": _number(raw, "gen_tps", place),
            "ttft_ms": _number(raw, "ttft_ms", place),
            "finish_reason": _field(raw, "finish_reason", str, place, optional=True),
            "prompt_text": _field(raw, "prompt_text", str, place, optional=True, limit=MAX_TEXT),
            "active": _field(raw, "active", bool, place),
            "meta": _extras(raw, "meta", place, optional=True),
        }
        if message["role"] not in ROLES:
            raise _Invalid(f"{place}.role: expected one of {', '.join(ROLES)}, got {message['role']!r}")
        if message["uuid"] in seen:
            raise _Invalid(f"{place}.uuid: duplicate message {message['uuid']}")
        if message["parent"] is not None and message["parent"] not in seen:
            raise _Invalid(f"{place}.parent: {message['parent']} is not an earlier message of this conversation")
        seen[message["uuid"]] = message["role"]
        messages.append(message)
    conv["messages"] = messages
    return conv


def _insert_conversation(db: Any, conv: dict[str, Any]) -> None:
    cursor = db.execute(
        "INSERT INTO conversations (uuid, title, created_at, updated_at, pinned, model_path, template, "
        "system_prompt, sampling_json, load_json, meta_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            conv["uuid"],
            conv["title"],
            conv["created_at"],
            conv["updated_at"],
            int(conv["pinned"]),
            conv["model_path"],
            conv["template"],
            conv["system_prompt"],
            json.dumps(conv["sampling"]),
            json.dumps(conv["load_settings"]),
            json.dumps(conv["meta"], ensure_ascii=False),
        ),
    )
    conversation_id = int(cursor.lastrowid)
    ids: dict[str, int] = {}
    for m in conv["messages"]:
        if db.execute("SELECT 1 FROM messages WHERE uuid = ?", (m["uuid"],)).fetchone():
            raise StoreError(
                f"cannot import: message {m['uuid']} already exists in another conversation; nothing was imported"
            )
        parent_id = ids.get(m["parent"]) if m["parent"] else None
        cursor = db.execute(
            "INSERT INTO messages (uuid, conversation_id, parent_id, role, content, created_at, complete, model, "
            "template, prompt_tokens, generated_tokens, gen_tps, ttft_ms, finish_reason, prompt_text, meta_json) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                m["uuid"],
                conversation_id,
                parent_id,
                m["role"],
                m["content"],
                m["created_at"],
                int(m["complete"]),
                m["model"],
                m["template"],
                m["prompt_tokens"],
                m["generated_tokens"],
                m["gen_tps"],
                m["ttft_ms"],
                m["finish_reason"],
                m["prompt_text"],
                json.dumps(m["meta"], ensure_ascii=False),
            ),
        )
        ids[m["uuid"]] = int(cursor.lastrowid)
        if m["active"]:
            Store._activate(db, conversation_id, parent_id, ids[m["uuid"]])
