"""Where Hearth keeps things: one place decides, HEARTH_HOME overrides it (tests, portable installs)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP_DIR_NAME = "Hearth"
HOME_ENV = "HEARTH_HOME"


@dataclass(frozen=True)
class AppPaths:
    """The folders Hearth reads and writes. Nothing outside them is written without the user asking."""

    models_dir: Path
    data_dir: Path
    config_dir: Path
    logs_dir: Path
    cache_dir: Path

    @property
    def settings_file(self) -> Path:
        return self.config_dir / "settings.json"

    @property
    def history_db(self) -> Path:
        return self.data_dir / "history.sqlite3"

    @property
    def documents_db(self) -> Path:
        """Document collections, their chunks, the full-text index and the embedding vectors."""
        return self.data_dir / "documents.sqlite3"

    @property
    def assistants_dir(self) -> Path:
        """One JSON file per assistant the user made (the built-in ones live in the code)."""
        return self.data_dir / "assistants"

    @property
    def prompts_dir(self) -> Path:
        """One JSON file per prompt the user saved in the prompt library."""
        return self.data_dir / "prompts"

    @property
    def library_index(self) -> Path:
        return self.cache_dir / "library-index.json"

    @property
    def downloads_dir(self) -> Path:
        """Partial downloads live here until verified, then move atomically into models_dir."""
        return self.models_dir / ".downloads"

    def ensure(self) -> AppPaths:
        """Create every folder (idempotent) and return self, so `paths = AppPaths.default().ensure()`."""
        for folder in (self.models_dir, self.data_dir, self.config_dir, self.logs_dir, self.cache_dir):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    @classmethod
    def under(cls, base: Path) -> AppPaths:
        """All folders below one base directory (HEARTH_HOME, a portable install, a test's tmp dir)."""
        base = Path(base).expanduser().resolve()
        return cls(
            models_dir=base / "models",
            data_dir=base / "data",
            config_dir=base / "config",
            logs_dir=base / "logs",
            cache_dir=base / "cache",
        )

    @classmethod
    def default(cls) -> AppPaths:
        """HEARTH_HOME when set, else the platform's conventional per-user folders."""
        override = os.environ.get(HOME_ENV, "").strip()
        if override:
            return cls.under(Path(override))
        data = platformdirs.user_data_path(APP_DIR_NAME, appauthor=False)
        return cls(
            models_dir=data / "models",
            data_dir=data,
            config_dir=platformdirs.user_config_path(APP_DIR_NAME, appauthor=False),
            logs_dir=platformdirs.user_log_path(APP_DIR_NAME, appauthor=False),
            cache_dir=platformdirs.user_cache_path(APP_DIR_NAME, appauthor=False),
        )
