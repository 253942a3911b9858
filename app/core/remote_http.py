"""HTTP to one OpenAI-compatible server: its model list, and streamed chat completions read on a thread of
their own, so Stop and the timeouts never wait on a blocked socket. Every failure is a RemoteError that names
the server and says what to do.
"""

from __future__ import annotations

import email.utils
import json
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app import __version__
from app.core.errors import ConfigError, RemoteError
from app.core.remote_servers import ServerConfig, Timeouts

if TYPE_CHECKING:
    import httpx2

# httpx2 (huggingface_hub's HTTP client) is imported where a request is made, on a worker thread: it takes
# a fifth of a second to import, which the window's start must not pay.

log = logging.getLogger("hearth.remote")

KeySource = Callable[[], "str | None"]
ERROR_BODY_CHARS = 300  # of a server's error message quoted to the user


class ServerLink:
    """One server's HTTP client (connections are kept alive between replies) and its API key.

    Thread-safe: replies of several clients may stream from one server at once."""

    def __init__(
        self, config: ServerConfig, key: KeySource | str | None = None, timeouts: Timeouts | None = None
    ) -> None:
        self.config = config
        self.timeouts = timeouts or Timeouts()
        self._key_source: KeySource = key if callable(key) else _constant(key)
        self._key: str | None = None
        self._key_loaded = False
        self._lock = threading.Lock()
        self._client: httpx2.Client | None = None

    @property
    def name(self) -> str:
        return self.config.name

    def url(self, path: str) -> str:
        return f"{self.config.url}/{path.lstrip('/')}"

    # ---- connection -------------------------------------------------------------------------------------------
    def client(self) -> httpx2.Client:
        import httpx2

        with self._lock:
            if self._client is None:
                # Redirects are not followed: the key must never go to a host the user did not name.
                # The stream's own deadlines (first token, between chunks) are watched by its consumer; the
                # read timeout here is only a backstop behind them.
                t = self.timeouts
                self._client = httpx2.Client(
                    timeout=httpx2.Timeout(max(t.first_token, t.between_chunks) + 5, connect=t.connect),
                    follow_redirects=False,
                    headers={"User-Agent": f"Hearth/{__version__}"},
                )
            return self._client

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def headers(self) -> dict[str, str]:
        """The request headers, with the key when the server has one and may receive it (else RemoteError:
        a key never goes out over plain HTTP to another machine unless the user confirmed it)."""
        headers = {"Accept": "application/json, text/event-stream"}
        config = self.config
        if not config.has_key:
            return headers
        if config.key_problem:
            raise RemoteError(f"server {config.name!r}: the API key was not sent: {config.key_problem}")
        with self._lock:
            if not self._key_loaded:
                try:
                    self._key = self._key_source()
                except ConfigError as exc:
                    raise RemoteError(str(exc)) from None
                self._key_loaded = True
            key = self._key
        if not key:
            raise RemoteError(
                f"server {config.name!r} should have an API key but none is saved in the keyring; "
                "enter it again in Settings → Servers (or `hearth servers add` with --api-key-stdin)"
            )
        headers["Authorization"] = f"Bearer {key}"
        return headers

    # ---- requests ----------------------------------------------------------------------------------------------
    def list_models(self) -> list[dict[str, Any]]:
        """GET /models: the entries of "data" (each has an "id")."""
        import httpx2

        url = self.url("models")
        headers = self.headers()
        try:
            response = self.client().get(url, headers=headers, timeout=self._list_timeout())
        except httpx2.HTTPError as exc:
            raise transport_error(self.config, exc, listing=True, connect_s=self.timeouts.connect) from None
        if response.status_code != 200:
            raise status_error(self.config, response.status_code, response.headers, response.text, listing=True)
        try:
            data = response.json()
            entries = data["data"]
            if not isinstance(entries, list):
                raise TypeError("data is not a list")
            return [e for e in entries if isinstance(e, dict) and isinstance(e.get("id"), str)]
        except (ValueError, KeyError, TypeError) as exc:
            raise RemoteError(
                f"server {self.name!r} answered {url} with something that is not an OpenAI model list ({exc}); "
                "is the base URL right?"
            ) from None

    def _list_timeout(self) -> httpx2.Timeout:
        import httpx2

        return httpx2.Timeout(self.timeouts.list_models, connect=min(self.timeouts.connect, self.timeouts.list_models))

    def stream(self, path: str, body: bytes) -> SseStream:
        """POST body (JSON) to path and read the server-sent events on a thread of their own."""
        return SseStream(self, self.url(path), self.headers(), body)


def _constant(key: str | None) -> KeySource:
    return lambda: key


# ---- a streamed request ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamItem:
    """What the reader thread hands over: kind "open" (200 and headers), "data" (one SSE data payload),
    "end" (the connection closed normally), "status" (a non-200 answer: status, retry_after, text),
    "error" (the transport failed: exc)."""

    kind: str
    data: str = ""
    status: int = 0
    headers: Any = None
    exc: BaseException | None = None
    at: float = 0.0


class SseStream:
    """One POST whose server-sent events are read on a thread of its own and handed over through a queue.

    abort() shuts the socket down (the server sees the connection close and stops generating; a read
    blocked in another thread returns at once)."""

    def __init__(self, link: ServerLink, url: str, headers: dict[str, str], body: bytes) -> None:
        self.link = link
        self.items: queue.SimpleQueue[StreamItem] = queue.SimpleQueue()
        self.started = time.monotonic()
        self._sockets: list[socket.socket] = []
        self._aborted = threading.Event()
        self._thread = threading.Thread(
            target=self._read, args=(url, headers, body), name=f"hearth-sse-{link.name}", daemon=True
        )
        self._thread.start()

    def next(self, timeout: float) -> StreamItem | None:
        try:
            return self.items.get(timeout=timeout)
        except queue.Empty:
            return None

    def abort(self) -> None:
        """Close the connection now (any thread)."""
        self._aborted.set()
        for sock in list(self._sockets):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _trace(self, event: str, info: dict[str, Any]) -> None:
        # A fresh connection's socket, as soon as it exists: Stop can close it even before the headers came.
        if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            self._remember(info.get("return_value"))

    def _remember(self, stream: Any) -> None:
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            self._sockets.append(sock)
            if self._aborted.is_set():
                self.abort()

    def _put(self, kind: str, **fields: Any) -> None:
        self.items.put(StreamItem(kind, at=time.monotonic(), **fields))

    def _read(self, url: str, headers: dict[str, str], body: bytes) -> None:
        """On the reader thread: touches nothing but its queue and its sockets."""
        client = self.link.client()
        send = {**headers, "Content-Type": "application/json"}
        try:
            with client.stream("POST", url, content=body, headers=send, extensions={"trace": self._trace}) as response:
                self._remember(response.extensions.get("network_stream"))
                if self._aborted.is_set():
                    return
                if response.status_code != 200:
                    text = response.read().decode("utf-8", "replace")
                    self._put("status", status=response.status_code, headers=response.headers, data=text)
                    return
                self._put("open", headers=response.headers)
                data: list[str] = []
                for line in response.iter_lines():
                    if self._aborted.is_set():
                        return
                    if line.startswith("data:"):
                        data.append(line[5:].removeprefix(" "))
                    elif not line and data:  # a blank line ends an event
                        self._put("data", data="\n".join(data))
                        data = []
                    elif line.startswith(":") or not line:
                        self._put("ping")  # a comment (keep-alive): the server is alive
                if data:
                    self._put("data", data="\n".join(data))
            self._put("end")
        except Exception as exc:  # every failure goes to the consumer; this thread never raises
            if not self._aborted.is_set():
                self._put("error", exc=exc)


# ---- errors in words -------------------------------------------------------------------------------------------


def retry_after(headers: Any) -> float | None:
    """Retry-After in seconds (a number or an HTTP date), or None."""
    value = headers.get("retry-after") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def server_message(text: str) -> str:
    """The message of an error body ({"error": {"message"}}, {"error": "..."}, {"detail": ...} or text)."""
    message: Any = text
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error", data.get("detail", data.get("message")))
        if isinstance(error, dict):
            message = error.get("message", json.dumps(error))
        elif error is not None:
            message = error if isinstance(error, str) else json.dumps(error)
    message = " ".join(str(message).split())
    return message[:ERROR_BODY_CHARS] + ("…" if len(message) > ERROR_BODY_CHARS else "")


def status_error(
    config: ServerConfig, status: int, headers: Any, text: str, *, listing: bool = False, model: str = ""
) -> RemoteError:
    name = repr(config.name)
    reason = f"{status} {_phrase(status)}"
    detail = server_message(text)
    said = f": {detail}" if detail else ""
    wait = retry_after(headers)
    if status in (401, 403):
        message = (
            f"server {name} refused access ({reason}{said}); add or correct its API key in Settings → Servers "
            "(or `hearth servers add NAME URL --api-key-stdin`)"
        )
    elif status == 404:
        message = (
            f"server {name} has no model list at {config.url}/models ({reason}); is the base URL right? It usually "
            "ends in /v1"
            if listing
            else f"server {name} answered {reason} for model {model!r}{said}; choose a model the server lists, "
            "or check the base URL"
        )
    elif status in (429, 503):
        what = "is rate-limiting requests" if status == 429 else "is busy or unavailable"
        when = f"; retry in {wait:.0f} s" if wait is not None else "; retry in a moment"
        message = f"server {name} {what} ({reason}{said}){when}"
    elif 300 <= status < 400:
        where = headers.get("location", "") if headers is not None else ""
        message = f"server {name} redirects to {where or 'another address'} ({reason}); use that URL instead"
    elif status >= 500:
        message = f"server {name} failed ({reason}{said})"
    else:
        message = f"server {name} refused the request ({reason}{said})"
    return RemoteError(message, status, wait)


def transport_error(
    config: ServerConfig, exc: BaseException, *, listing: bool = False, connect_s: float | None = None
) -> RemoteError:
    """A failure before any answer: cannot connect, no answer in time."""
    import httpx2

    name, url = repr(config.name), config.url
    if isinstance(exc, httpx2.ConnectTimeout):
        within = f" within {connect_s:g} s" if connect_s is not None else ""
        return RemoteError(f"cannot reach server {name} at {url}: no answer{within}; is the address right?")
    if isinstance(exc, httpx2.ConnectError):
        return RemoteError(f"cannot reach server {name} at {url}: {_connect_reason(exc)}; is it running?")
    if isinstance(exc, httpx2.TimeoutException):
        return RemoteError(f"server {name} at {url} did not answer in time ({type(exc).__name__})")
    what = "listing its models" if listing else "sending the request"
    return RemoteError(f"server {name} at {url} failed while {what}: {_reason(exc)}")


def _connect_reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    lowered = text.lower()
    if "refused" in lowered:
        return "connection refused"
    if "name or service" in lowered or "nodename" in lowered or "getaddrinfo" in lowered:
        return "the host name is not known"
    if "certificate" in lowered or "ssl" in lowered:
        return f"the TLS connection failed ({text})"
    return text


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _phrase(status: int) -> str:
    try:
        from http import HTTPStatus

        return HTTPStatus(status).phrase
    except ValueError:
        return ""
