"""API keys of remote servers, kept in the OS keyring (as the Hub token is), never in a file or a log.

Keyring calls can block (a locked keyring asks to be unlocked), so the GUI makes them off its thread.
"""

from __future__ import annotations

from app.core.errors import ConfigError

# keyring and app.core.hub_token (which imports huggingface_hub) are imported by the functions that use
# them, on a worker thread: the Settings dialog imports this module for check_key alone.


def _user(server: str) -> str:
    # Keyed by the lower-cased name: server names are unique regardless of case.
    return f"server:{server.strip().lower()}"


def check_key(key: str) -> str:
    """The key stripped; ConfigError when it cannot be an HTTP bearer token (spaces, control characters)."""
    value = key.strip()
    if not value or any(c.isspace() for c in value) or not value.isprintable() or not value.isascii():
        raise ConfigError("an API key is one word of printable ASCII characters (no spaces)")
    return value


def save_key(server: str, key: str) -> None:
    import keyring

    from app.core.hub_token import KEYRING_SERVICE, _keyring_failure

    value = check_key(key)
    try:
        keyring.set_password(KEYRING_SERVICE, _user(server), value)
    except Exception as exc:
        raise ConfigError(f"cannot save the API key of {server!r}: {_keyring_failure(exc)}") from exc


def load_key(server: str) -> str | None:
    """The saved key, or None; ConfigError when the keyring cannot be read (the request must not go out
    without the key the user gave)."""
    import keyring

    from app.core.hub_token import KEYRING_SERVICE, _keyring_failure

    try:
        return keyring.get_password(KEYRING_SERVICE, _user(server))
    except Exception as exc:
        raise ConfigError(f"cannot read the API key of server {server!r}: {_keyring_failure(exc)}") from exc


def clear_key(server: str) -> bool:
    """Forget the key; True if there was one."""
    import keyring

    from app.core.hub_token import KEYRING_SERVICE, _keyring_failure

    try:
        if keyring.get_password(KEYRING_SERVICE, _user(server)) is None:
            return False
        keyring.delete_password(KEYRING_SERVICE, _user(server))
    except Exception as exc:
        raise ConfigError(f"cannot remove the API key of {server!r}: {_keyring_failure(exc)}") from exc
    return True


def masked(key: str | None) -> str:
    """The last four characters only, for lists and status lines."""
    if not key:
        return "none"
    return f"…{key[-4:]}" if len(key) > 8 else "…"
