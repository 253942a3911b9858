"""A named pipe that reports whether anything opened it: proof that untrusted text made us read a file.

Qt reads an image named in rich text or Markdown with a blocking open(). A FIFO makes such a read visible
without hanging the test: a watcher keeps trying a non-blocking open for writing, which succeeds only while
a reader is waiting; it then closes at once, so the reader sees end-of-file and moves on. The watcher is a
separate process: Qt blocks in open() while holding the GIL, so a thread of the test could never run.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

_WATCHER = r"""
import errno, os, sys, time
fifo, log = sys.argv[1], sys.argv[2]
while True:
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno != errno.ENXIO:  # ENXIO: no reader waiting, the normal case
            raise
        time.sleep(0.002)
        continue
    os.close(fd)  # the reader gets end-of-file and goes on
    with open(log, "a") as handle:
        handle.write("opened\n")
    time.sleep(0.01)
"""


class FifoCanary:
    """Attributes: path (the FIFO); opened (how many times a reader opened it so far)."""

    def __init__(self, folder: Path, name: str = "canary.png") -> None:
        self.path = folder / name
        self._log = folder / f".{name}.log"
        os.mkfifo(self.path)
        self._log.write_text("")
        self._watcher = subprocess.Popen([sys.executable, "-c", _WATCHER, str(self.path), str(self._log)])

    @property
    def opened(self) -> int:
        return self._log.read_text().count("opened")

    @property
    def url(self) -> str:
        return self.path.as_uri()

    def close(self) -> None:
        # Gone, not just unwatched: a later repaint that opens it must fail at once, not block forever.
        self.path.unlink(missing_ok=True)
        self._watcher.kill()
        self._watcher.wait()


@contextlib.contextmanager
def fifo_canary(folder: Path, name: str = "canary.png") -> Iterator[FifoCanary]:
    canary = FifoCanary(folder, name)
    try:
        yield canary
    finally:
        canary.close()


def hostile_markup(canary: FifoCanary) -> str:
    """Rich text a label would render as an image read from the canary (and a link to it)."""
    return f'<img src="{canary.path}"><img src="{canary.url}"><a href="{canary.url}">x</a>'
