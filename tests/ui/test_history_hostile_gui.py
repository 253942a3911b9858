"""The window starts and shows any history it can hold: odd rows and fuzzed imports never stop it."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from pytestqt.qtbot import QtBot

from app.core.errors import StoreError
from app.core.paths import AppPaths
from app.core.settings import Settings
from app.core.store import Store
from app.core.store_export import import_json
from tests.core.test_history_import_hostile import _documents, write
from tests.ui.conftest import start_app


def test_rows_no_calendar_can_show_do_not_stop_the_app(qtbot: QtBot, paths: AppPaths) -> None:
    with Store.open(paths.history_db) as store:
        odd = store.create_conversation(title="From the year zero")
        store.add_message(odd.id, "user", "hello")
        store.add_message(odd.id, "tool", "a tool's answer")
        store.db.execute(
            "UPDATE conversations SET created_at = -62135600400, updated_at = -62135600400 WHERE id = ?", (odd.id,)
        )
        store.db.execute("UPDATE messages SET created_at = 'x', gen_tps = 1e999 WHERE conversation_id = ?", (odd.id,))
        far = store.create_conversation(title="Far future")
        store.db.execute("UPDATE conversations SET updated_at = 1e300 WHERE id = ?", (far.id,))
    Settings(paths.settings_file).set("last_conversation", odd.id)
    app = start_app(qtbot, paths)
    assert app.session.conversation_id == odd.id
    titles = [app.window.sidebar.list.item(r).text() for r in range(app.window.sidebar.list.count())]
    assert "From the year zero" in titles and "Far future" in titles
    assert [i.content for i in app.chat_model.items] == ["hello", "a tool's answer"]
    app.window.grab()
    app.window.close()


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(doc=_documents())
def test_every_accepted_import_opens_in_the_window(qtbot: QtBot, paths: AppPaths, tmp_path: Path, doc) -> None:
    app = _app(qtbot, paths)
    try:
        import_json(app.store, write(tmp_path, doc))
    except StoreError:
        return
    app.refresh_conversations()
    for conversation in app.store.list_conversations(limit=-1):
        app.open_conversation(conversation.id)
        app.window.grab()
    app.window.sidebar.search.setText("a")
    app.window.grab()


_APPS: dict[str, object] = {}


def _app(qtbot: QtBot, paths: AppPaths):  # one window for every example of a run (start-up is the slow part)
    key = str(paths.data_dir)
    if key not in _APPS:
        _APPS.clear()
        _APPS[key] = start_app(qtbot, paths)
    return _APPS[key]
