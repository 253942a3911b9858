"""Documents in the window, driven as a user would: the Documents window (collections, indexing with
progress, pause and cancel, unreadable files), attaching by drop and from the chat settings panel, a reply
that carries its sources, citations that open the right passage (also after a restart), Show prompt's
retrieval table, and the embedding model offered from Discover. Real widgets offscreen, real files, the
real index, the real tiny model, the stand-in Hub on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QObject, QPointF, Qt, QUrl, Slot
from PySide6.QtGui import QDesktopServices, QDragEnterEvent, QDropEvent, QTextCharFormat
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QFileDialog, QInputDialog, QPlainTextEdit, QToolButton
from pytestqt.qtbot import QtBot

from app.core.documents.attached import AttachedDocuments
from app.core.documents.index import DocumentIndex
from app.core.documents.indexer import index_collection
from app.core.documents.retrieval import build_context
from app.core.paths import AppPaths
from app.core.settings import Settings
from app.core.store import Store
from app.ui.app import HearthApp
from app.ui.documents_controller import EMBEDDING_QUANT, EMBEDDING_REPO
from app.ui.source_view import SourceDialog
from tests.support import documents as docs
from tests.support.fake_hub import FakeFile, FakeHub, FakeRepo
from tests.ui.conftest import load, send_and_wait, short_replies, start_app

SHOTS = Path(__file__).resolve().parents[2] / ".test-cache" / "screenshots"


def words(text: str) -> int:
    return len(text.split())


@pytest.fixture
def papers(tmp_path: Path) -> tuple[Path, docs.Known]:
    folder = tmp_path / "papers"
    folder.mkdir()
    known = docs.write_pdf(folder / "report.pdf", pages=4)[2]
    docs.write_markdown(folder / "climate.md")
    docs.write_code(folder / "geometry.py")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.5 nonsense")
    for i in range(6):
        docs.write_text(folder / f"notes-{i}.txt", f"Harbour{i}", paragraphs=6)
    return folder, known


class _OpenedUrls(QObject):
    """Where QDesktopServices sends file: URLs during a test (nothing is really opened)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[QUrl] = []

    @Slot(QUrl)
    def opened(self, url: QUrl) -> None:
        self.urls.append(url)


@pytest.fixture
def opened_urls() -> Iterator[_OpenedUrls]:
    catcher = _OpenedUrls()
    QDesktopServices.setUrlHandler("file", catcher, "opened")
    yield catcher
    QDesktopServices.unsetUrlHandler("file")


def save_shot(widget: object, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    widget.grab().save(str(SHOTS / f"{name}.png"))  # type: ignore[attr-defined]


def drop_files(widget: object, paths: list[Path]) -> bool:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    args = (QPointF(30, 30).toPoint(), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton)
    enter = QDragEnterEvent(*args, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, enter)  # type: ignore[arg-type]
    drop = QDropEvent(
        QPointF(30, 30), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier
    )
    QApplication.sendEvent(widget, drop)  # type: ignore[arg-type]
    return enter.isAccepted()


def citation_point(app: HearthApp, row: int, number: int) -> QPointF:
    """Where the citation link [number] of a row is painted, in viewport coordinates."""
    view = app.window.chat_view
    view.scrollTo(app.chat_model.index(row))
    QTest.qWait(20)
    geo, origin = view.geometry_of(row)
    doc = geo.rendered.doc  # type: ignore[union-attr]
    block = doc.begin()
    while block.isValid():
        fragments = block.begin()
        while not fragments.atEnd():
            fragment = fragments.fragment()
            if fragment.charFormat().anchorHref() == f"hearth-source:{number}":
                offset = fragment.position() - block.position() + 1
                line = block.layout().lineForTextPosition(offset)
                x = line.cursorToX(offset)
                x = x[0] if isinstance(x, tuple) else x
                top = doc.documentLayout().blockBoundingRect(block).top() + line.y() + line.height() / 2
                return QPointF(origin) + geo.content + QPointF(x, top)
            fragments += 1
        block = block.next()
    raise AssertionError(f"no link to source {number} in row {row}")


def click_citation(qtbot: QtBot, app: HearthApp, row: int, number: int) -> SourceDialog:
    point = citation_point(app, row, number).toPoint()
    viewport = app.window.chat_view.viewport()
    QTest.mouseMove(viewport, point)
    qtbot.mouseClick(viewport, Qt.MouseButton.LeftButton, pos=point)
    qtbot.waitUntil(lambda: app.source_dialog is not None and app.source_dialog.isVisible(), timeout=5_000)
    return app.source_dialog


def seed_cited_answer(paths: AppPaths, folder: Path, model: Path) -> tuple[int, str]:
    """A conversation whose reply cites real sources (retrieved from the real index), as a chat saves it."""
    index = DocumentIndex(paths.documents_db)
    index.add_collection("papers", [folder])
    index_collection(index, "papers")
    question = "What is the secret code word for page 3 of the report?"
    context = build_context(index, question, collections=["papers"], budget_tokens=300, count_tokens=words)
    index.close()
    page3 = next(s for s in context.sources if s.page == 3)
    word = page3.text.split("is ")[1].split()[0]
    reply = (
        f"The secret code word for page 3 is **{word}** [{page3.number}]. The report's other pages have words "
        f"of their own [1-2], and code stays as written: `items[{page3.number}]`."
    )
    store = Store.open(paths.history_db)
    conversation = store.create_conversation(title="Secret words", model_path=str(model),
                                             meta={"documents": {"collections": ["papers"], "files": []}})  # fmt: skip
    store.add_message(conversation.id, "user", question)
    store.add_message(conversation.id, "assistant", reply, meta={"sources": context.meta()})
    store.close()
    return conversation.id, word


def test_citations_open_the_passage_and_survive_a_restart(
    qtbot: QtBot, paths: AppPaths, model_path: Path, papers, opened_urls: _OpenedUrls
):
    folder, known = papers
    conversation_id, word = seed_cited_answer(paths, folder, model_path)
    Settings(paths.settings_file).set("last_conversation", conversation_id)
    app = start_app(qtbot, paths)
    qtbot.waitUntil(lambda: app.chat_model.rowCount() == 2, timeout=10_000)
    reply = app.chat_model.item(1)
    assert reply.sources, "the reply's sources come back from the history"
    number = next(s["number"] for s in reply.sources if s["page"] == 3)
    dialog = click_citation(qtbot, app, 1, number)
    assert dialog.source.file_name == "report.pdf" and dialog.source.page == 3
    assert dialog.where.text().startswith("Page 3, lines ") and known.sentence in dialog.passage.toPlainText()
    assert {w.lower() for w in dialog.highlighted} >= {"secret", "code", "word", "page"}
    qtbot.waitUntil(dialog.open_button.isEnabled, timeout=10_000)  # the index confirmed it read this file
    save_shot(dialog, "source-dialog")
    qtbot.mouseClick(dialog.open_button, Qt.MouseButton.LeftButton)
    assert [u.toLocalFile() for u in opened_urls.urls] == [str(known.path)]
    dialog.close()
    save_shot(app.window, "cited-answer")
    app.window.close()
    app.shutdown()

    again = start_app(qtbot, paths)  # the same conversation after a restart: the links still work
    qtbot.waitUntil(lambda: again.chat_model.rowCount() == 2, timeout=10_000)
    dialog = click_citation(qtbot, again, 1, number)
    assert dialog.source.page == 3 and word in dialog.passage.toPlainText()
    with pytest.raises(AssertionError):
        citation_point(again, 1, 99)  # numbers with no source are no links
    again.window.close()


def test_a_source_hearth_did_not_index_is_never_opened(qtbot: QtBot, hearth: HearthApp, paths: AppPaths, tmp_path):
    stranger = tmp_path / "elsewhere.txt"
    stranger.write_text("Not indexed by Hearth.")
    store = Store.open(paths.history_db)
    conversation = store.create_conversation(title="Imported")
    store.add_message(conversation.id, "user", "Where?")
    fake = {"number": 1, "path": str(stranger), "kind": "text", "page": None, "line_start": 1, "line_end": 1,
            "heading": "", "text": "Not indexed by Hearth."}  # fmt: skip
    store.add_message(conversation.id, "assistant", "Here [1].", meta={"sources": [fake]})
    store.close()
    hearth.open_conversation(conversation.id)
    qtbot.waitUntil(lambda: hearth.chat_model.rowCount() == 2)
    dialog = click_citation(qtbot, hearth, 1, 1)
    qtbot.waitUntil(lambda: "has not indexed" in dialog.open_button.toolTip(), timeout=10_000)
    assert not dialog.open_button.isEnabled()


def test_documents_window_indexes_pauses_cancels_and_lists_unreadable_files(
    qtbot: QtBot, hearth: HearthApp, papers, monkeypatch: pytest.MonkeyPatch
):
    folder, _ = papers
    (folder / "more").mkdir()
    for i in range(60):  # a run long enough to pause and cancel
        docs.write_text(folder / "more" / f"extra-{i:02}.txt", f"Lantern{i}", paragraphs=40)
    window = hearth.open_documents()
    assert window.title.text() == "No collections yet" and not window.offer_button.isHidden()
    monkeypatch.setattr(QInputDialog, "getText", lambda *a, **k: ("Papers", True))
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(folder))
    seen: list[object] = []
    hearth.documents.progress.connect(lambda name, progress: seen.append(progress))
    qtbot.mouseClick(window.new_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: hearth.documents.busy == "Papers", timeout=10_000)
    qtbot.waitUntil(lambda: window.progress.maximum() > 0 and window.progress.value() >= 2, timeout=30_000)
    assert window.progress.isVisible() and window.pause_button.isVisible()
    qtbot.mouseClick(window.pause_button, Qt.MouseButton.LeftButton)
    assert window.pause_button.text() == "Resume" and "(paused)" in window.progress_label.text()
    qtbot.wait(300)
    count = len(seen)
    qtbot.wait(700)
    assert len(seen) <= count + 1  # at most the file at hand finishes while paused
    save_shot(window, "documents-window-paused")
    qtbot.mouseClick(window.pause_button, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(window.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: hearth.documents.busy == "", timeout=30_000)
    assert "cancelled" in window.progress_label.text()
    partial = window.selected().info.files  # type: ignore[union-attr]
    assert 0 < partial < 69

    qtbot.mouseClick(window.index_button, Qt.MouseButton.LeftButton)  # the rest, then everything is there
    qtbot.waitUntil(lambda: hearth.documents.busy == "Papers", timeout=10_000)
    qtbot.waitUntil(lambda: hearth.documents.busy == "", timeout=120_000)
    view = window.selected()
    assert view is not None and view.info.files == 69 and view.info.failed == 1
    assert window.failures.topLevelItemCount() == 1
    broken = window.failures.topLevelItem(0)
    assert broken.text(0) == "broken.pdf" and "not a readable PDF" in broken.text(1)
    assert [window.sources.item(i).text() for i in range(window.sources.count())] == [str(folder)]
    assert "69 files" in window.summary.text() and "keyword search only" in window.summary.text()
    save_shot(window, "documents-window")

    # Attach it to the chat from the window; the chat settings panel shows it; the chat keeps it.
    qtbot.mouseClick(window.attach_button, Qt.MouseButton.LeftButton)
    assert hearth.session.documents.collections == ("Papers",)
    section = hearth.window.settings_panel.documents
    assert section.empty.isHidden() and section.findChild(QToolButton, "detach:Papers") is not None

    monkeypatch.setattr("app.ui.documents_window.QMessageBox.question", lambda *a, **k: 16384)  # Yes
    qtbot.mouseClick(window.remove_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.list.count() == 0, timeout=10_000)
    assert (folder / "report.pdf").exists()  # removing a collection never touches the files


def test_a_dropped_file_is_attached_and_the_reply_carries_its_sources(
    qtbot: QtBot, hearth: HearthApp, papers, paths: AppPaths
):
    folder, _ = papers
    load(qtbot, hearth)
    short_replies(hearth, tokens=6, seed=1)
    assert drop_files(hearth.window.chat_view.viewport(), [folder / "climate.md"]) or drop_files(
        hearth.window.welcome, [folder / "climate.md"]
    )
    qtbot.waitUntil(lambda: hearth.session.documents.files == (str(folder / "climate.md"),), timeout=20_000)
    section = hearth.window.settings_panel.documents
    assert section.findChild(QToolButton, f"detach:{folder / 'climate.md'}") is not None
    (folder / "model.gguf").write_bytes(b"GGUF")
    drop_files(hearth.window.composer.editor.viewport(), [folder / "model.gguf"])  # not a document: not attached
    qtbot.wait(200)
    assert hearth.session.documents.files == (str(folder / "climate.md"),)

    send_and_wait(qtbot, hearth, "How fast are the glaciers retreating?")
    reply = hearth.chat_model.item(1)
    assert reply.sources and reply.sources[0]["path"] == str(folder / "climate.md")
    conversation = hearth.store.conversation(hearth.session.conversation_id)
    assert AttachedDocuments.from_meta(conversation.meta["documents"]).files == (str(folder / "climate.md"),)
    stored = hearth.store.messages(hearth.session.conversation_id)[-1]
    assert stored.meta["sources"] == list(reply.sources) and stored.meta["retrieval"]["mode"] == "whole"
    view = hearth.session.prompt_of(1)
    assert view is not None and "[1] climate.md, whole file" in view.text
    assert "Retrieved from the attached documents" in view.text and "documents given whole" in view.text
    assert hearth.store.messages(hearth.session.conversation_id)[0].content == "How fast are the glaciers retreating?"

    hearth.new_chat()  # a new chat starts with nothing attached; the old one keeps its file
    assert not hearth.session.documents and not section.empty.isHidden()
    hearth.open_conversation(conversation.id)
    assert hearth.session.documents.files == (str(folder / "climate.md"),)
    detach = section.findChild(QToolButton, f"detach:{folder / 'climate.md'}")
    qtbot.mouseClick(detach, Qt.MouseButton.LeftButton)
    assert not hearth.session.documents
    assert not AttachedDocuments.from_meta(hearth.store.conversation(conversation.id).meta.get("documents"))


def test_the_embedding_model_is_offered_from_discover(
    qtbot: QtBot, paths: AppPaths, model_path: Path, embedding_model_path: Path
):
    file_name = f"bge-small-en-v1.5-{EMBEDDING_QUANT.lower()}.gguf"
    repo = FakeRepo(EMBEDDING_REPO, {file_name: FakeFile(embedding_model_path.read_bytes())}, license="mit")
    with FakeHub([repo]) as hub:
        Settings(paths.settings_file).set("hub_endpoint", hub.url)
        app = start_app(qtbot, paths)
        section = app.window.settings_panel.documents
        assert section.offer_button.isVisible() and "keywords only" in section.mode.text()
        qtbot.mouseClick(section.offer_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: bool(app.settings.get("embedding_model")), timeout=60_000)
        landed = Path(app.settings.get("embedding_model"))
        assert landed.name == file_name and landed.is_file() and landed.is_relative_to(paths.models_dir)
        assert not section.offer_button.isVisible() and "hybrid" in section.mode.text()
        app.window.close()


def test_passage_highlight_marks_only_the_question_words(qtbot: QtBot):
    from app.core.documents.retrieval import Source

    source = Source(2, "/x/manual.pdf", "pdf", 4, 10, 14, "Setup > Linux", "Install the index first, then index again.")
    dialog = SourceDialog(source, "How do I index?", None)
    qtbot.addWidget(dialog)
    assert dialog.highlighted == ["index", "index"]
    assert dialog.where.text() == "Page 4, lines 10-14 · Setup > Linux"
    editor: QPlainTextEdit = dialog.passage
    cursor = editor.textCursor()
    cursor.setPosition(source.text.index("index") + 1)
    fmt: QTextCharFormat = cursor.charFormat()
    assert fmt.fontWeight() == 700
    assert not dialog.open_button.isEnabled()  # until the index says it read the file
