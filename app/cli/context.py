"""What every CLI command may need (paths, settings, library), created lazily so `--help` stays instant.

The core modules are imported inside the properties, not at the top: every command builds a CliContext, and
a command that needs no library (`hearth history list`) must not pay for importing it.
"""

from __future__ import annotations

import json
import sys
from functools import cached_property
from typing import TYPE_CHECKING, Any, TextIO

from app.cli.terminal import for_stream, safe

if TYPE_CHECKING:
    from app.core.library import Library
    from app.core.paths import AppPaths
    from app.core.settings import Settings


class CliContext:
    """Lazily built core objects plus output helpers shared by the subcommands."""

    def __init__(self, *, debug: bool = False, out: TextIO | None = None) -> None:
        self.debug = debug
        self.out = out or sys.stdout

    @cached_property
    def paths(self) -> AppPaths:
        from app.core.paths import AppPaths

        return AppPaths.default().ensure()

    @cached_property
    def log_file(self) -> str:
        import logging

        from app.core.logs import setup_logging

        return str(setup_logging(self.paths.logs_dir, logging.DEBUG if self.debug else logging.INFO))

    @cached_property
    def settings(self) -> Settings:
        from app.core.settings import Settings

        _ = self.log_file
        return Settings(self.paths.settings_file)

    @cached_property
    def library(self) -> Library:
        from app.core.library import Library

        return Library(self.paths, self.settings)

    def print_json(self, value: Any) -> None:
        json.dump(value, self.out, indent=2, ensure_ascii=False)
        self.out.write("\n")

    def print(self, text: str = "") -> None:
        """A line for people: control characters from files, the Hub or the history shown as escapes."""
        self.out.write(safe(text) + "\n")

    def write(self, text: str) -> None:
        """Text for people (a conversation shown as Markdown), made safe like print()."""
        self.out.write(safe(text))

    def write_data(self, text: str) -> None:
        """Output meant for a file or a pipe (an export, a prompt): exact, except on a terminal."""
        self.out.write(for_stream(text, self.out))
