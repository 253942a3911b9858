"""A misbehaving mirror never writes outside the models folder and never receives the token in clear."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from app.core.downloads import DownloadManager, DownloadState
from app.core.errors import DownloadError, HubError
from app.core.hub import HubClient
from app.core.hub_files import QuantOption, RemoteFile
from app.core.paths import AppPaths
from tests.core.hub.conftest import FAST, GOOD_TOKEN, Q4, REPO
from tests.support.fake_hub import FakeHub, FakeRepo

EVIL_NAMES = ["..\\..\\evil-Q4_K_M.gguf", "../evil-Q4_K_M.gguf", "dir/../../evil-Q4_K_M.gguf", "C:evil-Q4_K_M.gguf"]


@pytest.fixture
def evil_hub(repo_files) -> FakeHub:
    data = repo_files[Q4]
    repos = [
        FakeRepo("evil/absolute", {Q4: data}, reported_id="/tmp/hearth-escape"),
        FakeRepo("evil/dotdot", {Q4: data}, reported_id="../../hearth-escape"),
        FakeRepo("evil/names", {name: data for name in EVIL_NAMES} | {"ok/Fine-Q8_0.gguf": data}),
    ]
    with FakeHub(repos, tokens={GOOD_TOKEN}) as hub:
        yield hub


def escaped(root: Path) -> list[Path]:
    """Anything named like the escape target, anywhere it could have landed."""
    return [*root.rglob("*hearth-escape*"), *Path("/tmp").glob("hearth-escape*")]


@pytest.mark.parametrize("repo", ["evil/absolute", "evil/dotdot"])
def test_a_repo_id_sent_back_by_the_server_never_becomes_a_path(evil_hub, paths: AppPaths, tmp_path, repo) -> None:
    client = HubClient(evil_hub.url)
    with pytest.raises(HubError, match="invalid repository id"):
        client.details(repo)
    assert [r.repo_id for r in client.search("")] == ["evil/names"]  # the others are left out
    assert escaped(tmp_path) == []


@pytest.mark.parametrize("repo_id", ["/tmp/hearth-escape", "../../hearth-escape", "a/b/c", "a\\b", "..", "a/..", ""])
def test_the_download_queue_refuses_an_unsafe_repo_id(paths: AppPaths, evil_hub, repo_files, repo_id, tmp_path) -> None:
    option = QuantOption(Q4, "Q4_K_M", (RemoteFile(Q4, repo_files[Q4].size, repo_files[Q4].sha256),), "fits")
    manager = DownloadManager(paths, HubClient(evil_hub.url), policy=FAST)
    try:
        with pytest.raises(DownloadError, match="repository id"):
            manager.add(repo_id, option, revision="main")
    finally:
        manager.close()
    assert escaped(tmp_path) == []


def test_file_names_that_leave_their_folder_are_never_offered_nor_downloaded(evil_hub, paths, repo_files) -> None:
    client = HubClient(evil_hub.url)
    details = client.details("evil/names")
    assert [o.name for o in details.options] == ["Fine-Q8_0.gguf"]
    manager = DownloadManager(paths, client, policy=FAST)
    try:
        for name in EVIL_NAMES:
            remote = RemoteFile(name, repo_files[Q4].size, repo_files[Q4].sha256)
            option = QuantOption(name, "Q4_K_M", (remote,), "fits")
            with pytest.raises(DownloadError, match="file name"):
                manager.add("evil/names", option, revision="main")
        status = manager.wait(manager.add("evil/names", details.options[0], revision=details.sha or "main").id, 30)
        assert status.state is DownloadState.DONE, status.error
        assert status.paths == (paths.models_dir / "evil" / "names" / "ok" / "Fine-Q8_0.gguf",) or status.paths == (
            paths.models_dir / "evil" / "names" / "Fine-Q8_0.gguf",
        )
    finally:
        manager.close()


def test_a_plain_http_mirror_never_receives_the_token(caplog) -> None:
    with caplog.at_level(logging.WARNING, "hearth.hub"):
        client = HubClient("http://mirror.example:8080", GOOD_TOKEN)
    assert not client.has_token
    assert client.auth_headers("http://mirror.example:8080/a/b/resolve/main/x.gguf") == {}
    assert "plain http" in caplog.text
    for endpoint in ("https://mirror.example", "http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:9"):
        assert HubClient(endpoint, GOOD_TOKEN).has_token, endpoint


def test_a_plain_http_mirror_gets_no_authorization_header(repo_files) -> None:
    """Against a real server: requests to a plain-http endpoint that is not this machine carry no token.
    The stand-in Hub listens on 127.0.0.1; the client is told it is a remote host, so the token rule
    applies while the bytes still reach the stand-in."""
    with FakeHub([FakeRepo(REPO, {Q4: repo_files[Q4]})], tokens={GOOD_TOKEN}) as hub:
        port = hub.url.rsplit(":", 1)[1]
        client = HubClient(f"http://hearth-mirror.invalid:{port}", GOOD_TOKEN)
        assert client.auth_headers(f"http://hearth-mirror.invalid:{port}/x") == {}
        assert client._api.token is False
        assert hub.authorized == []
