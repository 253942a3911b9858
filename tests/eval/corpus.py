"""The retrieval evaluation's corpus: Python's own documentation as shipped with the interpreter (PSF
licence): the language reference topics behind `help('topics')` (pydoc_data) and pydoc's plain-text
pages for a fixed set of standard-library modules. Written to text files at run time; nothing committed.

The texts are those of the running CPython (the questions were written against 3.11); build() returns the
version so the report can say which one was measured.
"""

from __future__ import annotations

import importlib
import pydoc
import re
import sys
from pathlib import Path

MODULES = (
    "json", "textwrap", "shutil", "pathlib", "collections", "itertools", "functools", "heapq", "bisect",
    "statistics", "random", "string", "csv", "zipfile", "argparse", "tempfile", "difflib", "fractions",
    "contextlib", "dataclasses", "glob", "fnmatch", "secrets", "base64", "hashlib", "uuid",
    "gzip", "calendar", "pprint", "shlex", "copy", "weakref", "queue", "sched", "graphlib",
    "html", "urllib.parse", "operator", "abc", "os.path", "locale", "time",
)  # fmt: skip
CHARS_PER_PAGE = 3000


def build(folder: Path) -> dict[str, object]:
    """Write the corpus under folder; returns {"files", "characters", "pages", "python"}."""
    from pydoc_data.topics import topics

    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    files = 0
    for name, text in sorted(topics.items()):
        total += _write(folder / "reference" / f"{name}.txt", text)
        files += 1
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        text = pydoc.render_doc(module, "Help on %s", renderer=pydoc.plaintext)
        text = re.sub(r"\n {4}FILE\n.*?\n\n", "\n", text, flags=re.S)  # the install path differs per machine
        total += _write(folder / "library" / f"{module_name}.txt", text)
        files += 1
    return {"files": files, "characters": total, "pages": total // CHARS_PER_PAGE, "python": sys.version.split()[0]}


def _write(path: Path, text: str) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return len(text)
