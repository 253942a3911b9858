"""The status bar: the local server and its requests, backend, offloaded layers, context used / size, last
generation speed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtWidgets import QLabel, QStatusBar, QWidget

from app.ui.untrusted import plain

if TYPE_CHECKING:
    from app.core.engine import LoadedModel


class StatusBar(QStatusBar):
    """Permanent labels on the right; transient messages (showMessage) on the left."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setSizeGripEnabled(False)
        self.backend = plain(QLabel(self))
        self.layers = plain(QLabel(self))
        self.context = plain(QLabel(self))
        self.speed = plain(QLabel(self))
        self.server = plain(QLabel(self))  # shown while the local server runs
        self.server.hide()
        for label in (self.server, self.backend, self.layers, self.context, self.speed):
            self.addPermanentWidget(label)
        self._n_ctx = 0
        self.set_model(None)

    def set_backend(self, backend: str) -> None:
        """What the installed llama.cpp can use, shown even before a model is loaded."""
        self.backend.setText(backend)

    def set_model(self, model: LoadedModel | None) -> None:
        if model is None:
            self.layers.setText("No model loaded")
            self.context.clear()
            self.speed.clear()
            self._n_ctx = 0
            return
        self.backend.setText(model.backend)
        blocks = model.info.block_count or 0
        total = blocks + 1 if blocks else 0
        if model.n_gpu_layers:
            self.layers.setText(f"{model.n_gpu_layers} / {total} layers on GPU" if total else "GPU")
        else:
            self.layers.setText("All layers on CPU")
        self._n_ctx = model.n_ctx
        self.set_context(0)
        self.speed.clear()

    def set_context(self, used: int) -> None:
        if self._n_ctx:
            share = used / self._n_ctx
            self.context.setText(f"Context {used:,} / {self._n_ctx:,} ({share:.0%})")

    def set_speed(self, tokens_per_second: float) -> None:
        self.speed.setText(f"{tokens_per_second:.1f} tok/s" if tokens_per_second else "")

    def set_server(self, port: int | None, requests: int = 0, url: str = "") -> None:
        """The local server's indicator: its port and the API requests in flight; None hides it."""
        if port is None:
            self.server.hide()
            return
        busy = f" · {requests} request{'s' if requests != 1 else ''}" if requests else ""
        self.server.setText(f"API :{port}{busy}")
        self.server.setToolTip(f"Other apps can use the loaded model at {url}" if url else "")
        self.server.show()
