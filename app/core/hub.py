"""The Hugging Face Hub, Qt-free: endpoint, search, a repo's GGUF files, model card facts, clear errors.

Every request goes to the configured endpoint (HF_ENDPOINT or the `hub_endpoint` setting, passed explicitly
because huggingface_hub reads its constants once at import) and only when the user asked for it:
huggingface_hub's telemetry is switched off here, whatever the environment says.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"  # before huggingface_hub reads its constants at import

import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import httpx2
from huggingface_hub import HfApi, RepoFile, get_hf_file_metadata, hf_hub_url, set_client_factory
from huggingface_hub import constants as hf_constants
from huggingface_hub import errors as hf_errors

from app import __version__
from app.core.errors import (
    HearthError,
    HubAuthError,
    HubError,
    HubNotFoundError,
    HubOfflineError,
    HubUnavailableError,
)
from app.core.hub_files import (
    SORTS,
    FitEstimator,
    QuantOption,
    RemoteFile,
    group_gguf_files,
    quant_fit,
    remote_path_problem,
    repo_id_problem,
)

# Belt and braces: if something imported huggingface_hub before us, the env var above came too late; the
# library reads this attribute at call time, so setting it stops the user-agent "agent detection" request.
hf_constants.HF_HUB_DISABLE_TELEMETRY = True

log = logging.getLogger("hearth.hub")

DEFAULT_ENDPOINT = "https://huggingface.co"
API_TIMEOUT = 15.0  # seconds for one API answer; downloads have their own stall timeout


def resolve_endpoint(setting: str = "", environ: dict[str, str] | None = None) -> str:
    """The Hub endpoint: the `hub_endpoint` setting, else HF_ENDPOINT, else huggingface.co (no trailing /)."""
    env = os.environ if environ is None else environ
    raw = (setting or "").strip() or env.get("HF_ENDPOINT", "").strip() or DEFAULT_ENDPOINT
    parsed = urlparse(raw)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise HubError(f"the Hub endpoint must be an http(s) URL like {DEFAULT_ENDPOINT}; got {raw!r}")
    return raw.rstrip("/")


def may_carry_token(endpoint: str) -> bool:
    """Whether a token may be sent to endpoint: over https, or over plain http only to this machine
    (a plain-http mirror elsewhere would send it in clear to anyone on the path)."""
    parsed = urlparse(endpoint)
    if parsed.scheme == "https":
        return True
    host = (parsed.hostname or "").lower()
    return parsed.scheme == "http" and (host == "localhost" or host == "::1" or host.startswith("127."))


def same_origin(url: str, other: str) -> bool:
    """Whether two URLs share scheme, host and port (the token is only ever sent to the endpoint's origin)."""
    a, b = urlparse(url), urlparse(other)
    ports = {"http": 80, "https": 443}
    return (a.scheme, (a.hostname or "").lower(), a.port or ports.get(a.scheme)) == (
        b.scheme,
        (b.hostname or "").lower(),
        b.port or ports.get(b.scheme),
    )


# ---- the HTTP client huggingface_hub uses ------------------------------------------------------------------


class _FailFastTransport(httpx2.BaseTransport):
    """Turns "cannot connect at all" into HubOfflineError.

    huggingface_hub retries connection errors with backoff (about 25 s before an offline search fails);
    HubOfflineError is not an httpx2 error, so its backoff lets it through and offline answers in
    milliseconds. Errors after connecting (timeouts, dropped streams) stay httpx2 errors and are retried.
    """

    def __init__(self) -> None:
        self._inner = httpx2.HTTPTransport()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            return self._inner.handle_request(request)
        except (httpx2.ConnectError, httpx2.ConnectTimeout) as exc:
            origin = f"{request.url.scheme}://{request.url.netloc.decode('ascii', 'replace')}"
            raise HubOfflineError(f"cannot reach {origin} (offline?): {exc or type(exc).__name__}") from exc

    def close(self) -> None:
        self._inner.close()


def _refuse_when_offline(request: httpx2.Request) -> None:
    if hf_constants.is_offline_mode():
        raise HubOfflineError(f"offline mode is on (HF_HUB_OFFLINE); not contacting {request.url.host}")


def _make_client() -> httpx2.Client:
    return httpx2.Client(
        transport=_FailFastTransport(),
        event_hooks={"request": [_refuse_when_offline]},
        follow_redirects=True,
        timeout=None,  # every call passes its own
    )


_client_lock = threading.Lock()
_client_installed = False


def install_http_client() -> None:
    """Make huggingface_hub (in this process) use Hearth's fail-fast client; idempotent."""
    global _client_installed
    with _client_lock:
        if not _client_installed:
            set_client_factory(_make_client)
            _client_installed = True


# ---- results -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RepoSummary:
    """One search result."""

    repo_id: str
    author: str | None
    downloads: int
    likes: int
    last_modified: str | None  # ISO 8601
    gated: bool | str  # False, "auto" or "manual"
    tags: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo_id": self.repo_id,
            "author": self.author,
            "downloads": self.downloads,
            "likes": self.likes,
            "last_modified": self.last_modified,
            "gated": self.gated,
            "tags": list(self.tags),
        }


@dataclass(frozen=True)
class RepoDetails:
    """A repository's model card facts and its GGUF options."""

    repo_id: str
    sha: str | None  # the commit the file list belongs to; downloads pin it
    license: str | None
    gated: bool | str
    private: bool
    downloads: int
    likes: int
    last_modified: str | None
    url: str
    options: tuple[QuantOption, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo_id": self.repo_id,
            "sha": self.sha,
            "license": self.license,
            "gated": self.gated,
            "private": self.private,
            "downloads": self.downloads,
            "likes": self.likes,
            "last_modified": self.last_modified,
            "url": self.url,
            "options": [o.to_dict() for o in self.options],
        }


@dataclass(frozen=True)
class ResolvedFile:
    """Where one file's bytes are right now (a signed CDN URL expires) and what the Hub says they are."""

    url: str  # the endpoint's /resolve/ URL
    location: str  # where to GET the bytes (the redirect target, or url itself)
    size: int | None
    etag: str | None  # the sha256 for LFS files
    commit: str | None


def _iso(value: Any) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else (str(value) if value else None)


def _license(info: Any) -> str | None:
    card = getattr(info, "card_data", None)
    value = getattr(card, "license", None) if card is not None else None
    if isinstance(value, list):
        value = ", ".join(map(str, value))
    if value:
        return str(value)
    for tag in info.tags or ():
        if tag.startswith("license:"):
            return tag.removeprefix("license:")
    return None


def _valid_repo_id(repo_id: object) -> bool:
    if problem := repo_id_problem(repo_id):
        log.warning("the Hub listed an invalid repository id %r (%s); left out", str(repo_id)[:120], problem)
        return False
    return True


def _valid_path(repo_id: str, path: object) -> bool:
    if problem := remote_path_problem(path):
        log.warning("%s lists a file %r that cannot be saved safely (%s); left out", repo_id, str(path)[:200], problem)
        return False
    return True


# ---- errors ------------------------------------------------------------------------------------------------


def translate_error(exc: BaseException, *, repo_id: str = "", path: str = "", has_token: bool = False) -> HubError:
    """A one-line HubError for anything huggingface_hub or httpx2 raised."""
    what = f"{repo_id}/{path}" if path else repo_id or "the Hub"
    if isinstance(exc, HubError):
        return exc
    if isinstance(exc, hf_errors.OfflineModeIsEnabled):
        return HubOfflineError("offline mode is on (HF_HUB_OFFLINE); Hub features are unavailable")
    if isinstance(exc, hf_errors.HFValidationError):
        return HubError(f"not a valid repository id or file name: {repo_id or path!r} (expected owner/name)")
    if isinstance(exc, hf_errors.GatedRepoError):
        if has_token:
            return HubAuthError(
                f"{repo_id} is gated and your token has no access yet: request access on its Hub page, then try again"
            )
        return HubAuthError(
            f"{repo_id} is gated: accept its terms on its Hub page while logged in, then give Hearth "
            "a token (`hearth token set`)"
        )
    status = getattr(getattr(exc, "response", None), "status_code", None)
    message = ""
    if (response := getattr(exc, "response", None)) is not None:
        message = response.headers.get("X-Error-Message", "")
    if status == 401 and "invalid credentials" in message.lower():
        return HubAuthError("the Hub rejected your token (invalid or expired); set a new one: `hearth token set`")
    if isinstance(exc, hf_errors.RevisionNotFoundError):
        return HubNotFoundError(f"revision not found in {repo_id}")
    if isinstance(exc, hf_errors.RemoteEntryNotFoundError):
        return HubNotFoundError(f"file not found on the Hub: {what}")
    if isinstance(exc, hf_errors.RepositoryNotFoundError):
        hint = "" if has_token else " (if it is private, give Hearth a token: `hearth token set`)"
        return HubNotFoundError(f"repository not found: {repo_id}{hint}")
    if status == 403:
        return HubAuthError(f"the Hub refused access to {what} (403 Forbidden){': ' + message if message else ''}")
    if status == 401:
        return HubAuthError(f"the Hub wants a login for {what} (401); give Hearth a token: `hearth token set`")
    if status is not None and (status >= 500 or status == 429):
        return HubUnavailableError(f"the Hub answered {status} for {what}; try again later")
    if status is not None:
        return HubError(f"the Hub answered {status} for {what}")
    if isinstance(exc, httpx2.TimeoutException):
        return HubUnavailableError(f"the Hub did not answer in time for {what}; try again later")
    if isinstance(exc, httpx2.TransportError):
        return HubUnavailableError(f"network error talking to the Hub ({type(exc).__name__}: {exc}); try again")
    if isinstance(exc, HearthError):
        return HubError(str(exc))
    return HubError(f"unexpected answer from the Hub for {what}: {type(exc).__name__}: {exc}")


# ---- the client --------------------------------------------------------------------------------------------


class HubClient:
    """Search, list and resolve files on one Hub endpoint with one (optional) token.

    Every method blocks on the network: call it from a worker thread, never the GUI thread.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        token: str | None = None,
        *,
        fit: FitEstimator = quant_fit,
        timeout: float = API_TIMEOUT,
    ) -> None:
        install_http_client()
        self.endpoint = endpoint.rstrip("/")
        self._token = token or None
        if self._token and not may_carry_token(self.endpoint):
            log.warning("not sending the Hugging Face token to %s: plain http outside this machine", self.endpoint)
            self._token = None
        self._fit = fit
        self.timeout = timeout
        # token=False: never let huggingface_hub pick a token up implicitly; Hearth decides (hub_token.py).
        self._api = HfApi(
            endpoint=self.endpoint,
            token=self._token or False,
            library_name="hearth",
            library_version=__version__,
        )

    def __repr__(self) -> str:  # never show the token
        return f"HubClient({self.endpoint!r}, token={'set' if self._token else 'none'})"

    @property
    def has_token(self) -> bool:
        return self._token is not None

    def repo_url(self, repo_id: str) -> str:
        return f"{self.endpoint}/{repo_id}"

    def auth_headers(self, url: str) -> dict[str, str]:
        """The Authorization header for url, only when url is on the endpoint (never for a CDN)."""
        if self._token and same_origin(url, self.endpoint):
            return {"Authorization": f"Bearer {self._token}"}
        return {}

    @contextlib.contextmanager
    def _errors(self, repo_id: str = "", path: str = "") -> Iterator[None]:
        try:
            yield
        except (HearthError, hf_errors.HfHubHTTPError, hf_errors.HFValidationError, httpx2.HTTPError) as exc:
            raise translate_error(exc, repo_id=repo_id, path=path, has_token=self.has_token) from exc
        except hf_errors.OfflineModeIsEnabled as exc:
            raise translate_error(exc) from exc

    def search(self, query: str, *, sort: str = "downloads", limit: int = 30) -> list[RepoSummary]:
        """GGUF model repositories matching query, sorted by downloads, likes or updated (newest first)."""
        if sort not in SORTS:
            raise HubError(f"sort must be one of {', '.join(SORTS)}; got {sort!r}")
        with self._errors():
            found = self._api.list_models(
                search=query.strip() or None, filter="gguf", sort=SORTS[sort], limit=max(1, limit), full=False
            )
            found = [m for m in found if _valid_repo_id(m.id)]
            return [
                RepoSummary(
                    repo_id=m.id,
                    author=m.author or m.id.split("/")[0],
                    downloads=int(m.downloads or 0),
                    likes=int(m.likes or 0),
                    last_modified=_iso(m.last_modified),
                    gated=m.gated or False,
                    tags=tuple(m.tags or ()),
                )
                for m in found
            ]

    def files(self, repo_id: str, revision: str = "main") -> list[RemoteFile]:
        """Every file in the repository at revision, with sizes and checksums."""
        with self._errors(repo_id):
            entries = self._api.list_repo_tree(repo_id, recursive=True, revision=revision)
            return [
                RemoteFile(
                    path=e.path,
                    size=int(e.size),
                    sha256=e.lfs.sha256 if e.lfs is not None else None,
                    git_oid=None if e.lfs is not None else e.blob_id,
                )
                for e in entries
                if isinstance(e, RepoFile) and _valid_path(repo_id, e.path)
            ]

    def details(self, repo_id: str, revision: str = "main") -> RepoDetails:
        """The model card's license and gated status plus the GGUF options (two requests)."""
        with self._errors(repo_id):
            info = self._api.model_info(repo_id, revision=revision, timeout=self.timeout)
        if problem := repo_id_problem(info.id):  # it becomes a folder name: never a path the server chose
            raise HubError(f"the Hub sent an invalid repository id {str(info.id)[:120]!r} for {repo_id}: {problem}")
        # The file list at the commit the info describes: a push between the two requests cannot mix them up.
        sha = info.sha
        options = group_gguf_files(self.files(repo_id, sha or revision), fit=self._fit)
        return RepoDetails(
            repo_id=info.id,
            sha=sha,
            license=_license(info),
            gated=info.gated or False,
            private=bool(info.private),
            downloads=int(info.downloads or 0),
            likes=int(info.likes or 0),
            last_modified=_iso(info.last_modified),
            url=self.repo_url(info.id),
            options=tuple(options),
        )

    def resolve(self, repo_id: str, path: str, revision: str) -> ResolvedFile:
        """HEAD the file: its current download location (re-resolve after failures: signed URLs expire)."""
        with self._errors(repo_id, path):
            url = hf_hub_url(repo_id, path, revision=revision, endpoint=self.endpoint)
            meta = get_hf_file_metadata(url, token=self._token or False, timeout=self.timeout, endpoint=self.endpoint)
        return ResolvedFile(url=url, location=meta.location, size=meta.size, etag=meta.etag, commit=meta.commit_hash)
