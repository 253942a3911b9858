"""The core and the CLI never import Qt (checked in a fresh interpreter: pytest-qt loads Qt in this one)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import app.core


def test_core_and_cli_import_without_qt():
    modules = [f"app.core.{m.name}" for m in pkgutil.iter_modules(app.core.__path__)]
    code = "\n".join(
        [
            *(f"import {m}" for m in modules),
            "import app.cli, app.main",
            "from app.cli import build_parser",
            "build_parser()",
            "import sys; bad = [m for m in sys.modules if m.startswith(('PySide6', 'shiboken6'))]",
            "assert not bad, bad",
        ]
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(modules) >= 6
