"""The download queue: one model (all its parts) per item, persisted, resumable after a restart, Qt-free.

One worker thread takes queued items in order. Each part goes through transfer.FileTransfer into a .part
file and is sha256-verified while it downloads; only when every part is verified are they moved (each
atomically, the first part last) into the destination, where the library finds them. The queue lives in
data_dir/downloads.json; after a restart, unfinished items come back paused: nothing is fetched again
until the user asks.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any

from app.core.errors import DiskFullError, DownloadCancelled, DownloadError, HearthError
from app.core.gguf_info import format_bytes
from app.core.hub import HubClient
from app.core.hub_files import QuantOption, RemoteFile, check_repo_id, remote_path_problem, repo_id_problem
from app.core.paths import AppPaths
from app.core.transfer import (
    FileTransfer,
    Opener,
    TransferPolicy,
    discard_partial,
    open_partial,
    partial_size,
)

log = logging.getLogger("hearth.downloads")

STATE_VERSION = 1
FREE_SPACE_RESERVE = 256 * 1024 * 1024  # never fill a disk to the last byte
PROGRESS_INTERVAL = 0.2  # seconds between progress events
SPEED_WINDOW = 5.0  # seconds of samples behind the speed and ETA


class DownloadState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    FAILED = "failed"
    DONE = "done"
    CANCELLED = "cancelled"


ACTIVE = frozenset({DownloadState.QUEUED, DownloadState.RUNNING})
RESUMABLE = frozenset({DownloadState.PAUSED, DownloadState.FAILED})


@dataclass
class Download:
    """One queued model, as persisted: which files of which repo go where."""

    id: str
    repo_id: str
    revision: str
    name: str
    quant: str
    files: list[RemoteFile]
    dest_dir: Path
    partial_dir: Path
    state: DownloadState = DownloadState.QUEUED
    error: str | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def part_path(self, remote: RemoteFile) -> Path:
        return self.partial_dir / f"{self.repo_id.replace('/', '--')}--{remote.name}.part"

    def targets(self) -> list[Path]:
        return [self.dest_dir / f.name for f in self.files]

    def done_on_disk(self) -> int:
        if self.state is DownloadState.DONE:
            return self.total_bytes
        return sum(min(partial_size(self.part_path(f)), f.size) for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "repo_id": self.repo_id,
            "revision": self.revision,
            "name": self.name,
            "quant": self.quant,
            "files": [f.to_dict() for f in self.files],
            "dest_dir": str(self.dest_dir),
            "partial_dir": str(self.partial_dir),
            "state": str(self.state),
            "error": self.error,
            "created": self.created,
            "finished": self.finished,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Download:
        return cls(
            id=str(data["id"]),
            repo_id=str(data["repo_id"]),
            revision=str(data["revision"]),
            name=str(data["name"]),
            quant=str(data.get("quant") or "?"),
            files=[RemoteFile.from_dict(f) for f in data["files"]],
            dest_dir=Path(data["dest_dir"]),
            partial_dir=Path(data["partial_dir"]),
            state=DownloadState(data.get("state", "paused")),
            error=data.get("error"),
            created=float(data.get("created") or time.time()),
            finished=data.get("finished"),
        )


def _queued(record: Any) -> Download | None:
    """One record of the saved queue, or None (logged) when it is damaged or names an unsafe path."""
    try:
        item = Download.from_dict(record)
        check_repo_id(item.repo_id)
        for remote in item.files:
            if problem := remote_path_problem(remote.path):
                raise ValueError(f"file {remote.path[:200]!r}: {problem}")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("dropping a damaged entry of the download queue: %s", exc)
        return None
    return item


@dataclass(frozen=True)
class DownloadStatus:
    """A snapshot for views: what, where, how far, how fast."""

    id: str
    repo_id: str
    name: str
    quant: str
    state: DownloadState
    done_bytes: int
    total_bytes: int
    speed_bps: float
    eta_seconds: float | None
    message: str
    error: str | None
    paths: tuple[Path, ...]

    @property
    def fraction(self) -> float:
        return self.done_bytes / self.total_bytes if self.total_bytes else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "repo_id": self.repo_id,
            "name": self.name,
            "quant": self.quant,
            "state": str(self.state),
            "done_bytes": self.done_bytes,
            "total_bytes": self.total_bytes,
            "speed_bps": round(self.speed_bps),
            "eta_seconds": None if self.eta_seconds is None else round(self.eta_seconds, 1),
            "message": self.message,
            "error": self.error,
            "paths": [str(p) for p in self.paths],
        }


@dataclass(frozen=True)
class DownloadEvent:
    """kind: added, state (queued/running/paused/done/failed/cancelled), progress, message, removed."""

    kind: str
    status: DownloadStatus


def download_id(repo_id: str, files: list[RemoteFile], dest_dir: Path) -> str:
    """Stable across runs, so asking for the same files again finds (and resumes) the same item."""
    key = "\n".join([repo_id, str(dest_dir), *sorted(f.path for f in files)])
    return hashlib.sha1(key.encode()).hexdigest()[:12]


class _Live:
    """Per-item runtime figures (not persisted)."""

    def __init__(self, done: int) -> None:
        self.done = done
        self.message = ""
        self.samples: deque[tuple[float, int]] = deque()
        self.last_event = 0.0
        self.stop = threading.Event()
        self.stop_reason = ""
        self.transfer: FileTransfer | None = None

    def halt(self, reason: str) -> None:
        self.stop_reason = reason
        self.stop.set()
        if self.transfer is not None:
            self.transfer.abort()

    def speed(self) -> float:
        """Bytes per second over the last few seconds, measured up to now (so a stall decays to 0)."""
        now = time.monotonic()
        recent = [(t, b) for t, b in self.samples if now - t <= SPEED_WINDOW]
        if len(recent) < 2:
            return 0.0
        (t0, b0), (_, b1) = recent[0], recent[-1]
        return (b1 - b0) / (now - t0) if now > t0 else 0.0


class DownloadManager:
    """Queue, progress, pause/resume/cancel; threads and callbacks, no Qt.

    Callbacks given to subscribe() run on the download thread: a GUI must hand them over to its own thread.
    """

    def __init__(
        self,
        paths: AppPaths,
        hub: HubClient | Callable[[], HubClient],
        *,
        policy: TransferPolicy | None = None,
        opener: Opener = open_partial,
        state_file: Path | None = None,
    ) -> None:
        self.paths = paths
        self._hub = hub if callable(hub) and not isinstance(hub, HubClient) else (lambda: hub)
        self.policy = policy or TransferPolicy()
        self._opener = opener
        self.state_file = state_file or paths.data_dir / "downloads.json"
        self._cond = threading.Condition()
        self._items: dict[str, Download] = {}
        self._live: dict[str, _Live] = {}
        self._observers: list[Callable[[DownloadEvent], None]] = []
        self._worker: threading.Thread | None = None
        self._closing = False
        self._removed: set[str] = set()
        self._load()

    # ---- persistence -------------------------------------------------------------------------------------
    def _load(self) -> None:
        try:
            raw = json.loads(self.state_file.read_text(encoding="utf-8"))
            items = [item for item in map(_queued, raw["downloads"]) if item is not None]
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            aside = self.state_file.with_name(f"{self.state_file.name}.broken-{int(time.time())}")
            log.warning("download queue %s unreadable (%s); moved to %s", self.state_file, exc, aside)
            with contextlib.suppress(OSError):
                os.replace(self.state_file, aside)
            return
        for item in items:
            if item.state in ACTIVE:  # the app stopped mid-download: wait for the user to resume
                item.state = DownloadState.PAUSED
            self._items[item.id] = item
            self._live[item.id] = _Live(item.done_on_disk())

    def _save(self) -> None:
        """Write the queue atomically; called with the lock held.

        Items another Hearth process added since we loaded (the GUI and a `hearth download`) are kept.
        """
        records = [d.to_dict() for d in self._items.values()]
        try:
            on_disk = json.loads(self.state_file.read_text(encoding="utf-8"))["downloads"]
            records += [r for r in on_disk if r["id"] not in self._items and r["id"] not in self._removed]
        except (OSError, ValueError, KeyError, TypeError):
            pass
        data = {"version": STATE_VERSION, "downloads": records}
        try:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_file.with_name(self.state_file.name + ".tmp")
            tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
            os.replace(tmp, self.state_file)
        except OSError as exc:  # a full disk must not crash the download thread; the partials stay usable
            log.warning("cannot save the download queue: %s", exc)

    # ---- observers ---------------------------------------------------------------------------------------
    def subscribe(self, observer: Callable[[DownloadEvent], None]) -> Callable[[], None]:
        """Call observer(event) on every change; returns a function that unsubscribes."""
        with self._cond:
            self._observers.append(observer)
        return lambda: self._observers.remove(observer) if observer in self._observers else None

    def _emit(self, kind: str, item_id: str) -> None:
        with self._cond:
            status = self._status(item_id)
            observers = list(self._observers)
        for observer in observers:
            try:
                observer(DownloadEvent(kind, status))
            except Exception:  # an observer's bug must not kill the download
                log.exception("download observer failed")

    # ---- queries -----------------------------------------------------------------------------------------
    def _status(self, item_id: str) -> DownloadStatus:
        item, live = self._items[item_id], self._live[item_id]
        speed = live.speed() if item.state is DownloadState.RUNNING else 0.0
        remaining = item.total_bytes - live.done
        return DownloadStatus(
            id=item.id,
            repo_id=item.repo_id,
            name=item.name,
            quant=item.quant,
            state=item.state,
            done_bytes=live.done,
            total_bytes=item.total_bytes,
            speed_bps=speed,
            eta_seconds=remaining / speed if speed > 0 else None,
            message=live.message,
            error=item.error,
            paths=tuple(item.targets()),
        )

    def statuses(self) -> list[DownloadStatus]:
        with self._cond:
            return [self._status(i) for i in self._items]

    def status(self, item_id: str) -> DownloadStatus:
        with self._cond:
            self._require(item_id)
            return self._status(item_id)

    def _require(self, item_id: str) -> Download:
        item = self._items.get(item_id)
        if item is None:
            raise DownloadError(f"no download with id {item_id!r}")
        return item

    def wait(self, item_id: str, timeout: float | None = None) -> DownloadStatus:
        """Block until the item is no longer queued or running (or timeout); returns its status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._require(item_id).state in ACTIVE:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(left)
            return self._status(item_id)

    # ---- commands ----------------------------------------------------------------------------------------
    def add(self, repo_id: str, option: QuantOption, *, revision: str, dest_dir: Path | None = None) -> DownloadStatus:
        """Queue option's files (or resume the same request); returns at once."""
        if problem := repo_id_problem(repo_id):
            raise DownloadError(f"invalid repository id {str(repo_id)[:120]!r}: {problem}")
        for remote in option.files:
            if problem := remote_path_problem(remote.path):
                raise DownloadError(f"the Hub's file name {remote.path[:200]!r} cannot be used: {problem}")
        if not option.complete:
            missing = ", ".join(map(str, option.missing_parts))
            raise DownloadError(f"{option.name} is incomplete on the Hub (parts {missing} missing)")
        dest = Path(dest_dir).expanduser().resolve() if dest_dir else self._repo_folder(repo_id)
        files = list(option.files)
        item_id = download_id(repo_id, files, dest)
        with self._cond:
            item = self._items.get(item_id)
            if item is not None and item.state in ACTIVE:
                return self._status(item_id)  # already on its way
            kind = "state"
            if item is None or item.state in (DownloadState.DONE, DownloadState.CANCELLED):
                item = Download(
                    item_id,
                    repo_id,
                    revision,
                    option.name,
                    option.quant,
                    files,
                    dest,
                    self._partial_dir(dest),
                )
                kind = "added"
            live = _Live(item.done_on_disk()) if kind == "added" else self._live[item_id]
            done = self._already_there(item)  # raises before anything is recorded
            item.revision, item.files = revision, files  # asked again: resume with today's listing
            self._items[item_id], self._live[item_id] = item, live
            if done:
                item.state, item.error, item.finished = DownloadState.DONE, None, time.time()
                live.done, live.message = item.total_bytes, "already downloaded"
            else:
                item.state, item.error = DownloadState.QUEUED, None
            self._save()
        self._emit(kind, item_id)  # before the worker can see the item: "added" always comes first
        if not done:
            with self._cond:
                self._start_worker()
                self._cond.notify_all()
        return self.status(item_id)

    def _repo_folder(self, repo_id: str) -> Path:
        """models/<owner>/<name> from a validated id, and checked to be inside the models folder."""
        owner, name = repo_id.split("/")
        dest = self.paths.models_dir / owner / name
        if not dest.resolve().is_relative_to(self.paths.models_dir.resolve()):  # a link planted in the folder
            raise DownloadError(f"{dest} leads outside the models folder; not downloading there")
        return dest

    def _partial_dir(self, dest: Path) -> Path:
        models = self.paths.models_dir.resolve()
        # Partials must sit on the destination's filesystem so the final move is an atomic rename.
        return self.paths.downloads_dir if dest.resolve().is_relative_to(models) else dest / ".downloads"

    def _already_there(self, item: Download) -> bool:
        """True when every file is in place already; a different file in the way is an error."""
        present = 0
        for remote, target in zip(item.files, item.targets(), strict=True):
            if target.exists():
                if target.stat().st_size != remote.size:
                    raise DownloadError(f"{target} already exists and differs; delete it or choose another --dest")
                present += 1
        return present == len(item.files)

    def resume(self, item_id: str) -> DownloadStatus:
        with self._cond:
            item = self._require(item_id)
            if item.state in RESUMABLE:
                item.state, item.error = DownloadState.QUEUED, None
                self._save()
                self._start_worker()
                self._cond.notify_all()
        self._emit("state", item_id)
        return self.status(item_id)

    def pause(self, item_id: str) -> None:
        """Stop the item, keeping its partial files; a running transfer stops after its current write."""
        self._stop(item_id, "pause")

    def cancel(self, item_id: str) -> None:
        """Stop the item and delete its partial files."""
        self._stop(item_id, "cancel")

    def _stop(self, item_id: str, reason: str) -> None:
        with self._cond:
            item = self._require(item_id)
            if item.state is DownloadState.RUNNING:
                self._live[item_id].halt(reason)
                return  # the worker records the outcome
            if item.state is DownloadState.DONE:
                return
            if reason == "cancel":
                self._discard(item)
                item.state = DownloadState.CANCELLED
            elif item.state is DownloadState.QUEUED:
                item.state = DownloadState.PAUSED
            self._save()
            self._cond.notify_all()
        self._emit("state", item_id)

    def remove(self, item_id: str) -> None:
        """Forget a finished, cancelled, failed or paused item (deleting its partial files)."""
        with self._cond:
            item = self._require(item_id)
            if item.state in ACTIVE:
                raise DownloadError(f"{item.name} is still downloading; pause or cancel it first")
            status = self._status(item_id)
            if item.state is not DownloadState.DONE:
                self._discard(item)
            del self._items[item_id]
            self._removed.add(item_id)
            self._save()
        for observer in list(self._observers):
            observer(DownloadEvent("removed", status))

    def _discard(self, item: Download) -> None:
        for remote in item.files:
            discard_partial(item.part_path(remote))
        self._live[item.id].done = 0

    def close(self, timeout: float = 30.0) -> None:
        """Pause whatever runs (partials kept for next time) and stop the worker thread."""
        with self._cond:
            self._closing = True
            for item in self._items.values():
                if item.state is DownloadState.RUNNING:
                    self._live[item.id].halt("pause")
            self._cond.notify_all()
            worker = self._worker
        if worker is not None:
            worker.join(timeout)

    # ---- the worker --------------------------------------------------------------------------------------
    def _start_worker(self) -> None:
        if self._closing:
            raise DownloadError("the download manager is closed")
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="hearth-downloads", daemon=True)
            self._worker.start()

    def _next(self) -> Download | None:
        with self._cond:
            while not self._closing:
                queued = [d for d in self._items.values() if d.state is DownloadState.QUEUED]
                if queued:
                    item = min(queued, key=lambda d: d.created)
                    item.state = DownloadState.RUNNING
                    live = self._live[item.id]
                    live.stop, live.stop_reason, live.message = threading.Event(), "", ""
                    live.samples.clear()
                    self._save()
                    return item
                self._cond.wait()
            return None

    def _work(self) -> None:
        while (item := self._next()) is not None:
            self._emit("state", item.id)
            live = self._live[item.id]
            error: str | None = None
            try:
                self._download(item, live)
                outcome = DownloadState.DONE
            except DownloadCancelled:
                outcome = DownloadState.CANCELLED if live.stop_reason == "cancel" else DownloadState.PAUSED
            except HearthError as exc:
                outcome, error = DownloadState.FAILED, str(exc)
            except Exception as exc:
                log.exception("download %s failed unexpectedly", item.name)
                outcome, error = DownloadState.FAILED, f"unexpected error: {type(exc).__name__}: {exc}"
            with self._cond:
                if outcome is DownloadState.CANCELLED:
                    self._discard(item)
                item.state, item.error = outcome, error
                if outcome is not DownloadState.DONE:
                    live.done = item.done_on_disk()  # the truth, whatever the last progress event said
                if outcome is DownloadState.DONE:
                    item.finished = time.time()
                    live.message = "verified and added to the library"
                elif outcome is DownloadState.PAUSED:
                    live.message = f"paused at {format_bytes(live.done)} of {format_bytes(item.total_bytes)}"
                self._save()
                self._cond.notify_all()
            log.info("download %s (%s): %s%s", item.name, item.repo_id, outcome, f": {error}" if error else "")
            self._emit("state", item.id)

    def _check_space(self, item: Download) -> None:
        item.partial_dir.mkdir(parents=True, exist_ok=True)
        needed = sum(max(f.size - partial_size(item.part_path(f)), 0) for f in item.files)
        free = shutil.disk_usage(item.partial_dir).free
        if needed + FREE_SPACE_RESERVE > free:
            raise DiskFullError(
                f"not enough free space for {item.name}: {format_bytes(needed)} more needed, "
                f"{format_bytes(free)} free on {item.partial_dir}"
            )

    def _download(self, item: Download, live: _Live) -> None:
        item.dest_dir.mkdir(parents=True, exist_ok=True)
        self._check_space(item)
        hub = self._hub()
        base = 0
        for remote in item.files:
            transfer = FileTransfer(
                hub,
                item.repo_id,
                item.revision,
                remote,
                item.part_path(remote),
                stop=live.stop,
                policy=self.policy,
                on_bytes=partial(self._file_progress, item, live, base),
                on_status=partial(self._message, item, live),
                opener=self._opener,
            )
            live.transfer = transfer
            try:
                transfer.run()
            finally:
                live.transfer = None
            base += remote.size
        self._message(item, live, "moving into the library")
        self._install(item)

    def _install(self, item: Download) -> None:
        """Move the verified parts into place, the first part last (the library lists a split model by it)."""
        pairs = list(zip(item.files, item.targets(), strict=True))
        for remote, target in reversed(pairs):
            part = item.part_path(remote)
            try:
                os.replace(part, target)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise DownloadError(f"cannot move {part.name} to {target}: {exc.strerror or exc}") from exc
                tmp = target.with_name(f".{target.name}.tmp")  # another filesystem: copy, then rename there
                shutil.copyfile(part, tmp)
                os.replace(tmp, target)
                part.unlink()
            discard_partial(part)

    def _file_progress(self, item: Download, live: _Live, base: int, done: int) -> None:
        """Bytes of one file of a multi-part download: base is what its earlier files already hold."""
        self._progress(item, live, base + done)

    def _progress(self, item: Download, live: _Live, done: int) -> None:
        now = time.monotonic()
        with self._cond:  # statuses are read from other threads
            live.done = done
            live.samples.append((now, done))
            while live.samples and now - live.samples[0][0] > SPEED_WINDOW:
                live.samples.popleft()
            due = now - live.last_event >= PROGRESS_INTERVAL or done >= item.total_bytes
            if due:
                live.last_event = now
        if due:
            self._emit("progress", item.id)

    def _message(self, item: Download, live: _Live, message: str) -> None:
        live.message = message
        self._emit("message", item.id)


def describe(status: DownloadStatus) -> str:
    """One line for lists and logs: name, state, bytes, speed."""
    line = f"{status.name} [{status.quant}] {status.state}: {format_bytes(status.done_bytes)} of "
    line += format_bytes(status.total_bytes)
    if status.state is DownloadState.RUNNING and status.speed_bps:
        line += f" at {format_bytes(status.speed_bps)}/s"
    if status.error:
        line += f" — {status.error}"
    elif status.message:
        line += f" — {status.message}"
    return line
