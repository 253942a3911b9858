"""A stand-in Hugging Face Hub on 127.0.0.1 speaking the Hub's HTTP protocol, with faults to inject.

Two listening sockets: the Hub itself (API, /resolve/) and a "CDN" on another port that serves LFS files
through signed, expiring URLs, as the real Hub redirects to. huggingface_hub talks to it unmodified. The
server counts connections and bytes served per file, so tests can prove what was (not) fetched twice.

Faults (per file path, set on FakeHub.faults): drop the connection after N bytes, stall after N bytes
until released, corrupt a byte, answer the next requests with given status codes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlparse

_SECRET = b"fake-hub-signing-key"
_POINTER_SIZE = 134


@dataclass
class FakeFile:
    """A file in a repo: bytes in memory or a file on disk (served with sendfile, for benchmarks)."""

    data: bytes | Path
    lfs: bool = True
    declared_size: int | None = None  # pretend to be this big in listings (free-space tests); never served

    def __post_init__(self) -> None:
        self._sha256: str | None = None

    @property
    def size(self) -> int:
        if self.declared_size is not None:
            return self.declared_size
        return len(self.data) if isinstance(self.data, bytes) else self.data.stat().st_size

    def read(self, start: int, end: int) -> bytes:
        if isinstance(self.data, bytes):
            return self.data[start:end]
        with open(self.data, "rb") as handle:
            handle.seek(start)
            return handle.read(end - start)

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            digest = hashlib.sha256()
            if isinstance(self.data, bytes):
                digest.update(self.data)
            else:
                with open(self.data, "rb") as handle:
                    while block := handle.read(1 << 22):
                        digest.update(block)
            self._sha256 = digest.hexdigest()
        return self._sha256

    @property
    def git_oid(self) -> str:
        """The git blob id: of the LFS pointer for LFS files, of the content otherwise."""
        if self.lfs:
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n"
            content = pointer.encode()
        else:
            content = self.read(0, self.size)
        return hashlib.sha1(f"blob {len(content)}\0".encode() + content).hexdigest()


@dataclass
class FakeRepo:
    repo_id: str
    files: dict[str, FakeFile]
    gated: bool | str = False  # False, "auto" or "manual"
    private: bool = False
    license: str | None = "apache-2.0"
    downloads: int = 0
    likes: int = 0
    last_modified: str = "2024-05-01T12:00:00.000Z"
    tags: tuple[str, ...] = ("gguf",)
    allowed_tokens: set[str] = field(default_factory=set)  # tokens granted access to a gated/private repo
    reported_id: str | None = None  # a misbehaving mirror: the id it sends back instead of repo_id

    @property
    def sha(self) -> str:
        key = "\n".join(f"{p}:{f.sha256 if f.declared_size is None else f.size}" for p, f in sorted(self.files.items()))
        return hashlib.sha1(key.encode()).hexdigest()


@dataclass
class Faults:
    drop_after: int | None = None  # close the connection after this many body bytes (once)
    stall_after: int | None = None  # send this many body bytes, then hang until `release` is set (once)
    release: threading.Event = field(default_factory=threading.Event)
    corrupt_at: int | None = None  # flip this byte in what is served (every time)
    statuses: list[int] = field(default_factory=list)  # answer the next GETs of the bytes with these
    ignore_range: bool = False  # answer Range requests with 200 and the whole file, as some proxies do


class FakeHub:
    """The stand-in Hub. Use as a context manager; `url` is the endpoint to configure."""

    def __init__(self, repos: list[FakeRepo] | None = None, *, cdn: bool = True, tokens: set[str] | None = None):
        self.repos: dict[str, FakeRepo] = {r.repo_id: r for r in repos or []}
        self.use_cdn = cdn
        self.valid_tokens: set[str] = set(tokens or ())
        self.faults: dict[str, Faults] = {}
        self.connections: Counter[str] = Counter()  # "hub" / "cdn" -> accepted connections
        self.bytes_served: Counter[str] = Counter()  # repo path -> body bytes sent
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.authorized: list[tuple[str, str]] = []  # (server role, path) of requests carrying a token
        self.url_ttl = 3600.0
        self.expire_next_urls = 0  # hand out this many already-expired signed URLs
        self._lock = threading.Lock()
        self._hub = _Server(self, "hub")
        self._cdn = _Server(self, "cdn")
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._hub.server_address[1]}"

    @property
    def cdn_url(self) -> str:
        return f"http://127.0.0.1:{self._cdn.server_address[1]}"

    @property
    def ports(self) -> set[int]:
        return {self._hub.server_address[1], self._cdn.server_address[1]}

    def unread_by_clients(self) -> int:
        """Bytes sent to clients that they have not read yet (Linux: rx_queue in /proc/net/tcp).

        Lets a test know a client has consumed everything the server sent before it interrupts it.
        """
        unread = 0
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].split(":")[1], 16)
            if fields[3] == "01" and remote_port in self.ports:  # ESTABLISHED, client side
                unread += int(fields[4].split(":")[1], 16)
        return unread

    def add(self, repo: FakeRepo) -> FakeRepo:
        self.repos[repo.repo_id] = repo
        return repo

    def fault(self, path: str) -> Faults:
        return self.faults.setdefault(path, Faults())

    def __enter__(self) -> FakeHub:
        for server in (self._hub, self._cdn):
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        for faults in self.faults.values():
            faults.release.set()
        for server in (self._hub, self._cdn):
            server.shutdown()
            server.server_close()

    # ---- signed CDN URLs -----------------------------------------------------------------------------------
    def sign(self, repo_id: str, path: str) -> str:
        expires = int(time.time() + self.url_ttl)
        with self._lock:
            if self.expire_next_urls > 0:
                self.expire_next_urls -= 1
                expires = int(time.time()) - 60
        message = f"{repo_id}/{path}:{expires}".encode()
        signature = hmac.new(_SECRET, message, "sha256").hexdigest()[:16]
        return f"{self.cdn_url}/blobs/{quote(repo_id)}/{quote(path)}?expires={expires}&sig={signature}"

    def check_signature(self, repo_id: str, path: str, query: dict[str, list[str]]) -> bool:
        try:
            expires = int(query["expires"][0])
            signature = query["sig"][0]
        except (KeyError, ValueError, IndexError):
            return False
        message = f"{repo_id}/{path}:{expires}".encode()
        good = hmac.new(_SECRET, message, "sha256").hexdigest()[:16]
        return hmac.compare_digest(good, signature) and expires >= time.time()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, hub: FakeHub, role: str) -> None:
        self.hub = hub
        self.role = role
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.hub._lock:
            self.hub.connections[self.role] += 1
        super().process_request(request, client_address)


_API_MODELS = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$")
_API_TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_BLOB = re.compile(r"^/blobs/(?P<repo>[^/]+/[^/]+)/(?P<path>.+)$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    @property
    def hub(self) -> FakeHub:
        return self.server.hub

    # ---- plumbing ------------------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, value: Any, headers: dict[str, str] | None = None) -> None:
        self._send(200, json.dumps(value).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _error(self, status: int, code: str | None, message: str) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, json.dumps({"error": message}).encode(), headers)

    def _token(self) -> str | None:
        value = self.headers.get("Authorization", "")
        return value.removeprefix("Bearer ").strip() or None

    def _record(self) -> None:
        with self.hub._lock:
            self.hub.requests.append((self.command, self.path, self.headers.get("Range")))
            if self.headers.get("Authorization"):
                self.hub.authorized.append((self.server.role, self.path))

    def _auth(self, repo: FakeRepo | None, repo_id: str, *, content: bool) -> bool:
        """Answer 401/403/404 as the Hub does; True when the request may go on."""
        token = self._token()
        if token is not None and token not in self.hub.valid_tokens:
            self._error(401, None, "Invalid credentials in Authorization header")
            return False
        hidden = repo is None or (repo.private and token not in repo.allowed_tokens)
        if hidden:
            # The Hub answers 401 without a token and 404 with one, hiding whether a private repo exists.
            self._error(401 if token is None else 404, "RepoNotFound", "Repository not found")
            return False
        if content and repo.gated and token not in repo.allowed_tokens:
            if token is None:
                self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted. Please log in.")
            else:
                message = f"Access to model {repo_id} is restricted and you are not in the authorized list."
                self._error(403, "GatedRepo", message)
            return False
        return True

    def _repo(self, repo_id: str, rev: str | None) -> tuple[FakeRepo | None, bool]:
        repo = self.hub.repos.get(repo_id)
        good_rev = rev in (None, "main") or (repo is not None and rev == repo.sha)
        return repo, good_rev

    # ---- routes --------------------------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._route()

    def do_GET(self) -> None:
        self._route()

    def _route(self) -> None:
        self._record()
        url = urlparse(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        if self.server.role == "cdn":
            match = _BLOB.match(path)
            if match:
                return self._blob(match["repo"], match["path"], query)
            return self._send(404)
        if path == "/api/models":
            return self._list_models(query)
        if match := _API_TREE.match(path):
            return self._tree(match["repo"], match["rev"], match["path"] or "", query)
        if match := _API_MODELS.match(path):
            return self._model_info(match["repo"], match["rev"])
        if match := _RESOLVE.match(path):
            return self._resolve(match["repo"], match["rev"], match["path"])
        self._error(404, None, "Not found")

    def _summary(self, repo: FakeRepo) -> dict[str, Any]:
        reported = repo.reported_id or repo.repo_id
        return {
            "_id": repo.sha[:24],
            "id": reported,
            "modelId": reported,
            "author": reported.split("/")[0],
            "likes": repo.likes,
            "downloads": repo.downloads,
            "lastModified": repo.last_modified,
            "createdAt": "2024-01-01T00:00:00.000Z",
            "private": repo.private,
            "gated": repo.gated,
            "tags": list(repo.tags) + ([f"license:{repo.license}"] if repo.license else []),
            "library_name": "gguf",
            "pipeline_tag": "text-generation",
        }

    def _list_models(self, query: dict[str, list[str]]) -> None:
        token = self._token()
        repos = [r for r in self.hub.repos.values() if not r.private or token in r.allowed_tokens]
        for wanted in query.get("filter", []):
            repos = [r for r in repos if wanted in r.tags]
        if search := query.get("search", [""])[0].lower():
            repos = [r for r in repos if search in r.repo_id.lower()]
        sort = query.get("sort", [""])[0]
        keys = {"downloads": "downloads", "likes": "likes", "lastModified": "last_modified"}
        if sort in keys:
            repos.sort(key=lambda r: getattr(r, keys[sort]), reverse=True)
        if limit := query.get("limit", [""])[0]:
            repos = repos[: int(limit)]
        self._json([self._summary(r) for r in repos])

    def _model_info(self, repo_id: str, rev: str | None) -> None:
        repo, good_rev = self._repo(repo_id, rev)
        if not self._auth(repo, repo_id, content=False):
            return
        assert repo is not None
        if not good_rev:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        info = self._summary(repo)
        info["sha"] = repo.sha
        info["cardData"] = {"license": repo.license, "tags": list(repo.tags)} if repo.license else {}
        info["siblings"] = [
            {"rfilename": path}
            | {"size": f.size, "blobId": f.git_oid}
            | ({"lfs": {"size": f.size, "sha256": f.sha256, "pointerSize": _POINTER_SIZE}} if f.lfs else {})
            for path, f in sorted(repo.files.items())
        ]
        self._json(info)

    def _tree(self, repo_id: str, rev: str, sub: str, query: dict[str, list[str]]) -> None:
        repo, good_rev = self._repo(repo_id, rev)
        if not self._auth(repo, repo_id, content=False):
            return
        assert repo is not None
        if not good_rev:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        prefix = f"{sub.strip('/')}/" if sub.strip("/") else ""
        entries: list[dict[str, Any]] = []
        folders: set[str] = set()
        for path, f in sorted(repo.files.items()):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix) :]
            if "/" in rest and not recursive:
                folders.add(prefix + rest.split("/", 1)[0])
                continue
            for i in range(rest.count("/")):
                folders.add(prefix + "/".join(rest.split("/")[: i + 1]))
            entry: dict[str, Any] = {"type": "file", "oid": f.git_oid, "size": f.size, "path": path}
            if f.lfs:
                entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": _POINTER_SIZE}
            entries.append(entry)
        dirs = [{"type": "directory", "oid": "0" * 40, "size": 0, "path": d} for d in sorted(folders)]
        self._json(dirs + entries)

    def _resolve(self, repo_id: str, rev: str, path: str) -> None:
        repo, good_rev = self._repo(repo_id, rev)
        if not self._auth(repo, repo_id, content=True):
            return
        assert repo is not None
        if not good_rev:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        f = repo.files.get(path)
        if f is None:
            return self._error(404, "EntryNotFound", f"{path} does not exist on {rev}")
        headers = {"X-Repo-Commit": repo.sha, "Accept-Ranges": "bytes", "ETag": f'"{f.git_oid}"'}
        if f.lfs:
            headers |= {"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(f.size)}
        if f.lfs and self.hub.use_cdn:
            headers["Location"] = self.hub.sign(repo_id, path)
            return self._send(302, b"", headers)
        if f.lfs:
            headers["ETag"] = f'"{f.sha256}"'
        self._serve(path, f, headers)

    def _blob(self, repo_id: str, path: str, query: dict[str, list[str]]) -> None:
        repo = self.hub.repos.get(repo_id)
        f = repo.files.get(path) if repo else None
        if f is None or not self.hub.check_signature(repo_id, path, query):
            # S3/CloudFront answer an expired or forged signature with 403 AccessDenied.
            return self._send(403, b"<Error><Code>AccessDenied</Code></Error>", {"Content-Type": "application/xml"})
        self._serve(path, f, {"ETag": f'"{f.sha256}"', "Accept-Ranges": "bytes"})

    # ---- bytes ---------------------------------------------------------------------------------------------
    def _serve(self, path: str, f: FakeFile, headers: dict[str, str]) -> None:
        faults = self.hub.faults.get(path)
        if self.command == "GET" and faults is not None and faults.statuses:
            status = faults.statuses.pop(0)
            return self._send(status, b"fault", {"Retry-After": "0"})
        size = f.size
        start, end = 0, size
        range_header = None if faults is not None and faults.ignore_range else self.headers.get("Range")
        status = 200
        if range_header:
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header.strip())
            if not match or int(match[1]) >= size:
                return self._send(416, b"", {"Content-Range": f"bytes */{size}"})
            start = int(match[1])
            end = min(int(match[2]) + 1, size) if match[2] else size
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        if self.command == "HEAD":
            return
        if faults is None and isinstance(f.data, Path):
            return self._sendfile(path, f.data, start, end)
        self._write_body(path, f, start, end, faults)

    def _count(self, path: str, n: int) -> None:
        with self.hub._lock:
            self.hub.bytes_served[path] += n

    def _sendfile(self, path: str, file: Path, start: int, end: int) -> None:
        with open(file, "rb") as handle:
            offset = start
            while offset < end:
                sent = os.sendfile(self.connection.fileno(), handle.fileno(), offset, min(end - offset, 1 << 24))
                if sent == 0:
                    break
                offset += sent
                self._count(path, sent)

    def _write_body(self, path: str, f: FakeFile, start: int, end: int, faults: Faults | None) -> None:
        offset = start
        while offset < end:
            stop = min(end, offset + (1 << 18))
            if faults is not None:
                for limit in (faults.drop_after, faults.stall_after):
                    if limit is not None and offset < limit < stop:
                        stop = limit
            data = bytearray(f.read(offset, stop))
            if faults is not None and faults.corrupt_at is not None and offset <= faults.corrupt_at < stop:
                data[faults.corrupt_at - offset] ^= 0xFF
            try:
                self.wfile.write(data)
            except OSError:
                return
            self._count(path, len(data))
            offset = stop
            if faults is not None and faults.drop_after is not None and offset == faults.drop_after:
                faults.drop_after = None
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            if faults is not None and faults.stall_after is not None and offset == faults.stall_after:
                faults.stall_after = None
                faults.release.wait(60)
                self.close_connection = True
                return


def main(argv: list[str] | None = None) -> None:
    """`python -m tests.support.fake_hub REPO_ID FILE...`: serve files until killed (benchmarks, trials)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("repo_id")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--no-cdn", action="store_true", help="serve bytes from /resolve/ directly")
    args = parser.parse_args(argv)
    repo = FakeRepo(args.repo_id, {p.name: FakeFile(p) for p in args.files})
    for f in repo.files.values():
        _ = f.sha256  # hash before announcing the URL, so no timed request pays for it
    with FakeHub([repo], cdn=not args.no_cdn) as hub:
        print(hub.url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
