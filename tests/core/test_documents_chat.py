"""Documents in a chat, through the engine host with the real engine: the sources block reaches the
prompt of a local model and of another backend alike, within the model's budget; the reply's meta keeps
the sources and the retrieval (scores, ranks) in the history and its exports; `hearth chat --docs` prints
the answer and then its sources."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core.documents.attached import (
    AttachedDocuments,
    DocumentRetriever,
    document_budget,
    retrieval_report,
)
from app.core.documents.index import DocumentIndex
from app.core.documents.indexer import index_collection
from app.core.documents.retrieval import INSTRUCTION, sources_from_meta
from app.core.engine import GenerationStats, TextChunk
from app.core.host import EngineHost, LoadDone, wait_for_text
from app.core.load_config import LoadConfig
from app.core.messages import ChatMessage
from app.core.paths import AppPaths
from app.core.reply import PreparedReply, ReplyRequest, ReplyStarted, create_conversation
from app.core.sampling import SamplingSettings
from app.core.store import Store
from app.core.store_export import export_json, export_markdown
from tests.support import documents as docs

SHORT = SamplingSettings(temperature=0.0, max_tokens=8, logit_bias=((2, -100.0),))
N_CTX = 4096  # the tiny test model spends about a token per character
QUESTION = "What is the secret code word for page 3?"


@pytest.fixture
def library(tmp_path: Path, hearth_home: AppPaths) -> tuple[Path, docs.Known]:
    """A collection "papers" indexed (keywords only) in the test home's document index."""
    folder = tmp_path / "papers"
    folder.mkdir()
    known = docs.write_pdf(folder / "report.pdf", pages=6)[2]
    docs.write_markdown(folder / "climate.md")
    for i in range(12):  # enough text that the collection does not fit a small context whole
        docs.write_text(folder / f"notes-{i}.txt", f"Harbour{i}", paragraphs=6)
    index = DocumentIndex(hearth_home.ensure().documents_db)
    index.add_collection("papers", [folder])
    index_collection(index, "papers")
    index.close()
    return folder, known


@pytest.fixture
def host(hearth_home: AppPaths, tiny_model: Path):
    host = EngineHost(store_path=hearth_home.history_db, documents=DocumentRetriever(hearth_home.documents_db))
    done = host.client("loader").load(tiny_model, LoadConfig(n_ctx=N_CTX, n_threads=1)).wait(60)
    assert isinstance(done, LoadDone) and done.error is None, done
    yield host
    assert host.shutdown(30)


def test_a_local_reply_gets_the_sources_and_keeps_them(host: EngineHost, library, hearth_home: AppPaths):
    _, known = library
    attached = AttachedDocuments(collections=("papers",))
    with Store.open(hearth_home.history_db) as store:
        conversation_id = create_conversation(store, model_path="tiny", load_settings={},
                                              meta={"documents": attached.to_meta()})  # fmt: skip
        user = store.add_message(conversation_id, "user", QUESTION)
    seen: list[object] = []
    request = ReplyRequest((ChatMessage("user", QUESTION),), SHORT, conversation_id=conversation_id,
                           parent_id=user.id, documents=attached)  # fmt: skip
    job = host.client("gui", on_event=seen.append).reply(request)
    _, done = wait_for_text(job, timeout=60)
    assert done.error is None, done.error
    started = next(e for e in seen if isinstance(e, ReplyStarted))
    sources = sources_from_meta(started.meta["sources"])
    assert sources, started.meta["retrieval"]
    assert [s.number for s in sources] == list(range(1, len(sources) + 1))
    best = sources[0]
    assert known.sentence in best.text and best.page == 3 and best.file_name == "report.pdf"
    # The block is in the prompt the model read, before the question, and within the budget.
    assert INSTRUCTION in started.prompt_text and "[1] report.pdf, page 3, lines" in started.prompt_text
    assert started.prompt_text.index(INSTRUCTION) < started.prompt_text.index(f"Question: {QUESTION}")
    assert started.prompt_tokens <= N_CTX - SHORT.max_tokens
    retrieval = started.meta["retrieval"]
    assert retrieval["mode"] == "bm25" and "no embedding model" in retrieval["note"]
    assert retrieval["retrieved"][0]["bm25_rank"] == 1 and retrieval["retrieved"][0]["number"] == 1
    report = retrieval_report(started.meta)
    assert f"Documents searched for: {QUESTION}" in report and "keyword (BM25) only" in report
    assert "   1  [1]" in report and "report.pdf, page 3, lines" in report

    with Store.open(hearth_home.history_db) as store:  # the history keeps them, and its exports carry them
        reply = store.message(done.message_id)
        assert reply.meta["sources"] == started.meta["sources"] and reply.meta["retrieval"] == retrieval
        assert store.messages(conversation_id)[0].content == QUESTION  # the stored question stays as typed
        exported = json.loads(export_json(store, [conversation_id]))["conversations"][0]
        markdown = export_markdown(store, [conversation_id])
    assert exported["meta"]["documents"] == {"collections": ["papers"], "files": []}
    stored = next(m for m in exported["messages"] if m["role"] == "assistant")
    assert sources_from_meta(stored["meta"]["sources"]) == sources
    assert f"[1] report.pdf, page 3, lines {best.line_start}-{best.line_end}" in markdown


def test_single_files_are_indexed_on_first_use_and_small_ones_go_in_whole(host: EngineHost, library):
    folder, _ = library
    attached = AttachedDocuments(files=(str(folder / "climate.md"),))
    seen: list[object] = []
    request = ReplyRequest((ChatMessage("user", "How fast are the glaciers retreating?"),), SHORT, documents=attached)
    _, done = wait_for_text(host.client("x", on_event=seen.append).reply(request), timeout=60)
    started = next(e for e in seen if isinstance(e, ReplyStarted))
    assert done.error is None and started.meta["retrieval"]["mode"] == "whole"
    assert "[1] climate.md, whole file" in started.prompt_text and "Sea level rises." in started.prompt_text

    gone = AttachedDocuments(collections=("removed",), files=(str(folder / "gone.md"),))
    seen.clear()
    request = ReplyRequest((ChatMessage("user", "anything?"),), SHORT, documents=gone)
    _, done = wait_for_text(host.client("x", on_event=seen.append).reply(request), timeout=60)
    started = next(e for e in seen if isinstance(e, ReplyStarted))
    assert done.error is None and started.meta["sources"] == [] and INSTRUCTION not in started.prompt_text
    note = started.meta["retrieval"]["note"]
    assert "the collection 'removed' no longer exists" in note and "gone.md is no longer there" in note


class _RecordingServer:
    """A chat backend that answers every request with one citation (the shape of a remote server's
    backend: it receives messages, not a rendered prompt) and keeps what it was asked."""

    name = "server"

    def __init__(self) -> None:
        self.asked: list[ReplyRequest] = []

    def prepare(self, request: ReplyRequest) -> PreparedReply:
        self.asked.append(request)
        body = json.dumps({"messages": [{"role": m.role, "content": m.content} for m in request.messages]})
        return PreparedReply(body, "", "", "the server applies its own template", None, 0, 0, "server-model", body)

    def stream(self, prepared: PreparedReply, cancel: threading.Event) -> Iterator[object]:
        yield TextChunk("It is in the report [1].")
        yield GenerationStats("stop", 0, 0, 6, 1.0, 1.0, 1.0, 1.0)


def test_another_backend_gets_the_same_sources_block(host: EngineHost, library):
    server = _RecordingServer()
    host.register_backend("server", server)
    attached = AttachedDocuments(collections=("papers",))
    local_seen: list[object] = []
    remote_seen: list[object] = []
    local = ReplyRequest((ChatMessage("user", QUESTION),), SHORT, documents=attached)
    wait_for_text(host.client("a", on_event=local_seen.append).reply(local), timeout=60)
    remote = ReplyRequest((ChatMessage("user", QUESTION),), SHORT, documents=attached, backend="server")
    text, done = wait_for_text(host.client("b", on_event=remote_seen.append).reply(remote), timeout=60)
    assert done.error is None and text == "It is in the report [1]."
    sent = server.asked[0].messages[-1].content
    assert sent.startswith(INSTRUCTION) and sent.endswith(f"Question: {QUESTION}")
    local_sources = next(e for e in local_seen if isinstance(e, ReplyStarted)).meta["sources"]
    remote_sources = next(e for e in remote_seen if isinstance(e, ReplyStarted)).meta["sources"]
    assert remote_sources[0] == local_sources[0]  # the best passage is the same whichever backend answers


def test_the_budget_leaves_room_for_the_conversation():
    def count(text: str) -> int:
        return len(text.split())

    short = [ChatMessage("system", "Be brief."), ChatMessage("user", "one two three")]
    assert document_budget(short, 100, 1000, count) == 900 - 2 - 3 - 64
    long_history = [short[0], *[ChatMessage("user" if i % 2 else "assistant", "word " * 200) for i in range(9)],
                    ChatMessage("user", "one two three")]  # fmt: skip
    assert document_budget(long_history, 100, 1000, count) == (900 - 2 - 3 - 64) // 2  # old turns make room
    assert document_budget(short, 600, 100, count) == 0  # no room at all: no sources


def test_attached_documents_read_from_conversation_meta():
    attached = AttachedDocuments.from_meta({"collections": ["a", "a", 3], "files": ["/x/y.md"]})
    assert attached == AttachedDocuments(("a",), ("/x/y.md",)) and attached
    assert not AttachedDocuments.from_meta("junk") and not AttachedDocuments.from_meta({"collections": "a"})
    assert attached.with_collection("b").without("a").collections == ("b",)
    assert AttachedDocuments.from_meta(attached.to_meta()) == attached


@pytest.mark.slow
def test_hearth_chat_with_docs_prints_the_answer_then_the_sources(library, gemma_path: Path):
    _, known = library
    result = subprocess.run(
        [sys.executable, "-m", "app", "chat", str(gemma_path), "--docs", "papers", "-m", QUESTION,
         "--ctx", "2048", "--max-tokens", "40", "--seed", "1", "--temperature", "0"],
        capture_output=True, text=True, timeout=300, env=os.environ.copy(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    answer, _, sources = result.stdout.partition("\nSources:\n")
    assert answer.strip() and sources, result.stdout
    first = sources.splitlines()[0]
    assert first.startswith("[1] report.pdf, page 3, lines ") and first.endswith(f"({known.path})")
    assert "keyword search only (BM25)" in result.stderr
    unknown = subprocess.run([sys.executable, "-m", "app", "chat", str(gemma_path), "--docs", "nope", "-m", "x"],
                             capture_output=True, text=True, timeout=120, env=os.environ.copy())  # fmt: skip
    assert unknown.returncode == 2 and "no document collection or file named 'nope'" in unknown.stderr
