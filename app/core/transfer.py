"""One Hub file into a resumable .part file: HTTP Range, sha256 while downloading, retries, stall detection.

huggingface_hub resolves the file (HEAD /resolve/ → size, sha256, signed location); the bytes are fetched
here because `hf_hub_download` deletes its partial file on failure. The .part file keeps every byte
received; a JSON sidecar next to it says which file at which commit those bytes belong to.

Resume re-hashes the bytes already on disk once (about 1.5 GB/s here) instead of persisting hash state:
hashlib objects cannot be pickled, and a hash computed from the disk can never disagree with the disk,
even after a crash that lost the end of the file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import queue
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import httpx2
from huggingface_hub import get_session
from huggingface_hub.utils import hf_raise_for_status

from app.core.errors import (
    ChecksumError,
    DiskFullError,
    DownloadCancelled,
    DownloadError,
    HubOfflineError,
    HubUnavailableError,
)
from app.core.gguf_info import format_bytes
from app.core.hub import HubClient, same_origin, translate_error
from app.core.hub_files import RemoteFile

log = logging.getLogger("hearth.downloads")

CHUNK_SIZE = 1 << 20  # bytes gathered before each write: the most a crash can make us fetch twice
HASH_QUEUE_CHUNKS = 16  # chunks the hashing thread may lag behind the network
DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}

Opener = Callable[[Path], BinaryIO]


def open_partial(path: Path) -> BinaryIO:
    """The write path (a seam: tests hand in a file object whose write raises ENOSPC)."""
    return open(path, "ab", buffering=0)  # unbuffered: what write() accepted is in the file


@dataclass(frozen=True)
class TransferPolicy:
    """Retry and stall behaviour; the defaults suit a home connection, tests shorten them."""

    stall_timeout: float = 30.0  # no byte for this long = stalled: drop the connection and retry
    connect_timeout: float = 15.0
    max_failures: int = 8  # consecutive failures without a byte of progress before giving up
    backoff_initial: float = 1.0
    backoff_max: float = 30.0


class _Retry(Exception):
    """A transient failure: back off, re-resolve the URL, continue from the bytes on disk."""


class _LocationExpired(_Retry):
    """The CDN refused a signed URL (they expire): resolve a fresh one at once."""


class _Hasher:
    """sha256 (or a git blob sha1) fed from the download thread, computed on its own thread.

    hashlib releases the GIL for large updates, so hashing overlaps the network and disk work.
    """

    def __init__(self, algorithm: str, prefix: bytes = b"") -> None:
        self._hash = hashlib.new(algorithm)
        self._hash.update(prefix)
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=HASH_QUEUE_CHUNKS)
        self._thread = threading.Thread(target=self._run, name="hearth-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            self._hash.update(data)

    def update(self, data: bytes) -> None:
        self._queue.put(data)

    def hexdigest(self) -> str:
        self.close()
        return self._hash.hexdigest()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


@dataclass(frozen=True)
class _Expected:
    algorithm: str
    digest: str
    prefix: bytes = b""

    @classmethod
    def of(cls, remote: RemoteFile) -> _Expected:
        if remote.sha256:
            return cls("sha256", remote.sha256.lower())
        if remote.git_oid:  # a small file kept in git: its blob id is sha1("blob <size>\0" + content)
            return cls("sha1", remote.git_oid.lower(), f"blob {remote.size}\0".encode())
        raise DownloadError(f"the Hub gives no checksum for {remote.path}; refusing to download it unverified")


def sidecar_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def partial_size(part: Path) -> int:
    try:
        return part.stat().st_size
    except OSError:
        return 0


def discard_partial(part: Path) -> None:
    for path in (part, sidecar_path(part)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def _locked(handle: BinaryIO, part: Path) -> Iterator[None]:
    """An exclusive lock on the .part file so two Hearth processes never append to the same one."""
    try:
        import fcntl
    except ImportError:  # Windows: files open for writing are not shared by default anyway
        yield
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        raise DownloadError(f"{part.name} is being downloaded by another Hearth process") from exc
    try:
        yield
    finally:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class FileTransfer:
    """Fetches one RemoteFile of repo_id@revision into part_path and verifies it.

    run() blocks (call it on a worker thread) and returns when the .part file holds exactly the Hub's
    bytes; it raises DownloadCancelled when `stop` is set, ChecksumError (partial deleted) on a mismatch,
    DiskFullError or DownloadError (partial kept) when it cannot go on, HubError for refusals (401/403/404).
    """

    def __init__(
        self,
        hub: HubClient,
        repo_id: str,
        revision: str,
        remote: RemoteFile,
        part_path: Path,
        *,
        stop: threading.Event,
        policy: TransferPolicy | None = None,
        on_bytes: Callable[[int], None] | None = None,
        on_status: Callable[[str], None] | None = None,
        opener: Opener = open_partial,
    ) -> None:
        self.hub = hub
        self.repo_id = repo_id
        self.revision = revision
        self.remote = remote
        self.part = part_path
        self.stop = stop
        self.policy = policy or TransferPolicy()
        self._on_bytes = on_bytes or (lambda _done: None)
        self._on_status = on_status or (lambda _msg: None)
        self._opener = opener
        self.expected = _Expected.of(remote)
        self.offset = 0
        self._socket: socket.socket | None = None

    def abort(self) -> None:
        """Wake a read blocked on a silent server at once (stop is checked only between received pieces).

        Call after setting `stop`, from any thread: shutting the socket down makes the blocked recv return.
        """
        sock = self._socket
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    # ---- the partial file and its sidecar ---------------------------------------------------------------
    def _identity(self) -> dict[str, object]:
        # The content, not the commit: a later commit that only touched the README keeps the partial useful.
        return {
            "repo_id": self.repo_id,
            "path": self.remote.path,
            "size": self.remote.size,
            "digest": f"{self.expected.algorithm}:{self.expected.digest}",
        }

    def _write_sidecar(self, **extra: object) -> None:
        sidecar = sidecar_path(self.part)
        tmp = sidecar.with_name(sidecar.name + ".tmp")
        tmp.write_text(json.dumps({**self._identity(), **extra}, indent=1), encoding="utf-8")
        os.replace(tmp, sidecar)

    def _prepare_partial(self) -> bool:
        """Keep the .part only if its sidecar says it holds this very file; True if already verified."""
        try:
            known = json.loads(sidecar_path(self.part).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            known = None
        if isinstance(known, dict):
            verified = known.pop("verified", False) is True
            if known == self._identity():
                return verified and partial_size(self.part) == self.remote.size
        if self.part.exists():
            log.info("discarding %s: it belongs to another file or version", self.part.name)
            self.part.unlink()
        self.part.parent.mkdir(parents=True, exist_ok=True)
        self._write_sidecar()
        return False

    def _rehash(self, hasher: _Hasher) -> None:
        if self.offset:
            self._on_status(f"checking the {format_bytes(self.offset)} already downloaded")
        with open(self.part, "rb") as existing:
            while block := existing.read(8 * CHUNK_SIZE):
                hasher.update(block)

    def _write(self, handle: BinaryIO, data: bytes, hasher: _Hasher) -> None:
        view = memoryview(data)
        while view:
            try:
                written = handle.write(view)
            except OSError as exc:
                self._on_bytes(self.offset)
                kept = f"{format_bytes(self.offset)} of {format_bytes(self.remote.size)} kept"
                if exc.errno in DISK_FULL_ERRNOS:
                    raise DiskFullError(
                        f"disk full writing {self.part.parent}: {kept} for resuming; free space and resume"
                    ) from exc
                raise DownloadError(f"cannot write {self.part}: {exc.strerror or exc} ({kept})") from exc
            written = written or 0
            hasher.update(data if written == len(data) else bytes(view[:written]))
            self.offset += written
            view = view[written:]
        self._on_bytes(self.offset)

    # ---- the network ------------------------------------------------------------------------------------
    def _location(self) -> str:
        resolved = self.hub.resolve(self.repo_id, self.remote.path, self.revision)
        if resolved.size is not None and resolved.size != self.remote.size:
            raise DownloadError(
                f"{self.remote.path} changed on the Hub ({resolved.size} bytes, listed as "
                f"{self.remote.size}); list the files again"
            )
        etag = (resolved.etag or "").lower()
        if self.expected.algorithm == "sha256" and len(etag) == 64 and etag != self.expected.digest:
            raise DownloadError(f"{self.remote.path} changed on the Hub since it was listed; list the files again")
        return resolved.location

    def _fetch(self, location: str, handle: BinaryIO, hasher: _Hasher) -> _Hasher:
        """GET the rest of the file into handle; returns the hasher (a new one if the server restarted)."""
        headers = {"Accept-Encoding": "identity", **self.hub.auth_headers(location)}
        if self.offset:
            headers["Range"] = f"bytes={self.offset}-"
        p = self.policy
        timeout = httpx2.Timeout(connect=p.connect_timeout, read=p.stall_timeout, write=p.stall_timeout, pool=5.0)
        with get_session().stream("GET", location, headers=headers, timeout=timeout) as response:
            hasher = self._check_response(response, location, handle, hasher)
            stream = response.extensions.get("network_stream")
            self._socket = stream.get_extra_info("socket") if stream is not None else None
            if self.stop.is_set():
                self.abort()  # stopped while connecting
            buffer = bytearray()
            try:
                for piece in response.iter_bytes():
                    room = self.remote.size - self.offset - len(buffer)
                    if len(piece) > room:
                        buffer += piece[:room]
                        raise DownloadError(f"the server sent more than {self.remote.size} bytes of {self.remote.path}")
                    buffer += piece
                    while len(buffer) >= CHUNK_SIZE:  # whole chunks: the file grows in CHUNK_SIZE steps
                        data = bytes(buffer[:CHUNK_SIZE])
                        del buffer[:CHUNK_SIZE]
                        self._write(handle, data, hasher)
                    if self.stop.is_set():
                        break
            finally:
                self._socket = None
                if buffer:  # keep every byte received, whatever interrupted the stream
                    self._write(handle, bytes(buffer), hasher)
        return hasher

    def _check_response(self, response: httpx2.Response, location: str, handle: BinaryIO, hasher: _Hasher) -> _Hasher:
        status = response.status_code
        if status == 416 and self.offset >= self.remote.size:
            return hasher
        if status >= 400:
            response.read()
            if status in (401, 403, 404, 410) and not same_origin(location, self.hub.endpoint):
                raise _LocationExpired(f"the download link expired ({status})")
            if status in (408, 425, 429) or status >= 500:
                raise _Retry(f"the server answered {status}")
            try:
                hf_raise_for_status(response)
            except Exception as exc:
                raise translate_error(
                    exc, repo_id=self.repo_id, path=self.remote.path, has_token=self.hub.has_token
                ) from exc
            raise DownloadError(f"unexpected answer {status} downloading {self.remote.path}")
        if status == 206:
            content_range = response.headers.get("Content-Range", "")
            start = content_range.removeprefix("bytes ").split("-", 1)[0]
            if not start.isdigit() or int(start) != self.offset:
                raise _Retry(f"the server sent the wrong range ({content_range!r} for offset {self.offset})")
            return hasher
        if self.offset:  # 200 to a Range request: the server ignored it, start over
            log.info("server ignored Range for %s; restarting from 0", self.remote.path)
            handle.truncate(0)
            self.offset = 0
            hasher.close()
            hasher = _Hasher(self.expected.algorithm, self.expected.prefix)
        return hasher

    # ---- the loop ---------------------------------------------------------------------------------------
    def run(self) -> Path:
        if self._prepare_partial():
            self.offset = self.remote.size
            self._on_bytes(self.offset)
            return self.part  # verified in an earlier run (another part of the model was still missing)
        with self._opener(self.part) as handle, _locked(handle, self.part):
            self.offset = partial_size(self.part)
            if self.offset > self.remote.size:
                handle.truncate(0)
                self.offset = 0
            hasher = _Hasher(self.expected.algorithm, self.expected.prefix)
            try:
                self._rehash(hasher)
                self._on_bytes(self.offset)
                hasher = self._download(handle, hasher)
                digest = hasher.hexdigest()
            finally:
                hasher.close()
        if digest != self.expected.digest:
            discard_partial(self.part)
            raise ChecksumError(
                f"{self.remote.name} is corrupt ({self.expected.algorithm} {digest[:12]}…, the Hub says "
                f"{self.expected.digest[:12]}…);"
                " it was deleted and kept out of the library: download it again"
            )
        self._write_sidecar(verified=True)
        return self.part

    def _download(self, handle: BinaryIO, hasher: _Hasher) -> _Hasher:
        failures, delay, location = 0, self.policy.backoff_initial, None
        while self.offset < self.remote.size:
            if self.stop.is_set():
                raise DownloadCancelled(f"stopped at {format_bytes(self.offset)} of {format_bytes(self.remote.size)}")
            before = self.offset
            try:
                location = location or self._location()
                hasher = self._fetch(location, handle, hasher)
                if self.offset < self.remote.size and not self.stop.is_set():
                    raise _Retry("the connection closed early")
                continue
            except _LocationExpired as exc:  # at once the first time: a fresh URL is one HEAD away
                reason, wait = str(exc), 0.0 if failures == 0 else delay
            except _Retry as exc:
                reason, wait = str(exc), delay
            except httpx2.TimeoutException:
                reason, wait = f"no data for {self.policy.stall_timeout:g} s (stalled)", delay
            except (httpx2.TransportError, HubOfflineError) as exc:
                reason, wait = f"network error ({exc or type(exc).__name__})", delay
            except HubUnavailableError as exc:
                reason, wait = str(exc), delay
            location = None  # always re-resolve: signed CDN URLs expire
            if self.offset > before:
                failures, delay, wait = 0, self.policy.backoff_initial, min(wait, self.policy.backoff_initial)
            failures += 1
            if failures > self.policy.max_failures:
                raise DownloadError(
                    f"giving up on {self.remote.name} after {failures - 1} retries ({reason}); "
                    f"{format_bytes(self.offset)} kept: resume later"
                )
            log.warning("download of %s: %s; retry %d in %.1f s", self.remote.path, reason, failures, wait)
            self._on_status(f"{reason}; retrying in {wait:.0f} s")
            if self.stop.wait(wait):
                raise DownloadCancelled(f"stopped at {format_bytes(self.offset)}")
            delay = min(delay * 2, self.policy.backoff_max)
        return hasher
