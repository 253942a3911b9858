"""Hearth's core: everything that is not a widget. Nothing below this package imports Qt."""

import logging

# Library etiquette: without an app-configured handler, Hearth's records (llama.cpp's warnings included)
# must not fall through to logging's last-resort stderr printer.
logging.getLogger("hearth").addHandler(logging.NullHandler())
