"""Search, file lists, model card facts and every refusal, through the real huggingface_hub client."""

from __future__ import annotations

import socket
import time

import pytest
from huggingface_hub import constants as hf_constants

from app.core.errors import HubAuthError, HubError, HubNotFoundError, HubOfflineError
from app.core.hub import DEFAULT_ENDPOINT, HubClient, resolve_endpoint, same_origin
from app.core.hub_files import Fit
from app.core.settings import Settings
from tests.core.hub.conftest import BIG, GATED, GOOD_TOKEN, OTHER_TOKEN, PRIVATE, Q4, Q8, REPO, SPLIT
from tests.support.fake_hub import FakeHub


def test_search_finds_gguf_repos_sorted_as_asked(client: HubClient, fake_hub: FakeHub):
    by_downloads = client.search("gguf", sort="downloads")
    assert [r.repo_id for r in by_downloads][:2] == ["hearth-test/Popular-Mistral-GGUF", REPO]
    assert "hearth-test/Not-A-GGUF" not in [r.repo_id for r in by_downloads]  # only GGUF repos
    assert PRIVATE not in [r.repo_id for r in by_downloads]
    assert client.search("mistral", sort="likes")[0].repo_id == "hearth-test/Liked-Mistral-GGUF"
    assert client.search("mistral", sort="updated")[0].repo_id == "hearth-test/Liked-Mistral-GGUF"
    top = client.search("tiny-llama")[0]
    assert (top.repo_id, top.downloads, top.likes, top.author) == (REPO, 500, 7, "hearth-test")
    assert top.last_modified.startswith("2024-03-01")
    gated = client.search("gated")[0]
    assert gated.gated == "manual"
    assert client.search("nothing-like-this") == []
    sent = [path for method, path, _ in fake_hub.requests if path.startswith("/api/models?")]
    assert any("filter=gguf" in p and "sort=likes" in p for p in sent)
    with pytest.raises(HubError, match="sort must be one of downloads, likes, updated"):
        client.search("x", sort="stars")


def test_details_group_the_files_by_quant_with_size_sha256_and_fit(client: HubClient, repo_files):
    details = client.details(REPO)
    assert (details.license, details.gated, details.private) == ("apache-2.0", False, False)
    assert details.sha and len(details.sha) == 40
    assert details.url.endswith(f"/{REPO}")
    by_quant = {o.quant: o for o in details.options}
    assert set(by_quant) == {"Q4_K_M", "Q8_0", "Q6_K", "F16"}
    q4 = by_quant["Q4_K_M"]
    assert q4.size == repo_files[Q4].size
    assert q4.files[0].sha256 == repo_files[Q4].sha256
    assert q4.fit is Fit.FITS  # half a megabyte fits anywhere
    split = by_quant["F16"]
    assert split.name == SPLIT and len(split.files) == 3 and split.complete
    assert split.size == sum(repo_files[f.path].size for f in split.files)
    assert by_quant["Q6_K"].files[0].path == BIG  # found in a sub-folder
    assert "README.md" not in [f.path for o in details.options for f in o.files]


def test_files_list_everything_with_checksums(client: HubClient, repo_files):
    listing = {f.path: f for f in client.files(REPO)}
    assert listing[Q8].sha256 == repo_files[Q8].sha256
    assert listing["README.md"].sha256 is None
    assert listing["README.md"].git_oid == repo_files["README.md"].git_oid  # non-LFS: the git blob id


def test_gated_repo_shows_its_status_and_license_without_a_token(client: HubClient):
    details = client.details(GATED)
    assert details.gated == "manual"
    assert details.license == "llama3"


def test_gated_file_without_a_token_asks_for_one(client: HubClient):
    with pytest.raises(HubAuthError, match=rf"{GATED} is gated: accept its terms .*hearth token set"):
        client.resolve(GATED, Q4, "main")


def test_gated_file_with_a_token_without_access_says_to_request_it(fake_hub: FakeHub):
    with pytest.raises(HubAuthError, match="gated and your token has no access yet: request access"):
        HubClient(fake_hub.url, OTHER_TOKEN).resolve(GATED, Q4, "main")


def test_gated_and_private_files_download_with_a_granted_token(fake_hub: FakeHub):
    client = HubClient(fake_hub.url, GOOD_TOKEN)
    assert client.resolve(GATED, Q4, "main").size == fake_hub.repos[GATED].files[Q4].size
    assert client.details(PRIVATE).private is True


def test_invalid_token_is_reported_as_such(fake_hub: FakeHub):
    with pytest.raises(HubAuthError, match="rejected your token .*hearth token set"):
        HubClient(fake_hub.url, "hf_wrong").details(REPO)


def test_missing_and_private_repos_are_not_found_with_a_hint(client: HubClient, fake_hub: FakeHub):
    with pytest.raises(HubNotFoundError, match="repository not found: nobody/nothing .*hearth token set"):
        client.details("nobody/nothing")
    with pytest.raises(HubNotFoundError, match=f"repository not found: {PRIVATE}"):
        client.details(PRIVATE)
    with pytest.raises(HubNotFoundError, match=f"repository not found: {PRIVATE}$"):
        HubClient(fake_hub.url, OTHER_TOKEN).details(PRIVATE)  # 404 with a token: no login hint


def test_missing_file_and_revision_404s_are_clear(client: HubClient):
    with pytest.raises(HubNotFoundError, match=f"file not found on the Hub: {REPO}/nope.gguf"):
        client.resolve(REPO, "nope.gguf", "main")
    with pytest.raises(HubNotFoundError, match=f"revision not found in {REPO}"):
        client.details(REPO, revision="0" * 40)


def test_bad_repo_id_is_one_clear_line(client: HubClient):
    with pytest.raises(HubError, match="not a valid repository id"):
        client.details("not a repo//id")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_no_network_fails_fast_with_an_offline_error():
    client = HubClient(f"http://127.0.0.1:{_closed_port()}")
    for call in (
        lambda: client.search("x"),
        lambda: client.details(REPO),
        lambda: client.resolve(REPO, Q4, "main"),
    ):
        start = time.monotonic()
        with pytest.raises(HubOfflineError, match=r"cannot reach http://127\.0\.0\.1:\d+ \(offline\?\)"):
            call()
        assert time.monotonic() - start < 2.0  # no retry-with-backoff for a machine that is offline


def test_hf_hub_offline_mode_is_an_offline_error(client: HubClient, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubOfflineError, match="offline mode is on"):
        client.search("x")


def test_endpoint_comes_from_the_setting_then_hf_endpoint_then_the_hub(hearth_home):
    assert resolve_endpoint("", {}) == DEFAULT_ENDPOINT
    assert resolve_endpoint("", {"HF_ENDPOINT": "https://hf-mirror.com/"}) == "https://hf-mirror.com"
    assert resolve_endpoint("http://10.0.0.2:8080", {"HF_ENDPOINT": "https://x.org"}) == "http://10.0.0.2:8080"
    with pytest.raises(HubError, match="must be an http\\(s\\) URL"):
        resolve_endpoint("ftp://mirror", {})
    settings = Settings(hearth_home.settings_file)
    settings.set("hub_endpoint", "https://mirror.example")
    assert resolve_endpoint(settings.get("hub_endpoint"), {}) == "https://mirror.example"


def test_the_token_goes_only_to_the_endpoint_never_to_a_cdn(fake_hub: FakeHub):
    client = HubClient(fake_hub.url, GOOD_TOKEN)
    assert client.auth_headers(f"{fake_hub.url}/x") == {"Authorization": f"Bearer {GOOD_TOKEN}"}
    assert client.auth_headers(f"{fake_hub.cdn_url}/x") == {}
    assert GOOD_TOKEN not in repr(client)
    assert same_origin("https://huggingface.co/a", "https://huggingface.co:443/b")
    assert not same_origin("https://huggingface.co/a", "http://huggingface.co/b")


def test_huggingface_hub_telemetry_is_off():
    assert hf_constants.HF_HUB_DISABLE_TELEMETRY is True
