"""The main window: layout, navigation and keyboard shortcuts only (app.py connects it to the core)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QByteArray, Qt, Signal
from PySide6.QtGui import QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QHBoxLayout,
    QMainWindow,
    QMenu,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app import APP_NAME
from app.ui.chat_model import ChatModel
from app.ui.chat_view import ChatView
from app.ui.compare_page import ComparePage
from app.ui.composer import Composer
from app.ui.hub_page import HubPage
from app.ui.model_picker import ModelPicker
from app.ui.models_page import ModelsPage, gguf_paths
from app.ui.settings_panel import SettingsPanel
from app.ui.sidebar import Sidebar
from app.ui.status_bar import StatusBar
from app.ui.welcome import Welcome

if TYPE_CHECKING:
    from app.ui.workers import TaskRunner

PAGES = ("chat", "models", "hub", "compare")


class MainWindow(QMainWindow):
    """Signals:
    closing(): the window is about to close (save state, shut workers down).
    page_changed(str): 'chat', 'models', 'hub' or 'compare' is now shown.
    settings_requested(): the Settings dialog should open.
    files_dropped(list): .gguf files dropped anywhere on the window.
    stop_requested(): Esc.
    """

    closing = Signal()
    page_changed = Signal(str)
    settings_requested = Signal()
    files_dropped = Signal(list)
    stop_requested = Signal()

    def __init__(self, chat_model: ChatModel, tasks: TaskRunner | None = None) -> None:
        super().__init__()
        self.setWindowTitle(APP_NAME)
        self.setAcceptDrops(True)
        self.resize(1280, 820)
        self.setMinimumSize(760, 480)

        self.sidebar = Sidebar(self)
        self.picker = ModelPicker(self)
        self.chat_view = ChatView(chat_model, self)
        self.welcome = Welcome(self)
        self.composer = Composer(self)
        self.models_page = ModelsPage(self)
        self.hub_page = HubPage(self)
        self.compare_page = ComparePage(self)
        self.settings_panel = SettingsPanel(self, tasks)
        self.status = StatusBar(self)
        self.setStatusBar(self.status)

        self.chat_stack = QStackedWidget(self)
        self.chat_stack.addWidget(self.welcome)
        self.chat_stack.addWidget(self.chat_view)
        chat_page = QWidget(self)
        chat_layout = QVBoxLayout(chat_page)
        chat_layout.setContentsMargins(0, 0, 0, 0)
        chat_layout.setSpacing(0)
        chat_layout.addWidget(self.picker)
        chat_layout.addWidget(self.chat_stack, 1)
        chat_layout.addWidget(self.composer)

        self.pages = QStackedWidget(self)
        for page in (chat_page, self.models_page, self.hub_page, self.compare_page):
            self.pages.addWidget(page)

        center = QWidget(self)
        center_layout = QVBoxLayout(center)
        center_layout.setContentsMargins(0, 0, 0, 0)
        center_layout.setSpacing(0)
        center_layout.addWidget(self._nav_bar(center))
        center_layout.addWidget(self.pages, 1)

        self.splitter = QSplitter(Qt.Orientation.Horizontal, self)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.setHandleWidth(1)
        self.splitter.addWidget(self.sidebar)
        self.splitter.addWidget(center)
        self.splitter.addWidget(self.settings_panel)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([260, 720, 300])
        self.setCentralWidget(self.splitter)
        self._shortcuts()
        self.show_page("chat")

    def _nav_bar(self, parent: QWidget) -> QWidget:
        bar = QWidget(parent)
        bar.setObjectName("TopBar")
        bar.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        layout = QHBoxLayout(bar)
        layout.setContentsMargins(16, 6, 12, 6)
        layout.setSpacing(4)
        self.nav: dict[str, QPushButton] = {}
        for name, label in (("chat", "Chat"), ("models", "Models"), ("hub", "Discover"), ("compare", "Compare")):
            button = QPushButton(label, bar)
            button.setObjectName("NavButton")
            button.setCheckable(True)
            button.setCursor(Qt.CursorShape.PointingHandCursor)
            button.clicked.connect(getattr(self, f"_on_nav_{name}"))
            layout.addWidget(button)
            self.nav[name] = button
        layout.addStretch(1)
        # "New chat with <assistant>" and "Manage assistants…" (filled by app.ui.chat_workflows as it opens).
        self.assistants_button = QPushButton("Assistants", bar)
        self.assistants_button.setObjectName("NavButton")
        self.assistants_button.setToolTip("Start a chat with an assistant, or manage them")
        self.assistants_menu = QMenu(self.assistants_button)
        self.assistants_menu.setToolTipsVisible(True)
        self.assistants_button.setMenu(self.assistants_menu)
        layout.addWidget(self.assistants_button)
        self.panel_button = QPushButton("Chat settings", bar)
        self.panel_button.setObjectName("NavButton")
        self.panel_button.setCheckable(True)
        self.panel_button.setChecked(True)
        self.panel_button.setToolTip("Show or hide the chat settings panel (Ctrl+Shift+P)")
        self.panel_button.toggled.connect(self.settings_panel.setVisible)
        layout.addWidget(self.panel_button)
        settings = QPushButton("Settings", bar)
        settings.setObjectName("NavButton")
        settings.setToolTip("Preferences (Ctrl+,)")
        settings.clicked.connect(self.settings_requested)
        layout.addWidget(settings)
        return bar

    def _shortcuts(self) -> None:
        self.new_chat_shortcut = QShortcut(QKeySequence("Ctrl+N"), self)
        self.search_shortcut = QShortcut(QKeySequence("Ctrl+K"), self)
        self.search_shortcut.activated.connect(self._on_search_shortcut)
        self.stop_shortcut = QShortcut(QKeySequence(Qt.Key.Key_Escape), self)
        self.stop_shortcut.activated.connect(self.stop_requested)
        QShortcut(QKeySequence("Ctrl+,"), self).activated.connect(self.settings_requested)
        QShortcut(QKeySequence("Ctrl+Shift+P"), self).activated.connect(self.panel_button.toggle)

    # ---- navigation -------------------------------------------------------------------------------------------
    @property
    def page(self) -> str:
        return PAGES[self.pages.currentIndex()]

    def show_page(self, name: str) -> None:
        self.pages.setCurrentIndex(PAGES.index(name))
        for key, button in self.nav.items():
            button.setChecked(key == name)
        self.panel_button.setVisible(name == "chat")
        self.settings_panel.setVisible(name == "chat" and self.panel_button.isChecked())
        self.page_changed.emit(name)

    def _on_nav_chat(self) -> None:
        self.show_page("chat")

    def _on_nav_models(self) -> None:
        self.show_page("models")

    def _on_nav_hub(self) -> None:
        self.show_page("hub")

    def _on_nav_compare(self) -> None:
        self.show_page("compare")

    def _on_search_shortcut(self) -> None:
        self.show_page("chat")
        self.sidebar.focus_search()

    def show_chat(self, empty_state: bool) -> None:
        """Show the conversation, or the empty state when there is nothing to show yet."""
        self.chat_stack.setCurrentWidget(self.welcome if empty_state else self.chat_view)

    # ---- state --------------------------------------------------------------------------------------------------
    def save_state(self) -> tuple[str, str]:
        """(geometry, splitter/panel state) as base64 strings for the settings file."""
        geometry = bytes(self.saveGeometry().toBase64().data()).decode("ascii")
        state = bytes(self.splitter.saveState().toBase64().data()).decode("ascii")
        panel = "1" if self.panel_button.isChecked() else "0"
        return geometry, f"{panel}:{state}"

    def restore_state(self, geometry: str, state: str) -> None:
        if geometry:
            self.restoreGeometry(QByteArray.fromBase64(geometry.encode("ascii")))
        if state:
            panel, _, splitter = state.partition(":")
            self.panel_button.setChecked(panel != "0")
            if splitter:
                self.splitter.restoreState(QByteArray.fromBase64(splitter.encode("ascii")))

    # ---- events -------------------------------------------------------------------------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if gguf_paths(event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = gguf_paths(event.mimeData().urls())
        if paths:
            event.acceptProposedAction()
            self.files_dropped.emit(paths)

    def closeEvent(self, event: QCloseEvent) -> None:
        self.closing.emit()
        super().closeEvent(event)
