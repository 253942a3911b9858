"""Hearth's core: everything that is not a widget. Nothing below this package imports Qt."""
