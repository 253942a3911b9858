"""The Hub token: one entered in Hearth lives in the OS keyring, else the standard huggingface_hub login.

A token is never written to a plain file or a log by Hearth: HubToken's repr masks it, and without a
keyring backend saving fails with a clear message instead of falling back to disk.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

import keyring
import keyring.errors
from huggingface_hub import get_token as hf_get_token

from app.core.errors import TokenStoreError

log = logging.getLogger("hearth.hub")

KEYRING_SERVICE = "Hearth"
KEYRING_USER = "huggingface-token"


class TokenSource(StrEnum):
    HEARTH = "Hearth (OS keyring)"
    HF_LOGIN = "huggingface_hub login (HF_TOKEN or `hf auth login`)"
    NONE = "none"


@dataclass(frozen=True)
class HubToken:
    """A token and where it came from; printing or logging it shows only its last four characters."""

    value: str | None
    source: TokenSource
    note: str = ""  # why the keyring could not be read, when it could not

    def __repr__(self) -> str:
        return f"HubToken({self.masked}, source={self.source.name})"

    __str__ = __repr__

    @property
    def masked(self) -> str:
        if not self.value:
            return "none"
        return f"{self.value[:3]}…{self.value[-4:]}" if len(self.value) > 10 else "…"


def _keyring_failure(exc: Exception) -> str:
    if isinstance(exc, keyring.errors.NoKeyringError):
        return "no OS keyring is available on this system (install/unlock one, e.g. GNOME Keyring or KWallet)"
    return f"the OS keyring failed ({type(exc).__name__}: {exc})"


def load_token() -> HubToken:
    """The token Hearth should use: the one saved in Hearth, else huggingface_hub's login, else none."""
    note = ""
    try:
        saved = keyring.get_password(KEYRING_SERVICE, KEYRING_USER)
    except Exception as exc:  # any backend failure: the token is optional, say why and go on
        saved = None
        note = _keyring_failure(exc)
        log.info("Hub token not read from keyring: %s", note)
    if saved:
        return HubToken(saved, TokenSource.HEARTH)
    login = hf_get_token()
    if login:
        return HubToken(login, TokenSource.HF_LOGIN, note)
    return HubToken(None, TokenSource.NONE, note)


def save_token(token: str) -> HubToken:
    """Keep token in the OS keyring; raises TokenStoreError (never writes a file) when there is no keyring."""
    value = token.strip()
    if not value or any(c.isspace() for c in value) or not value.isprintable():
        raise TokenStoreError("that does not look like a Hub token (one word, like hf_…)")
    try:
        keyring.set_password(KEYRING_SERVICE, KEYRING_USER, value)
    except Exception as exc:
        raise TokenStoreError(
            f"cannot save the token: {_keyring_failure(exc)}; alternatively log in with `hf auth login` "
            "or set HF_TOKEN, which Hearth also reads"
        ) from exc
    return HubToken(value, TokenSource.HEARTH)


def clear_token() -> bool:
    """Forget the token saved in Hearth (huggingface_hub's login stays); True if one was removed."""
    try:
        if keyring.get_password(KEYRING_SERVICE, KEYRING_USER) is None:
            return False
        keyring.delete_password(KEYRING_SERVICE, KEYRING_USER)
    except Exception as exc:
        raise TokenStoreError(f"cannot remove the token: {_keyring_failure(exc)}") from exc
    return True
