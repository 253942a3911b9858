"""The empty state of the chat area: first run (get a model), no model loaded, or a fresh chat."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from app.ui.untrusted import plain

# A small instruct model that runs on almost any laptop (about 1.1 GB, Apache-2.0).
RECOMMENDED_REPO = "Qwen/Qwen2.5-1.5B-Instruct-GGUF"
RECOMMENDED_QUANT = "Q4_K_M"
RECOMMENDED_LABEL = "Qwen2.5 1.5B Instruct (Q4_K_M, about 1.1 GB)"


class Welcome(QWidget):
    """Signals: download_recommended(), import_requested(), browse_requested(), load_last_requested()."""

    download_recommended = Signal()
    import_requested = Signal()
    browse_requested = Signal()
    load_last_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        outer = QVBoxLayout(self)
        outer.addStretch(2)
        self.card = QFrame(self)
        self.card.setObjectName("Card")
        self.card.setMaximumWidth(560)
        layout = QVBoxLayout(self.card)
        layout.setContentsMargins(32, 28, 32, 28)
        layout.setSpacing(12)
        self.title = plain(QLabel(self.card))
        self.title.setObjectName("Heading")
        self.title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.body = plain(QLabel(self.card))  # shows the model's own name (general.name)
        self.body.setWordWrap(True)
        self.body.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.body.setObjectName("Muted")
        layout.addWidget(self.title)
        layout.addWidget(self.body)
        buttons = QVBoxLayout()
        buttons.setSpacing(8)
        self.download = QPushButton(f"Download {RECOMMENDED_LABEL}", self.card)
        self.download.setObjectName("Primary")
        self.download.clicked.connect(self.download_recommended)
        self.import_button = QPushButton("Import a GGUF file…", self.card)
        self.import_button.clicked.connect(self.import_requested)
        self.browse = QPushButton("Browse models on Hugging Face", self.card)
        self.browse.clicked.connect(self.browse_requested)
        self.load_last = QPushButton(self.card)
        self.load_last.setObjectName("Primary")
        self.load_last.clicked.connect(self.load_last_requested)
        for button in (self.load_last, self.download, self.import_button, self.browse):
            button.setCursor(Qt.CursorShape.PointingHandCursor)
            buttons.addWidget(button)
        layout.addLayout(buttons)
        self.status = plain(QLabel(self.card))  # download names and errors from the Hub
        self.status.setObjectName("Muted")
        self.status.setWordWrap(True)
        self.status.setAlignment(Qt.AlignmentFlag.AlignCenter)
        layout.addWidget(self.status)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.card, 4)
        row.addStretch(1)
        outer.addLayout(row)
        outer.addStretch(3)
        self.show_state("start", "")

    @property
    def state(self) -> str:
        return self._state

    def show_state(self, state: str, model: str, last_model: str = "") -> None:
        """'first-run' (no models at all), 'no-model' (none loaded), or 'start' (a loaded model, empty chat)."""
        self._state = state
        first_run, no_model = state == "first-run", state == "no-model"
        if first_run:
            self.title.setText("Welcome to Hearth")
            self.body.setText(
                "Chat with AI models privately: everything runs on this computer. To begin, get a model. "
                "A small one that runs well on most laptops is suggested below."
            )
        elif no_model:
            self.title.setText("Choose a model")
            self.body.setText("Pick a model in the bar above and press Load, or get another one.")
        else:
            self.title.setText("How can I help?")
            self.body.setText(f"Chatting with {model}. Type a message below." if model else "")
        self.card.setVisible(True)
        self.download.setVisible(first_run)
        self.import_button.setVisible(first_run or no_model)
        self.browse.setVisible(first_run or no_model)
        self.load_last.setVisible(no_model and bool(last_model))
        self.load_last.setText(f"Load {last_model}")

    def set_status(self, text: str) -> None:
        self.status.setText(text)
