"""The window as one client of the engine host among others: another client's long reply never blocks it,
and a reply written from the window is stored with the same fields as one from `hearth chat`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from PySide6.QtCore import QTimer
from pytestqt.qtbot import QtBot

from app.core.host import wait_for_text
from app.core.messages import ChatMessage
from app.core.paths import AppPaths
from app.core.reply import ReplyRequest
from app.core.sampling import SamplingSettings
from app.core.store import Store
from app.ui.app import HearthApp
from tests.ui.conftest import EOS, load, send_and_wait, short_replies


class StallProbe:
    """A 5 ms timer on the GUI thread: the longest gap between its ticks is the longest the GUI froze."""

    def __init__(self) -> None:
        self.timer = QTimer()
        self.timer.setInterval(5)
        self.timer.timeout.connect(self.tick)
        self.last = time.perf_counter()
        self.worst = 0.0

    def tick(self) -> None:
        now = time.perf_counter()
        self.worst = max(self.worst, now - self.last)
        self.last = now

    def start(self) -> None:
        self.last = time.perf_counter()
        self.timer.start()


def test_another_clients_long_reply_never_blocks_the_window(qtbot: QtBot, hearth: HearthApp) -> None:
    load(qtbot, hearth)
    other = hearth.host.client("local server")
    endless = SamplingSettings(max_tokens=100_000, seed=1, logit_bias=((EOS, -100.0),))
    long_job = other.reply(ReplyRequest((ChatMessage("user", "a very long answer please"),), endless, key="api"))
    probe = StallProbe()
    probe.start()
    short_replies(hearth, 20)
    send_and_wait(qtbot, hearth, "Meanwhile, a short question")  # answered while the other reply streams
    probe.timer.stop()
    assert hearth.chat_model.item(1).finish_reason == "length" and hearth.chat_model.item(1).content
    assert not long_job.done.is_set(), "the other client's reply had to end before the window's could run"
    assert probe.worst < 0.5, f"the GUI thread froze for {probe.worst * 1000:.0f} ms"
    long_job.cancel()
    _, done = wait_for_text(long_job, timeout=30)
    assert done.stats is not None and done.stats.finish_reason == "cancelled"
    assert hearth.chat_model.item(1).finish_reason == "length"  # the window's reply was not touched


def test_window_and_cli_store_replies_with_the_same_fields(
    qtbot: QtBot, hearth: HearthApp, paths: AppPaths, model_path: Path
) -> None:
    load(qtbot, hearth)
    short_replies(hearth, 8, seed=3)
    send_and_wait(qtbot, hearth, "From the window")
    hearth.window.close()
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "app",
            "chat",
            str(model_path),
            "-m",
            "From the CLI",
            "--max-tokens",
            "8",
            "--seed",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )
    assert cli.returncode == 0, cli.stderr
    with Store.open(paths.history_db) as store:
        conversations = store.list_conversations()
        assert len(conversations) == 2
        replies = []
        for conversation in conversations:
            messages = store.messages(conversation.id)
            assert [m.role for m in messages] == ["user", "assistant"]
            replies.append(messages[1])
        window_conv, cli_conv = sorted(conversations, key=lambda c: c.created_at)
    window, cli_reply = sorted(replies, key=lambda m: m.created_at)
    assert set(window.meta) == set(cli_reply.meta) >= {"sampling", "load", "backend"}
    assert window.meta["load"].keys() == cli_reply.meta["load"].keys()
    assert window.meta["load"]["n_ctx"] == cli_reply.meta["load"]["n_ctx"] == 4096
    for field in ("model", "template", "prompt_tokens", "generated_tokens", "finish_reason"):
        assert getattr(window, field) is not None and getattr(cli_reply, field) is not None, field
    assert window_conv.load_settings.keys() == cli_conv.load_settings.keys() and window_conv.load_settings
    assert window_conv.sampling.keys() == cli_conv.sampling.keys()


def test_leaving_a_conversation_saves_its_kv_cache(qtbot: QtBot, hearth: HearthApp) -> None:
    load(qtbot, hearth)
    short_replies(hearth, 8)
    send_and_wait(qtbot, hearth, "Remember the rivers")
    first = hearth.session.conversation_id
    assert hearth.state_cache.files() == []
    hearth.new_chat()  # the user leaves it
    qtbot.waitUntil(lambda: len(hearth.state_cache.files()) == 1, timeout=20_000)
    assert f"conversation-{first}-" in hearth.state_cache.files()[0].name
