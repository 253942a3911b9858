"""OpenAI's response objects, built exactly as the API sends them (field names, nulls, SSE framing)."""

from __future__ import annotations

import base64
import json
import struct
import time
import uuid
from typing import TYPE_CHECKING, Any

from app import __version__

if TYPE_CHECKING:
    from app.core.engine import GenerationStats

FINGERPRINT = f"hearth-{__version__}"
DONE = b"data: [DONE]\n\n"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def sse(payload: dict[str, Any]) -> bytes:
    """One server-sent event: `data: {json}` and a blank line."""
    return b"data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n\n"


def usage(stats: GenerationStats) -> dict[str, Any]:
    """Token counts as the engine counted them; cached_tokens: prompt tokens reused from the KV cache."""
    return {
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.generated_tokens,
        "total_tokens": stats.prompt_tokens + stats.generated_tokens,
        "prompt_tokens_details": {"cached_tokens": max(0, stats.prompt_tokens - stats.evaluated_tokens)},
    }


def finish_reason(stats: GenerationStats) -> str:
    return "length" if stats.finish_reason == "length" else "stop"


# ---- chat completions ----------------------------------------------------------------------------------------
def chat_completion(
    completion_id: str, created: int, model: str, message: dict[str, Any], finish: str, stats: GenerationStats
) -> dict[str, Any]:
    """message: {"role", "content"} and tool_calls when the model called tools (app.core.api_tools)."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": [
            {
                "index": 0,
                "message": {**message, "refusal": None},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": usage(stats),
    }


def chat_chunk(
    completion_id: str,
    created: int,
    model: str,
    delta: dict[str, Any],
    finish: str | None = None,
    *,
    with_usage: bool = False,
) -> dict[str, Any]:
    """A streamed chunk; with stream_options.include_usage every chunk carries "usage": null."""
    chunk: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if with_usage:
        chunk["usage"] = None
    return chunk


def chat_usage_chunk(completion_id: str, created: int, model: str, stats: GenerationStats) -> dict[str, Any]:
    """The last chunk with stream_options.include_usage: no choices, the usage of the whole request."""
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": [],
        "usage": usage(stats),
    }


# ---- text completions ----------------------------------------------------------------------------------------
def text_completion(
    completion_id: str, created: int, model: str, text: str, stats: GenerationStats | None, finish: str | None
) -> dict[str, Any]:
    """A whole completion (stats given), or a streamed chunk of one (stats None)."""
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
    }
    if stats is not None:
        body["usage"] = usage(stats)
    return body


def text_usage_chunk(completion_id: str, created: int, model: str, stats: GenerationStats) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": [],
        "usage": usage(stats),
    }


# ---- models and embeddings -------------------------------------------------------------------------------------
def model_object(model_id: str, created: int) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "hearth"}


def model_list(models: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "list", "data": models}


def embedding_list(model: str, vectors: list[list[float]], tokens: int, encoding: str) -> dict[str, Any]:
    """base64: the little-endian float32 bytes, as OpenAI sends them (its Python client asks for base64)."""
    data = []
    for index, vector in enumerate(vectors):
        value: Any = vector
        if encoding == "base64":
            value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
        data.append({"object": "embedding", "index": index, "embedding": value})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
