"""Hearth's PySide6 GUI: a thin layer of views and workers over app.core."""
