"""Fixtures for the GUI tests: the real main window over a temporary home, with a tiny generated model."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from app.core.paths import AppPaths
from app.core.sampling import SamplingSettings
from app.ui import theme
from app.ui.app import HearthApp

EOS = 2  # the tiny model's </s>: banning it makes replies run to max_tokens
MODEL_NAME = "tiny-chat.gguf"


@pytest.fixture(autouse=True)
def _light_theme(qapp: QApplication) -> None:
    theme.apply(qapp, "light")


@pytest.fixture(scope="session")
def chat_model_file(make_tiny_model: Callable[..., Path]) -> Path:
    return make_tiny_model("ui-tiny-chat.gguf", name="Tiny Chat", context_length=4096)


def start_app(qtbot: QtBot, paths: AppPaths, **kwargs: object) -> HearthApp:
    app = HearthApp(paths, **kwargs)  # type: ignore[arg-type]
    # One generation thread: two spinning ggml threads on a busy 2-core CI machine are 10x slower.
    app.settings.set("default_threads", 1)
    qtbot.addWidget(app.window)
    app.window.resize(1100, 760)
    app.window.show()
    app.start()
    qtbot.waitUntil(lambda: app.library.snapshot is not None, timeout=20_000)
    return app


@pytest.fixture
def paths(hearth_home: AppPaths) -> AppPaths:
    return hearth_home.ensure()


@pytest.fixture
def model_path(paths: AppPaths, chat_model_file: Path) -> Path:
    return Path(shutil.copy(chat_model_file, paths.models_dir / MODEL_NAME))


@pytest.fixture
def hearth(qtbot: QtBot, paths: AppPaths, model_path: Path) -> Iterator[HearthApp]:
    app = start_app(qtbot, paths)
    yield app
    app.window.close()
    assert app.engine.violations == 0, "an engine answer was handled off the GUI thread"
    assert app.tasks.violations == 0, "a task callback ran off the GUI thread"


def load(qtbot: QtBot, app: HearthApp, path: Path | None = None) -> None:
    """Load through the picker, as a user would: select, press Load, wait."""
    picker = app.window.picker
    if path is not None:
        picker.select(str(path))
    assert picker.load_button.isEnabled()
    qtbot.mouseClick(picker.load_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: app.engine.model is not None or picker.error.isVisible(), timeout=30_000)
    assert app.engine.model is not None, picker.error.text()


def long_replies(app: HearthApp, tokens: int = 4000) -> None:
    app.session.set_sampling("custom", SamplingSettings(max_tokens=tokens, seed=1, logit_bias=((EOS, -100.0),)))


def short_replies(app: HearthApp, tokens: int = 24, seed: int | None = None) -> None:
    app.session.set_sampling("custom", SamplingSettings(max_tokens=tokens, seed=seed, logit_bias=((EOS, -100.0),)))


def type_and_send(qtbot: QtBot, app: HearthApp, text: str) -> None:
    editor = app.window.composer.editor
    editor.setFocus()
    editor.setPlainText(text)
    QTest.keyClick(editor, Qt.Key.Key_Return)


def send_and_wait(qtbot: QtBot, app: HearthApp, text: str, timeout: int = 30_000) -> None:
    type_and_send(qtbot, app, text)
    assert app.session.generating, "the message was not sent"
    qtbot.waitUntil(lambda: not app.session.generating, timeout=timeout)


def click_action(qtbot: QtBot, app: HearthApp, row: int, action: str) -> None:
    """Click a message button (Copy, Regenerate, Edit, ‹ › ...) where the delegate painted it."""
    view = app.window.chat_view
    view.scrollTo(app.chat_model.index(row))
    qtbot.wait(10)
    geo, origin = view.geometry_of(row)
    rect = next(rect for name, rect in geo.buttons if name == action)
    point = (rect.center() + origin.toPointF()).toPoint()
    QTest.mouseMove(view.viewport(), point)
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=point)
