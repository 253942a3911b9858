"""The Hub token: OS keyring or the huggingface_hub login, never a plain file or a log line."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import keyring
import keyring.backend
import keyring.backends.fail
import pytest

from app.core.downloads import DownloadManager, DownloadState
from app.core.errors import TokenStoreError
from app.core.hub import HubClient
from app.core.hub_files import select_option
from app.core.hub_token import HubToken, TokenSource, clear_token, load_token, save_token
from app.core.logs import setup_logging
from tests.core.hub.conftest import FAST, GATED, GOOD_TOKEN


class MemoryKeyring(keyring.backend.KeyringBackend):
    """A keyring backend that keeps secrets in this process only (set explicitly; nothing touches disk)."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.secrets: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.secrets.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.secrets[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        del self.secrets[(service, username)]


@pytest.fixture
def memory_keyring() -> Iterator[MemoryKeyring]:
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


@pytest.fixture
def no_keyring() -> Iterator[None]:
    previous = keyring.get_keyring()
    keyring.set_keyring(keyring.backends.fail.Keyring())
    yield
    keyring.set_keyring(previous)


def test_a_token_entered_in_hearth_lives_in_the_keyring(memory_keyring: MemoryKeyring):
    assert load_token().source is TokenSource.NONE
    saved = save_token("  hf_abcdefghijklmnop1234 \n")
    assert saved.value == "hf_abcdefghijklmnop1234"
    assert memory_keyring.secrets == {("Hearth", "huggingface-token"): "hf_abcdefghijklmnop1234"}
    loaded = load_token()
    assert (loaded.value, loaded.source) == ("hf_abcdefghijklmnop1234", TokenSource.HEARTH)
    assert clear_token() is True and clear_token() is False
    assert load_token().value is None


def test_hearths_token_wins_over_the_huggingface_login(memory_keyring, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_TOKEN", "hf_fromthelogin00000001")
    assert load_token() == HubToken("hf_fromthelogin00000001", TokenSource.HF_LOGIN)
    save_token("hf_enteredinhearth0002")
    assert load_token().source is TokenSource.HEARTH


def test_malformed_tokens_are_refused(memory_keyring):
    for bad in ("", "   ", "hf_two words", "hf_\x00control"):
        with pytest.raises(TokenStoreError, match="does not look like a Hub token"):
            save_token(bad)
    assert memory_keyring.secrets == {}


def test_without_a_keyring_saving_fails_soft_and_nothing_is_written(no_keyring, hearth_home, tmp_path):
    with pytest.raises(TokenStoreError, match="no OS keyring is available.*`hf auth login`.*HF_TOKEN"):
        save_token("hf_nowhere00000000001")
    token = load_token()
    assert token.value is None and "no OS keyring" in token.note
    with pytest.raises(TokenStoreError, match="cannot remove the token"):
        clear_token()
    assert not _files_containing(tmp_path, b"hf_nowhere00000000001")


def test_the_login_token_works_without_a_keyring(no_keyring, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_TOKEN", "hf_fromthelogin00000001")
    assert load_token().source is TokenSource.HF_LOGIN


def test_repr_and_str_mask_the_token():
    token = HubToken("hf_abcdefghijklmnop1234", TokenSource.HEARTH)
    for text in (repr(token), str(token), f"{token}", token.masked):
        assert "abcdefghijklmnop" not in text
    assert token.masked == "hf_…1234"


def _files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_the_token_never_reaches_a_file_or_the_log(memory_keyring, fake_hub, paths, tmp_path):
    setup_logging(paths.logs_dir, logging.DEBUG)
    hf_logger = logging.getLogger("huggingface_hub")
    previous_level = hf_logger.level
    hf_logger.setLevel(logging.DEBUG)
    try:
        _download_gated_with_token(fake_hub, paths)
    finally:
        hf_logger.setLevel(previous_level)
    assert (paths.logs_dir / "hearth.log").stat().st_size > 0
    assert _files_containing(tmp_path, GOOD_TOKEN.encode()) == []


def _download_gated_with_token(fake_hub, paths) -> None:
    token = save_token(GOOD_TOKEN)
    client = HubClient(fake_hub.url, token.value)
    details = client.details(GATED)
    manager = DownloadManager(paths, client, policy=FAST)
    status = manager.wait(
        manager.add(GATED, select_option(details.options, quant="Q4_K_M"), revision=details.sha).id,
        timeout=30,
    )
    manager.close()
    assert status.state is DownloadState.DONE, status.error
