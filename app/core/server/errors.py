"""Errors in OpenAI's shape ({"error": {"message", "type", "param", "code"}}) with their HTTP status."""

from __future__ import annotations

from typing import Any

# The HearthError classes that stop a reply before it starts (ReplyDone.error_kind), as HTTP answers.
_KINDS: dict[str, tuple[int, str, str | None, str | None]] = {
    # class name: (status, type, param, code)
    "ContextOverflowError": (400, "invalid_request_error", "messages", "context_length_exceeded"),
    "TemplateError": (400, "invalid_request_error", "messages", None),
    "ConfigError": (400, "invalid_request_error", None, None),
    "GenerationError": (400, "invalid_request_error", None, None),
    "EngineBusyError": (503, "server_error", None, None),
    "ModelLoadError": (500, "server_error", "model", "model_load_failed"),
}


class ApiError(Exception):
    """An HTTP error answer: status, message and OpenAI's error fields (headers: e.g. Retry-After)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = error_type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, error_type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def bad_request(param: str, message: str, code: str | None = None) -> ApiError:
    """400 naming the field: "messages[1].role: ..." reads as the field, then what is wrong."""
    return ApiError(400, f"{param}: {message}" if param else message, param=param or None, code=code)


def from_kind(kind: str, message: str) -> ApiError:
    """The answer for a reply that could not start, from the error's class name (ReplyDone.error_kind)."""
    status, error_type, param, code = _KINDS.get(kind, (500, "server_error", None, None))
    return ApiError(status, message, error_type=error_type, param=param, code=code)
