"""Find bundled resources (icons, style sheets) from a source checkout, a wheel install or a frozen app."""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path


@cache
def resources_dir() -> Path:
    here = Path(__file__).resolve().parent
    candidates = [
        Path(getattr(sys, "_MEIPASS", "")) / "resources" if hasattr(sys, "_MEIPASS") else None,  # PyInstaller
        here.parent / "resources",  # source checkout or editable install
        here / "_resources",  # wheel install (pyproject maps resources/ to app._resources)
    ]
    for candidate in candidates:
        if candidate is not None and (candidate / "icons").is_dir():
            return candidate
    raise FileNotFoundError("Hearth's resources folder is missing; reinstall Hearth")


def icon_path(name: str) -> Path:
    return resources_dir() / "icons" / name
