"""A keyring backend for tests that keeps secrets in a JSON file named by HEARTH_TEST_KEYRING, so a `hearth`
child process (PYTHON_KEYRING_BACKEND=tests.support.file_keyring.FileKeyring) and the test share them.

Test-only: a real install uses the OS keyring and Hearth never writes a key to a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import keyring.backend

ENV = "HEARTH_TEST_KEYRING"
BACKEND = "tests.support.file_keyring.FileKeyring"


class FileKeyring(keyring.backend.KeyringBackend):
    priority = 1  # type: ignore[assignment]

    @property
    def path(self) -> Path:
        return Path(os.environ[ENV])

    def secrets(self) -> dict[str, str]:
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def _save(self, secrets: dict[str, str]) -> None:
        self.path.write_text(json.dumps(secrets))

    def get_password(self, service: str, username: str) -> str | None:
        return self.secrets().get(f"{service}/{username}")

    def set_password(self, service: str, username: str, password: str) -> None:
        self._save({**self.secrets(), f"{service}/{username}": password})

    def delete_password(self, service: str, username: str) -> None:
        secrets = self.secrets()
        del secrets[f"{service}/{username}"]
        self._save(secrets)
