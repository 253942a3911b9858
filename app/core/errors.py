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


class HubOfflineError(HubError):
    """The Hub endpoint cannot be reached at all (no network, DNS failure, refused, offline mode)."""


class HubAuthError(HubError):
    """The Hub refused access: gated repository, missing/invalid token, or 403 Forbidden."""


class HubUnavailableError(HubError):
    """The Hub answered with a server error (5xx, 429) or too slowly: temporary, worth retrying later."""


class HubNotFoundError(HubError):
    """The repository, revision or file does not exist (or is private and no token grants access)."""


class TokenStoreError(HubError):
    """The Hub token cannot be saved or read (no OS keyring backend, keyring locked)."""


class ChecksumError(DownloadError):
    """A downloaded file's sha256 differs from the Hub's; the file was kept out of the library."""


class DiskFullError(DownloadError):
    """Not enough free space to start or finish a download; the partial file is kept for resuming."""


class DownloadCancelled(DownloadError):
    """A download was paused or cancelled by the user (not a failure to report loudly)."""


class ConfigError(HearthError):
    """A load or sampling setting is out of range or an invalid combination (refused before llama.cpp)."""


class AssistantError(HearthError):
    """An assistant (a saved chat setup) is invalid, unknown, read-only, or its file cannot be written."""


class PromptError(HearthError):
    """A saved prompt is invalid or unknown, a prompt file cannot be imported, or a variable has no value."""


class ModelOutOfMemoryError(ModelLoadError):
    """llama.cpp could not allocate memory for the model or its context; may carry a suggested layer count."""

    def __init__(self, message: str, suggested_gpu_layers: int | None = None) -> None:
        super().__init__(message)
        self.suggested_gpu_layers = suggested_gpu_layers


class ModelFileMissingError(ModelLoadError):
    """The model file (or one part of a split model) does not exist or is not a file."""


class LoadCancelledError(ModelLoadError):
    """The user cancelled a model load (cancel() during load); nothing stays loaded."""


class UnsupportedArchitectureError(ModelLoadError):
    """This llama.cpp build does not know the model's architecture (a newer llama-cpp-python may)."""

    def __init__(self, message: str, architecture: str = "") -> None:
        super().__init__(message)
        self.architecture = architecture


class ContextOverflowError(GenerationError):
    """The prompt cannot fit in the context window even after dropping old turns."""


class EngineBusyError(GenerationError):
    """The engine is generating; the request (unload, a second generation) must wait."""


class NotAnEmbeddingModelError(ModelLoadError):
    """A file chosen as the embedding model is a chat/base model without a pooling type (or no model)."""


class DocumentsError(HearthError):
    """A document collection or its index cannot be used (unknown name, bad path, damaged index ...)."""


class ToolError(HearthError):
    """A tool could not run: an MCP server failed to start, crashed or timed out, or refused the arguments."""


class RemoteError(HearthError):
    """An OpenAI-compatible server could not be used: unreachable, refused the key, unknown model, busy, or
    the stream broke. The message names the server; retry_after (seconds) is set when the server said when
    to come back (429/503 with Retry-After)."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
