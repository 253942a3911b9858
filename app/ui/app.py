"""Create the QApplication and the main window from core objects (the one joint between core and UI)."""

from __future__ import annotations

import sys

from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication, QLabel, QListWidget, QMainWindow, QVBoxLayout, QWidget

from app import APP_NAME, __version__
from app.core.library import Library
from app.core.logs import setup_logging
from app.core.paths import AppPaths
from app.core.settings import Settings
from app.resources import icon_path


class MainWindow(QMainWindow):
    """A first window: the model library. The chat UI arrives with the desktop-app issue."""

    def __init__(self, library: Library) -> None:
        super().__init__()
        self.setWindowTitle(f"{APP_NAME} {__version__}")
        central = QWidget(self)
        layout = QVBoxLayout(central)
        layout.addWidget(QLabel("Models in your library:"))
        self.models = QListWidget(central)
        for entry in library.scan():
            label = entry.display_name if entry.ok else f"{entry.path.name} (broken: {entry.error})"
            self.models.addItem(label)
        layout.addWidget(self.models)
        self.setCentralWidget(central)
        self.resize(900, 600)


def run_gui() -> int:
    paths = AppPaths.default().ensure()
    setup_logging(paths.logs_dir)
    app = QApplication.instance() or QApplication(sys.argv)
    app.setApplicationName(APP_NAME)
    app.setWindowIcon(QIcon(str(icon_path("hearth.svg"))))
    window = MainWindow(Library(paths, Settings(paths.settings_file)))
    window.show()
    return app.exec()
