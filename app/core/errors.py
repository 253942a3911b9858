"""The error hierarchy: every failure a user can cause or meet is a HearthError with a one-line message."""

from __future__ import annotations


class HearthError(Exception):
    """Base of all errors Hearth reports to a user; str(err) is a complete one-line explanation."""


class GGUFError(HearthError):
    """A file is not a GGUF Hearth can read (bad magic, truncated, hostile sizes, bad UTF-8 ...)."""


class LibraryError(HearthError):
    """A model-library operation (import, delete) was refused or failed."""


class SettingsError(HearthError):
    """A setting has an invalid value or the settings file cannot be written."""


class TemplateError(HearthError):
    """A chat template could not be found, compiled or rendered."""


class ModelLoadError(HearthError):
    """llama.cpp could not load a model (missing file, unsupported architecture, out of memory ...)."""


class GenerationError(HearthError):
    """A generation could not run (no model, context overflow that cannot be fixed, engine busy ...)."""


class StoreError(HearthError):
    """The conversation store failed (locked, disk full, damaged, bad import file)."""


class HubError(HearthError):
    """A Hugging Face Hub request failed (offline, 401/403/404, gated, bad answer)."""


class DownloadError(HubError):
    """A download failed or was refused (no space, checksum mismatch, cancelled)."""
