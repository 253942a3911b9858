"""A huge message never blocks the window: it is laid out as plain text, a bounded part at a time."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont, QTextTable
from PySide6.QtTest import QTest
from pytestqt.qtbot import QtBot

from app.core.paths import AppPaths
from app.core.store import Store
from app.ui import theme
from app.ui.markdown_render import LARGE_MESSAGE_CHARS, MAX_TABLE_ROWS, PLAIN_CHUNK, render
from tests.ui.conftest import start_app


def big_table(size: int = 350 * 1024) -> str:
    rows = ["| id | name | value | note |", "|---|---|---|---|"]
    while sum(len(r) + 1 for r in rows) < size:
        i = len(rows)
        rows.append(f"| {i} | item {i} | {i * 37 % 1000} | some longer note text for row {i} |")
    return "Here is the table:\n\n" + "\n".join(rows)


def test_a_350_kib_table_is_laid_out_as_bounded_plain_text(qapp) -> None:
    text = big_table()
    started = time.perf_counter()
    result = render(text, width=700, theme=theme.current(), font=QFont(), mono=QFont("monospace"))
    height = result.height  # forces the layout
    elapsed = time.perf_counter() - started
    assert result.plain and height > 0
    assert not any(isinstance(f, QTextTable) for f in result.doc.rootFrame().childFrames())
    assert result.doc.characterCount() <= PLAIN_CHUNK + 1 and result.hidden_chars == len(text) - PLAIN_CHUNK
    assert elapsed < 5, f"{elapsed:.1f} s"  # about 0.05 s here; 6-22 s as a Markdown table


def test_small_tables_and_messages_stay_formatted(qapp) -> None:
    small = "\n".join(["| a | b |", "|---|---|"] + [f"| {i} | x |" for i in range(MAX_TABLE_ROWS - 10)])
    result = render(small, width=700, theme=theme.current(), font=QFont(), mono=QFont("monospace"))
    assert not result.plain and any(isinstance(f, QTextTable) for f in result.doc.rootFrame().childFrames())
    prose = "word " * (LARGE_MESSAGE_CHARS // 5 - 10)
    assert not render(prose, width=700, theme=theme.current(), font=QFont(), mono=QFont("monospace")).plain


def test_show_more_reveals_the_rest_part_by_part(qtbot: QtBot, paths: AppPaths) -> None:
    text = big_table()
    with Store.open(paths.history_db) as store:
        conversation = store.create_conversation(title="Big table")
        store.add_message(conversation.id, "user", "Give me the whole table.")
        store.add_message(conversation.id, "assistant", text)
    app = start_app(qtbot, paths)
    app.open_conversation(conversation.id)
    view = app.window.chat_view
    qtbot.waitUntil(lambda: not view._idle_timer.isActive(), timeout=20_000)
    geo, origin = view.geometry_of(1)
    assert geo.rendered is not None and geo.rendered.plain and geo.note is not None
    hidden = geo.rendered.hidden_chars
    assert hidden == len(text) - PLAIN_CHUNK
    rect = next(rect for name, rect in geo.buttons if name == "more")
    view.scrollTo(app.chat_model.index(1))
    geo, origin = view.geometry_of(1)
    rect = next(rect for name, rect in geo.buttons if name == "more")
    point = (rect.center() + origin.toPointF()).toPoint()
    QTest.mouseMove(view.viewport(), point)
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=point)
    geo, _ = view.geometry_of(1)
    assert geo.rendered is not None and geo.rendered.hidden_chars == hidden - PLAIN_CHUNK
    app.session.copy(1)  # Copy takes the whole message, shown or not
    from PySide6.QtGui import QGuiApplication

    assert QGuiApplication.clipboard().text() == text
    app.window.close()
