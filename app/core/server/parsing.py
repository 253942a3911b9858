"""Request bodies -> validated parameters. Every refusal is a 400 naming the field, in OpenAI's words where
OpenAI has some; unknown fields are ignored (clients send many that do not apply to a local model)."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, replace
from typing import Any

from app.core.api_tools import ApiTools, parse_api_tools
from app.core.errors import ConfigError
from app.core.fields import SAMPLING_FIELDS
from app.core.messages import ChatMessage, ToolCall
from app.core.sampling import MAX_SEED, PRESETS, RANGES, SamplingSettings
from app.core.server.errors import ApiError, bad_request

UNLIMITED = int(RANGES["max_tokens"].high)  # no max_tokens: until the model stops or the context is full
COMPLETION_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
MAX_STOPS = 16
MAX_EMBEDDING_INPUTS = 2048  # OpenAI's limit per request
# Sampling when a request leaves a field out: llama.cpp's defaults, which its own server uses too (so a
# client moving from llama-server gets the same replies); the repeat penalty is off there, as in OpenAI's API.
API_SAMPLING = replace(PRESETS["llama-cpp-defaults"], max_tokens=UNLIMITED)
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}
_TOOL_FIELDS = ("tools", "tool_choice", "functions", "function_call")
_LEGACY = {"tools": "functions", "tool_choice": "function_call"}


@dataclass(frozen=True)
class Generation:
    """What chat and text completions share."""

    model: str | None
    stream: bool
    include_usage: bool
    sampling: SamplingSettings
    stop: tuple[str, ...]
    grammar: str | None  # GBNF from response_format (json_object, json_schema)
    response_format: dict[str, Any] | None


@dataclass(frozen=True)
class ChatParams(Generation):
    messages: tuple[ChatMessage, ...] = ()
    tools: ApiTools = dataclasses.field(default_factory=ApiTools)  # what the model is shown; its calls go to the client


@dataclass(frozen=True)
class CompletionParams(Generation):
    prompt: str = ""
    echo: bool = False


@dataclass(frozen=True)
class EmbeddingParams:
    model: str | None
    inputs: tuple[str | tuple[int, ...], ...]
    encoding_format: str  # "float" | "base64"
    dimensions: int | None


def parse_json(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or a 400 saying why not."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    return data


# ---- field helpers -------------------------------------------------------------------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bool(data: dict[str, Any], name: str, default: bool = False) -> bool:
    value = data.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_request(name, f"must be true or false, not {value!r}")
    return value


def _model(data: dict[str, Any]) -> str | None:
    value = data.get("model")
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise bad_request("model", f"must be a string (a model id from GET /v1/models), not {value!r}")
    return value


def _sampling(data: dict[str, Any], base: SamplingSettings) -> SamplingSettings:
    changes: dict[str, Any] = {}
    for field in SAMPLING_FIELDS:
        value = data.get(field.name)
        if value is None or field.name in ("max_tokens", "seed"):
            continue
        if field.kind is float and _is_int(value):
            value = float(value)
        try:
            changes[field.name] = field.validate(value)
        except ConfigError as exc:
            raise bad_request(field.name, str(exc)) from None
    seed = data.get("seed")
    if seed is not None:
        if not _is_int(seed):
            raise bad_request("seed", f"must be an integer, not {seed!r}")
        changes["seed"] = seed % (MAX_SEED + 1)  # any 64-bit seed a client sends maps onto llama.cpp's range
    for name in ("max_completion_tokens", "max_tokens"):  # the newer name wins when both are given
        value = data.get(name)
        if value is None:
            continue
        if not _is_int(value) or value < 1:
            raise bad_request(name, f"must be an integer of at least 1, not {value!r}")
        changes["max_tokens"] = min(value, UNLIMITED)
        break
    bias = data.get("logit_bias")
    if bias is not None:
        changes["logit_bias"] = _logit_bias(bias)
    return replace(base, **changes)


def _logit_bias(value: Any) -> tuple[tuple[int, float], ...]:
    if not isinstance(value, dict):
        raise bad_request("logit_bias", 'must be an object of token ids to biases, like {"15": -100}')
    pairs = []
    for key, bias in value.items():
        try:
            token = int(key)
        except (TypeError, ValueError):
            raise bad_request("logit_bias", f"{key!r} is not a token id") from None
        if token < 0:
            raise bad_request("logit_bias", f"token id {token} is negative")
        if not _is_number(bias) or not -100 <= bias <= 100:
            raise bad_request(
                "logit_bias", f"the bias of token {token} must be a number from -100 to 100, not {bias!r}"
            )
        pairs.append((token, float(bias)))
    return tuple(pairs)


def _stop(data: dict[str, Any]) -> tuple[str, ...]:
    value = data.get("stop")
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise bad_request("stop", "must be a string or an array of strings")
    if len(items) > MAX_STOPS:
        raise bad_request("stop", f"at most {MAX_STOPS} stop sequences; got {len(items)}")
    if any(not s for s in items):
        raise bad_request("stop", "a stop sequence must not be empty")
    return tuple(dict.fromkeys(items))


def _response_format(data: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    value = data.get("response_format")
    if value is None:
        return None, None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise bad_request("response_format", 'must be an object like {"type": "json_object"}')
    kind = value["type"]
    if kind == "text":
        return None, None
    from app.core.structured import json_grammar

    if kind == "json_object":
        return json_grammar(), value
    if kind == "json_schema":
        spec = value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise bad_request("response_format.json_schema.schema", "must be a JSON schema object")
        try:
            return json_grammar(schema), value
        except ConfigError as exc:
            raise bad_request("response_format.json_schema.schema", str(exc)) from None
    raise bad_request("response_format.type", f"must be text, json_object or json_schema, not {kind!r}")


def _unsupported(data: dict[str, Any]) -> None:
    """Fields Hearth cannot honour: refused clearly rather than silently ignored."""
    if data.get("logprobs") or data.get("top_logprobs") is not None:
        param = "logprobs" if data.get("logprobs") else "top_logprobs"
        raise bad_request(param, "log probabilities are not supported by Hearth's server")
    n = data.get("n")
    if n is not None and n != 1:
        raise bad_request("n", f"only one choice per request (n = 1) is supported; got {n!r}")
    best_of = data.get("best_of")
    if best_of is not None and best_of != 1:
        raise bad_request("best_of", f"only best_of = 1 is supported; got {best_of!r}")


def _generation(data: dict[str, Any], base: SamplingSettings) -> dict[str, Any]:
    _unsupported(data)
    stream = _bool(data, "stream")
    options = data.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad_request("stream_options", 'must be an object like {"include_usage": true}')
    include_usage = stream and _bool(options or {}, "include_usage")
    grammar, response_format = _response_format(data)
    return {
        "model": _model(data),
        "stream": stream,
        "include_usage": include_usage,
        "sampling": _sampling(data, base),
        "stop": _stop(data),
        "grammar": grammar,
        "response_format": response_format,
    }


# ---- requests --------------------------------------------------------------------------------------------------
def chat_params(data: dict[str, Any]) -> ChatParams:
    common = _generation(data, API_SAMPLING)
    return ChatParams(**common, messages=_messages(data.get("messages")), tools=_tools(data))


def _tools(data: dict[str, Any]) -> ApiTools:
    try:
        return parse_api_tools(data)
    except ConfigError as exc:
        message = str(exc)
        # The check's messages start with the field they are about ("tools[1]: ...", "tool_choice names ...").
        named = re.match(r"(tools|tool_choice|functions|function_call)\b", message)
        given = [name for name in _TOOL_FIELDS if data.get(name) is not None]
        param = named.group(1) if named else (given[0] if given else "tools")
        if "functions" in given and "tools" not in given and param in _LEGACY:
            # The deprecated fields are checked as tools and tool_choice: name the ones the client sent.
            message = re.sub(rf"^{param}\b", _LEGACY[param], message)
            param = _LEGACY[param]
        raise ApiError(400, message if message.startswith(param) else f"{param}: {message}", param=param) from None


def _completion_tools(data: dict[str, Any]) -> None:
    for name in _TOOL_FIELDS:
        if data.get(name) is not None:
            raise bad_request(name, "tools belong to chat: send them to /v1/chat/completions")


def _messages(value: Any) -> tuple[ChatMessage, ...]:
    if not isinstance(value, list) or not value:
        raise bad_request("messages", "must be a non-empty array of messages")
    messages = [_message(item, f"messages[{i}]") for i, item in enumerate(value)]
    _check_tool_results(messages)
    if messages[-1].role not in ("user", "tool"):
        raise bad_request(
            f"messages[{len(messages) - 1}].role", "the conversation must end with a user message or tool results"
        )
    return tuple(messages)


def _message(item: Any, where: str) -> ChatMessage:
    if not isinstance(item, dict):
        raise bad_request(where, "must be an object with a role and content")
    role = item.get("role")
    if role == "function":  # the deprecated shape of a tool result: the function's name, no call id
        return ChatMessage(
            "tool",
            _content(item.get("content"), f"{where}.content", role),
            tool_call_id="",
            name=_name(item, where, required=True),
        )
    if role not in _ROLES:
        raise bad_request(f"{where}.role", f"must be system, developer, user, assistant or tool, not {role!r}")
    name = _name(item, where)
    if role == "tool":
        call_id = item.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise bad_request(f"{where}.tool_call_id", "a tool result needs the id of the call it answers")
        return ChatMessage(
            "tool", _content(item.get("content"), f"{where}.content", role), tool_call_id=call_id, name=name
        )
    calls: tuple[ToolCall, ...] = ()
    if role == "assistant":
        calls = _tool_calls(item, where)
    else:
        for key in ("tool_calls", "function_call", "tool_call_id"):
            if item.get(key) is not None:
                raise bad_request(f"{where}.{key}", f"a {role} message has no {key}")
    return ChatMessage(_ROLES[role], _content(item.get("content"), f"{where}.content", role), calls, name=name)


def _name(item: dict[str, Any], where: str, *, required: bool = False) -> str | None:
    name = item.get("name")
    if (name is None and required) or (name is not None and not isinstance(name, str)):
        raise bad_request(f"{where}.name", "must be a string" + (" (the function's name)" if required else ""))
    return name


def _tool_calls(item: dict[str, Any], where: str) -> tuple[ToolCall, ...]:
    """An assistant message's calls: OpenAI's tool_calls, or the deprecated single function_call."""
    value = item.get("tool_calls")
    legacy = item.get("function_call")
    if legacy is not None and value is None:
        return (_call({"id": "", "type": "function", "function": legacy}, f"{where}.function_call", legacy=True),)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise bad_request(f"{where}.tool_calls", "must be an array of {'id', 'type', 'function'} objects")
    calls = tuple(_call(call, f"{where}.tool_calls[{i}]") for i, call in enumerate(value))
    ids = [call.id for call in calls]
    if len(set(ids)) != len(ids):
        raise bad_request(f"{where}.tool_calls", "two calls have the same id")
    return calls


def _call(value: Any, where: str, *, legacy: bool = False) -> ToolCall:
    if not isinstance(value, dict):
        raise bad_request(where, "must be an object like {'id', 'type': 'function', 'function': {'name', 'arguments'}}")
    if not legacy:
        if not isinstance(value.get("id"), str) or not value["id"]:
            raise bad_request(f"{where}.id", "must be the call's id (a non-empty string)")
        if value.get("type", "function") != "function":
            raise bad_request(f"{where}.type", f"must be function, not {value.get('type')!r}")
    function = value.get("function")
    inner = where if legacy else f"{where}.function"
    if not isinstance(function, dict):
        raise bad_request(inner, "must be an object with a name and arguments")
    if not isinstance(function.get("name"), str) or not function["name"]:
        raise bad_request(f"{inner}.name", "must be the function's name (a non-empty string)")
    arguments = function.get("arguments", "{}")
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise bad_request(f"{inner}.arguments", 'must be a JSON object as text, like \'{"city": "Paris"}\'')
    elif not isinstance(arguments, dict):
        raise bad_request(f"{inner}.arguments", "must be a JSON object as text")
    return ToolCall.from_openai(value)


def _check_tool_results(messages: list[ChatMessage]) -> None:
    """Each tool result answers a call of the assistant message before it (OpenAI checks the same): a result
    the model cannot match to a call would only confuse it."""
    open_calls: set[str] | None = None  # ids of the calls the results now answer; None: no calls to answer
    for i, message in enumerate(messages):
        if message.role == "assistant":
            open_calls = {call.id for call in message.tool_calls} if message.tool_calls else None
        elif message.role == "tool":
            if open_calls is None:
                raise bad_request(
                    f"messages[{i}]", "a tool result must follow the assistant message with the tool_calls it answers"
                )
            if message.tool_call_id and message.tool_call_id not in open_calls:
                raise bad_request(
                    f"messages[{i}].tool_call_id",
                    f"{message.tool_call_id!r} is not the id of a call in the assistant message before it",
                )
        else:
            open_calls = None


def _content(value: Any, where: str, role: str) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        if role == "assistant":
            return ""
        raise bad_request(where, "is required")
    if not isinstance(value, list):
        raise bad_request(where, "must be a string or an array of content parts")
    texts = []
    for i, part in enumerate(value):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind in ("image_url", "input_image", "input_audio", "file"):
            raise bad_request(f"{where}[{i}].type", f"{kind} parts are not supported: this model reads text only")
        else:
            raise bad_request(f"{where}[{i}]", 'must be a content part like {"type": "text", "text": "..."}')
    return "\n".join(texts)


def completion_params(data: dict[str, Any]) -> CompletionParams:
    base = replace(API_SAMPLING, max_tokens=COMPLETION_MAX_TOKENS)
    _completion_tools(data)
    common = _generation(data, base)
    prompt = data.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise bad_request("prompt", "must be a string (or an array of one string)")
    if data.get("suffix"):
        raise bad_request("suffix", "insertion (suffix) is not supported by Hearth's server")
    return CompletionParams(**common, prompt=prompt, echo=_bool(data, "echo"))


def embedding_params(data: dict[str, Any]) -> EmbeddingParams:
    value = data.get("input")
    if isinstance(value, str) or (isinstance(value, list) and value and all(_is_int(t) for t in value)):
        value = [value]
    if not isinstance(value, list) or not value:
        raise bad_request("input", "must be a string, an array of strings or an array of token arrays")
    if len(value) > MAX_EMBEDDING_INPUTS:
        raise bad_request("input", f"at most {MAX_EMBEDDING_INPUTS} inputs per request; got {len(value)}")
    inputs: list[str | tuple[int, ...]] = []
    for i, item in enumerate(value):
        if isinstance(item, str) and item:
            inputs.append(item)
        elif isinstance(item, list) and item and all(_is_int(t) for t in item):
            inputs.append(tuple(item))
        else:
            raise bad_request(f"input[{i}]", "must be a non-empty string or a non-empty array of token ids")
    encoding = data.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise bad_request("encoding_format", f"must be float or base64, not {encoding!r}")
    dimensions = data.get("dimensions")
    if dimensions is not None and (not _is_int(dimensions) or dimensions < 1):
        raise bad_request("dimensions", f"must be a positive integer, not {dimensions!r}")
    return EmbeddingParams(_model(data), tuple(inputs), encoding, dimensions)
