"""Documents end to end on real files written at test time: extraction positions, incremental indexing,
unreadable files, a kill during indexing, hybrid search with a real embedding model, citations, history."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fpdf import FPDF

from app.core.documents.chunking import chunk_blocks
from app.core.documents.extract import ExtractionError, extract
from app.core.documents.index import DocumentIndex, rrf
from app.core.documents.indexer import IndexControl, IndexProgress, index_collection
from app.core.documents.retrieval import (
    Source,
    build_context,
    cited_sources,
    find_citations,
    highlight_spans,
    sources_from_meta,
)
from app.core.documents.terms import fts_query
from app.core.embedder import Embedder
from app.core.errors import DocumentsError
from app.core.paths import AppPaths
from app.core.store import ReplyStats, Store
from tests.support import documents as docs

REPO = Path(__file__).resolve().parents[2]


def words(text: str) -> int:
    """A token counter for budgets: about one token per word (the tests need a counter, not a tokenizer)."""
    return len(text.split())


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, dict[str, docs.Known]]:
    folder = tmp_path / "corpus"
    folder.mkdir()
    known = {
        "pdf": docs.write_pdf(folder / "report.pdf")[2],  # page 3
        "docx": docs.write_docx(folder / "manual.docx")[0],
        "html": docs.write_html(folder / "bread.html")[0],
        "markdown": docs.write_markdown(folder / "climate.md")[0],
        "code": docs.write_code(folder / "geometry.py")[0],
    }
    docs.write_text(folder / "notes.txt", "Lighthouse")
    return folder, known


@pytest.fixture
def index(hearth_home: AppPaths):
    opened = DocumentIndex(hearth_home.ensure().documents_db)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def embedder(embedding_model_path: Path):
    with Embedder.open(embedding_model_path, threads=2) as opened:
        yield opened


# ---- extraction and chunk positions ---------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["pdf", "docx", "html", "markdown", "code"])
def test_a_known_sentence_keeps_its_page_and_line(corpus, kind: str):
    _, known = corpus
    fact = known[kind]
    chunks = chunk_blocks(extract(fact.path).blocks)
    holding = [c for c in chunks if fact.sentence.strip() in c.text]
    assert len(holding) == 1, [c.text for c in chunks]
    chunk = holding[0]
    assert chunk.page == fact.page
    assert chunk.line_start <= fact.line <= chunk.line_end
    if kind in ("pdf", "markdown", "code"):  # these formats' chunk lines are the file's lines, one to one
        assert chunk.line_start + chunk.text.splitlines().index(fact.sentence) == fact.line


def test_structure_decides_the_chunks(corpus):
    folder, _ = corpus
    markdown = chunk_blocks(extract(folder / "climate.md").blocks)
    assert [c.heading for c in markdown] == [
        "Climate notes",
        "Climate notes > Glaciers",
        "Climate notes > Glaciers",  # the fenced code block is a chunk of its own
        "Climate notes > Oceans",
    ]
    assert markdown[2].text.startswith("```python") and (markdown[2].line_start, markdown[2].line_end) == (9, 12)
    html = extract(folder / "bread.html")
    assert "never indexed" not in " ".join(b.text for b in html.blocks)  # scripts and styles are not text
    assert [b.kind for b in html.blocks][-1] == "code"
    code = chunk_blocks(extract(folder / "geometry.py").blocks)
    assert [c.heading for c in code] == ["", "def circle_area(radius)", "class Parser"]
    pdf = extract(folder / "report.pdf")
    assert pdf.pages == 4
    assert {c.page for c in chunk_blocks(pdf.blocks)} == {1, 2, 3, 4}  # no chunk spans two pages


def test_long_paragraphs_split_at_line_and_sentence_ends():
    from app.core.documents.extract import text_blocks

    lines = [f"Sentence {i} is here. Another one follows it closely." for i in range(80)]
    one_line = " ".join(lines)
    chunks = chunk_blocks(text_blocks("\n".join(lines) + "\n\n" + one_line + "\n"), target=500, maximum=700)
    assert all(len(c.text) <= 700 for c in chunks)
    first = [c for c in chunks if c.line_start <= 80]
    assert first[0].line_start == 1 and first[-1].line_end == 80
    assert all(c.text.endswith(("closely.", "it")) or c.line_start == 82 for c in chunks)
    assert [c for c in chunks if c.line_start == 82 == c.line_end]  # the long line, cut at sentence ends


def test_unreadable_files_raise_extraction_errors(tmp_path: Path):
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7\n" + os.urandom(2000))
    with pytest.raises(ExtractionError, match="not a readable PDF"):
        extract(broken)
    fake = tmp_path / "fake.docx"
    fake.write_text("plain text pretending")
    with pytest.raises(ExtractionError, match="not a readable Word"):
        extract(fake)
    binary = tmp_path / "data.txt"
    binary.write_bytes(b"\x00\x01\x02" * 100)
    with pytest.raises(ExtractionError, match="binary"):
        extract(binary)


# ---- the index ------------------------------------------------------------------------------------------
def test_indexing_reports_and_skips_unreadable_files(corpus, index: DocumentIndex):
    folder, _ = corpus
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj garbage\n%%EOF")
    (folder / "gone.md").symlink_to(folder / "missing-target.md")  # listed, but cannot be opened
    (folder / "ignored.xyz").write_text("not a document type")
    (folder / ".hidden.md").write_text("# hidden files stay out")
    scan = FPDF()  # a page with a drawing and no text layer, as a scanned page has
    scan.add_page()
    scan.rect(10, 10, 50, 50)
    scan.output(str(folder / "scanned.pdf"))
    index.add_collection("mine", [folder, folder / "absent.pdf"])
    report = index_collection(index, "mine")
    failed = dict(report.failed)
    assert set(failed) == {str(folder / name) for name in ("broken.pdf", "gone.md", "absent.pdf", "scanned.pdf")}
    assert failed[str(folder / "scanned.pdf")].startswith("no text found (a scanned PDF?")
    assert "not a readable PDF" in failed[str(folder / "broken.pdf")]
    assert "cannot be read" in failed[str(folder / "gone.md")]
    assert failed[str(folder / "absent.pdf")] == "not found"
    assert report.added == 6  # pdf, docx, html, md, py, txt: the rest went on
    listed = index.collections()[0]
    assert (listed.files, listed.failed) == (6, 3)
    assert dict(index.failures("mine"))[str(folder / "broken.pdf")].startswith("not a readable PDF")


def test_only_the_changed_file_is_indexed_again(corpus, index: DocumentIndex):
    folder, _ = corpus
    index.add_collection("mine", [folder])
    first = index_collection(index, "mine")
    assert first.added == 6
    seen: list[str] = []
    unchanged = index_collection(index, "mine", progress=lambda p: seen.append(p.phase))
    assert (unchanged.added, unchanged.updated, unchanged.unchanged, unchanged.chunks) == (0, 0, 6, 0)
    assert seen[0] == "scanning" and seen[-1] == "done"

    os.utime(folder / "climate.md")  # touched, same content: no re-read
    time.sleep(0.01)
    notes = folder / "notes.txt"
    notes.write_text(notes.read_text() + "\nA new paragraph about foghorns.\n")
    (folder / "bread.html").unlink()
    ids_before = {p: r.id for p, r in index.files("mine").items()}
    again = index_collection(index, "mine")
    assert (again.added, again.updated, again.removed, again.unchanged) == (0, 1, 1, 4)
    ids_after = {p: r.id for p, r in index.files("mine").items()}
    assert str(folder / "bread.html") not in ids_after
    changed = [p for p in ids_after if ids_after[p] != ids_before[p]]
    assert changed == [str(notes)]
    assert index.search("foghorns", ["mine"]).hits[0].path == str(notes)
    assert not index.search("sourdough starter", ["mine"]).hits  # the deleted file left the index


def test_search_without_a_model_is_bm25_and_says_so(corpus, index: DocumentIndex):
    folder, known = corpus
    index.add_collection("mine", [folder])
    index_collection(index, "mine")
    result = index.search("What is the secret code word for page 3?", ["mine"], k=3)
    assert result.mode == "bm25" and "no embedding model" in result.note
    top = result.hits[0]
    assert (top.path, top.page) == (str(known["pdf"].path), 3)
    assert top.bm25 is not None and top.bm25_rank == 1 and top.vector is None


def test_hybrid_search_with_a_real_embedding_model(corpus, index: DocumentIndex, embedder: Embedder):
    folder, known = corpus
    index.add_collection("mine", [folder])
    report = index_collection(index, "mine", embedder=embedder)
    assert report.embedded == report.chunks > 0
    from app.core.documents.retrieval import search

    # no word in common with the passage: only the vectors can find it
    result = search(index, "What do insects do to stay warm while it is freezing?", ["mine"], k=3, embedder=embedder)
    assert result.mode == "hybrid" and result.note == ""
    winter = next(h for h in result.hits if known["docx"].sentence in h.text)
    assert winter.vector_rank == 1 and winter.vector > 0.3 and winter.bm25 is None
    assert [h.rank for h in result.hits] == [1, 2, 3]
    assert result.hits[0].score >= result.hits[1].score


def test_chunks_indexed_without_a_model_get_vectors_later(corpus, index: DocumentIndex, embedder: Embedder):
    folder, _ = corpus
    index.add_collection("mine", [folder])
    first = index_collection(index, "mine")
    assert first.embedded == 0
    later = index_collection(index, "mine", embedder=embedder)
    assert later.unchanged == 6 and later.embedded == first.chunks
    assert index.collections()[0].embedded == first.chunks


def test_cancel_and_pause_stop_between_files(corpus, index: DocumentIndex):
    folder, _ = corpus
    index.add_collection("mine", [folder])
    control = IndexControl()
    progress: list[IndexProgress] = []

    def on_progress(p: IndexProgress) -> None:
        progress.append(p)
        if p.phase == "reading" and p.done == 1:
            control.cancel()

    report = index_collection(index, "mine", progress=on_progress, control=control)
    assert report.cancelled and report.added == 2
    assert index.collections()[0].indexed_at is None  # an unfinished run is not "indexed"
    paused = IndexControl()
    paused.pause()
    import threading

    result: list[object] = []
    worker = threading.Thread(target=lambda: result.append(index_collection(index, "mine", control=paused)))
    worker.start()
    time.sleep(0.3)
    assert worker.is_alive() and not result  # waiting while paused
    paused.resume()
    worker.join(timeout=60)
    assert result and result[0].added == 4 and result[0].unchanged == 2


def test_the_index_survives_a_kill_during_indexing(tmp_path: Path, hearth_home: AppPaths):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(120):
        docs.write_text(folder / f"note-{i:03}.txt", f"Topic{i}", paragraphs=40)
    db = hearth_home.ensure().documents_db
    index = DocumentIndex(db)
    index.add_collection("big", [folder])
    index.close()
    script = textwrap.dedent(f"""
        from pathlib import Path
        from app.core.documents.index import DocumentIndex
        from app.core.documents.indexer import index_collection
        index_collection(DocumentIndex(Path({str(db)!r})), "big")
        print("finished")
    """)
    child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.05)
        reader = DocumentIndex(db)
        done = len(reader.files("big"))
        reader.close()
        if done >= 10:
            break
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert 10 <= done < 120, "the kill must land in the middle of indexing"

    reopened = DocumentIndex(db)
    database = reopened.connection()
    assert database.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    database.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('integrity-check')")  # raises if out of sync
    for record in reopened.files("big").values():  # every file there is whole: all its 40 paragraphs
        assert record.chunks > 0
    finished = index_collection(reopened, "big")
    assert finished.added + finished.unchanged == 120 and not finished.failed
    assert reopened.collections()[0].files == 120
    hits = reopened.search("Topic119 note 39", ["big"], k=1).hits
    assert hits and hits[0].path.endswith("note-119.txt")
    reopened.close()


def test_collections_are_added_listed_and_removed(corpus, index: DocumentIndex):
    folder, _ = corpus
    index.add_collection("one", [folder / "climate.md"])
    index.add_collection("one", [folder / "notes.txt"])
    index.add_collection("two", [folder])
    assert index.collection_names() == ["one", "two"]
    assert [p.name for p in index.sources("one")] == ["climate.md", "notes.txt"]
    index_collection(index, "one")
    index_collection(index, "two")
    index.remove_collection("one")
    with pytest.raises(DocumentsError, match="no document collection named 'one'"):
        index.search("glacier", ["one"])
    assert index.search("glacier", ["two"]).hits  # the other collection's copy of the file is untouched
    remaining = index.connection().execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
    assert remaining == index.collections()[0].chunks
    with pytest.raises(DocumentsError):
        index.add_collection("  ", [folder])


def test_each_thread_uses_its_own_connection(corpus, index: DocumentIndex):
    import threading

    folder, _ = corpus
    index.add_collection("mine", [folder])
    index_collection(index, "mine")
    found: list[str] = []
    thread = threading.Thread(target=lambda: found.extend(h.path for h in index.search("glacier", ["mine"]).hits))
    thread.start()
    thread.join(timeout=30)
    assert found and found[0].endswith("climate.md")
    assert len(index._connections) == 2


def test_keyword_query_is_safe_and_fusion_is_by_rank():
    assert fts_query('What does "NEAR(" mean AND OR -x?') == '"near" OR "mean" OR "x"'
    assert fts_query("the of and") == '"the" OR "of" OR "and"'
    fused = rrf([[1, 2, 3], [3, 1]], k=60)
    assert max(fused, key=fused.get) == 1 and fused[3] > fused[2]


# ---- what the chat pipeline uses ------------------------------------------------------------------------
def test_sources_block_and_citations_point_at_the_right_passage(corpus, index: DocumentIndex, embedder: Embedder):
    folder, known = corpus
    for i in range(30):  # enough text that the documents do not fit the budget whole
        docs.write_text(folder / f"extra-{i}.txt", f"Harbour{i}", paragraphs=6)
    index.add_collection("mine", [folder])
    index_collection(index, "mine", embedder=embedder)
    context = build_context(index, "What is the code word on page 3 of the report?", collections=["mine"],
                            budget_tokens=400, count_tokens=words, embedder=embedder)  # fmt: skip
    assert context.mode == "hybrid"
    assert context.prompt.startswith("Answer using the numbered sources below. Cite")
    assert words(context.prompt) <= 400
    assert [s.number for s in context.sources] == list(range(1, len(context.sources) + 1))
    pdf = next(s for s in context.sources if known["pdf"].sentence in s.text)
    assert pdf.page == 3 and pdf.location.startswith("page 3, lines ")
    assert f"[{pdf.number}] report.pdf, page 3, lines" in context.prompt
    assert {s.number for s in context.retrieved} >= {s.number for s in context.sources}
    assert all(s.bm25_rank or s.vector_rank for s in context.retrieved)

    reply = f"The word is {known['pdf'].sentence.split()[-6]} [{pdf.number}]; see also [99] and [link](https://x)."
    citations = find_citations(reply, context.sources)
    assert [(c.number, c.source) for c in citations] == [(pdf.number, pdf), (99, None)]
    assert reply[citations[0].start : citations[0].end] == f"[{pdf.number}]"
    assert cited_sources(reply, context.sources) == [pdf]
    assert [c.number for c in find_citations("both [1, 2] and [2-3]", context.sources)] == [1, 2, 2, 3]
    spans = highlight_spans("secret code word", pdf.text)
    assert {pdf.text[a:b].lower() for a, b in spans} == {"secret", "code", "word"}


def test_small_documents_go_in_whole(corpus, index: DocumentIndex):
    folder, _ = corpus
    name = index.file_collection(folder / "climate.md")
    assert name not in index.collection_names()  # attached single files are not listed as collections
    index_collection(index, name)
    context = build_context(index, "glaciers?", files=[folder / "climate.md"], budget_tokens=2000, count_tokens=words)
    assert context.mode == "whole"
    assert len(context.sources) == 1 and context.sources[0].whole_document
    assert "Sea level rises." in context.prompt and "[1] climate.md, whole file" in context.prompt
    budget = words(context.prompt) - 1  # one token short of the whole file: the best passages instead
    tight = build_context(index, "glaciers?", files=[folder / "climate.md"], budget_tokens=budget, count_tokens=words)
    assert tight.mode == "bm25" and tight.sources and words(tight.prompt) <= budget
    assert "left out to fit the context" in tight.note
    nothing = build_context(index, "anything", budget_tokens=100, count_tokens=words)
    assert nothing.mode == "none" and nothing.prompt == ""


def test_the_history_keeps_the_sources(corpus, index: DocumentIndex, hearth_home: AppPaths):
    folder, _ = corpus
    index.add_collection("mine", [folder])
    index_collection(index, "mine")
    context = build_context(index, "glacier retreat", collections=["mine"], budget_tokens=60, count_tokens=words)
    assert context.sources
    store = Store.open(hearth_home.history_db)
    conversation = store.create_conversation(title="docs")
    store.add_message(conversation.id, "user", "glacier retreat")
    writer = store.start_reply(conversation.id, meta={"sources": context.meta()})
    writer.append("It retreated four kilometres [1].")
    writer.finish(ReplyStats(finish_reason="stop"))
    store.close()
    reopened = Store.open(hearth_home.history_db)
    reply = reopened.messages(conversation.id)[-1]
    restored = sources_from_meta(reply.meta["sources"])
    assert restored == context.sources
    assert isinstance(restored[0], Source) and restored[0].bm25 == context.sources[0].bm25
    assert cited_sources(reply.content, restored)[0].text == context.sources[0].text
    reopened.close()
