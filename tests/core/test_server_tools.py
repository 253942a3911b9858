"""Tool calling through `hearth serve` with the official openai client: a forced call (tool_choice "required"
or a named function, grammar-constrained, so even the tiny random-weight model writes a valid one) comes back
as message.tool_calls or as streamed delta.tool_calls, validated against the tool's schema; the client's
follow-up (its call and the tool's result) is answered and, with --save-history, continues the stored
conversation; bad tools, choices and tool messages are 400s naming the field."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState

from tests.core import test_server as base
from tests.core.test_server import KEY, error_of, serve, sse_events, user
from tests.support.serve import ServeProcess

# test_server's library (the tiny ChatML chat.gguf) and its server with an API key, started for this module.
models = base.models
server = base.server

WEATHER_ARGS = {
    "type": "object",
    "properties": {
        # Closed sets: a random-weight model's free string may be cut by max_tokens or decode to more
        # characters than a maxLength allows (bytes that are no UTF-8 read as U+FFFD); a call it could
        # write that fails the schema is, rightly, not reported as a call.
        "city": {"enum": ["Paris", "Oslo", "Lima", "Quito"]},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "detailed": {"type": "boolean"},
    },
    "required": ["city", "unit", "detailed"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "description": "The weather in a city.", "parameters": WEATHER_ARGS},
}
CLOCK_ARGS = {"type": "object", "properties": {}, "additionalProperties": False}
CLOCK = {"type": "function", "function": {"name": "get_time", "description": "The time.", "parameters": CLOCK_ARGS}}
SCHEMAS = {"get_weather": WEATHER_ARGS, "get_time": CLOCK_ARGS}
NAMED = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture(scope="module")
def client(server: ServeProcess) -> openai.OpenAI:
    return server.client(KEY)


def check_call(name: str, arguments: str) -> dict[str, Any]:
    """A reported call names one of the tools and its arguments validate against that tool's schema."""
    value = json.loads(arguments)
    jsonschema.validate(value, SCHEMAS[name])
    return value


# ---- calls -------------------------------------------------------------------------------------------------
def test_a_named_tool_choice_gets_a_valid_call(client: openai.OpenAI):
    reply = client.chat.completions.create(
        model="chat.gguf",
        messages=user("What is the weather in Paris?"),
        tools=[WEATHER, CLOCK],  # type: ignore[list-item]
        tool_choice=NAMED,  # type: ignore[arg-type]
        max_tokens=200,
        seed=1,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id and call.function.name == "get_weather"
    check_call(call.function.name, call.function.arguments)
    assert choice.message.content is None or "<tool_call>" not in choice.message.content
    assert reply.usage is not None and reply.usage.completion_tokens > 0


def test_a_streamed_required_call_arrives_as_tool_call_deltas(server: ServeProcess, client: openai.OpenAI):
    body = {
        "model": "chat.gguf",
        "messages": user("Anything?"),
        "tools": [WEATHER, CLOCK],
        "tool_choice": "required",
        "max_tokens": 200,
        "seed": 2,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    payloads = sse_events(server, "/v1/chat/completions", body)
    assert payloads[-1] == b"[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert "<tool_call>" not in text and "get_" not in text  # a call's text is never streamed as content
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "tool_calls" and set(finishes[:-1]) == {None}
    (calls,) = [
        c["choices"][0]["delta"]["tool_calls"]
        for c in chunks
        if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
    ]
    assert [call["index"] for call in calls] == list(range(len(calls))) and calls
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    # The openai client's own stream helper accumulates the same chunks into one message.
    state = ChatCompletionStreamState()
    for chunk in client.chat.completions.create(**body):
        state.handle_chunk(chunk)
    final = state.get_final_completion().choices[0]
    assert final.finish_reason == "tool_calls" and final.message.tool_calls
    for call in final.message.tool_calls:
        assert call.function.name in SCHEMAS
        check_call(call.function.name, call.function.arguments)


def test_deprecated_functions_and_function_call_work_too(client: openai.OpenAI):
    reply = client.chat.completions.create(
        model="chat.gguf",
        messages=user("weather?"),
        functions=[WEATHER["function"]],  # type: ignore[list-item]
        function_call={"name": "get_weather"},
        max_tokens=200,
        seed=3,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    call = choice.message.tool_calls[0].function
    check_call("get_weather", call.arguments)
    # The same client's follow-up in the old shapes: the assistant's function_call, a "function" result.
    messages = [
        *user("weather?"),
        {"role": "assistant", "content": None, "function_call": {"name": call.name, "arguments": call.arguments}},
        {"role": "function", "name": call.name, "content": '{"temperature": 21}'},
    ]
    answer = client.chat.completions.create(
        model="chat.gguf",
        messages=messages,
        functions=[WEATHER["function"]],
        max_tokens=4,  # type: ignore[arg-type, list-item]
    )
    assert answer.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert answer.usage and reply.usage and answer.usage.prompt_tokens > reply.usage.prompt_tokens


def test_tool_choice_none_gets_plain_text(client: openai.OpenAI):
    reply = client.chat.completions.create(
        model="chat.gguf",
        messages=user("hi"),
        tools=[WEATHER],
        tool_choice="none",
        max_tokens=4,  # type: ignore[list-item]
    )
    assert reply.choices[0].message.tool_calls is None and reply.choices[0].finish_reason in ("stop", "length")


# ---- the follow-up: the client's call and the tool's result ---------------------------------------------------
def follow_up(
    client: openai.OpenAI, first: list[dict[str, Any]], *, stream: bool = False
) -> tuple[list[dict[str, Any]], Any]:
    """Ask for a call (streamed: accumulated as the client's stream helper does), answer it as a client
    would, send both back: (the messages sent, the answer)."""
    ask: dict[str, Any] = {"model": "chat.gguf", "tools": [WEATHER], "max_tokens": 200, "seed": 4}
    if stream:
        state = ChatCompletionStreamState()
        for chunk in client.chat.completions.create(messages=first, tool_choice=NAMED, stream=True, **ask):
            state.handle_chunk(chunk)
        message = state.get_final_completion().choices[0].message
    else:
        message = client.chat.completions.create(messages=first, tool_choice=NAMED, **ask).choices[0].message
    assert message.tool_calls, message
    results = [
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "sky": "clear"})}
        for call in message.tool_calls
    ]
    calls = [call.model_dump(exclude_none=True) for call in message.tool_calls]
    messages = [*first, {"role": "assistant", "content": message.content, "tool_calls": calls}, *results]
    answer = client.chat.completions.create(messages=messages, **{**ask, "max_tokens": 8, "seed": 5})
    return messages, answer


def test_the_tool_result_is_answered(client: openai.OpenAI):
    first = user("What is the weather in Paris?")
    messages, answer = follow_up(client, first)
    assert messages[1]["content"] is None  # a call without prose: content null, sent back as such
    choice = answer.choices[0]
    assert choice.finish_reason in ("stop", "length", "tool_calls")
    assert choice.message.content or choice.message.tool_calls
    first_prompt = client.chat.completions.create(model="chat.gguf", messages=first, tools=[WEATHER], max_tokens=1)  # type: ignore[list-item]
    assert answer.usage and first_prompt.usage
    assert answer.usage.prompt_tokens > first_prompt.usage.prompt_tokens  # the call and its result are in the prompt


@pytest.fixture
def saving(models: Path, tmp_path: Path) -> Iterator[ServeProcess]:
    shutil.copytree(models / "hearth" / "models", tmp_path / "hearth" / "models")
    process = serve(tmp_path, "chat.gguf", "--ctx", "1024", "--save-history")
    yield process
    assert process.stop()[0] == 0


@pytest.mark.parametrize("stream", [False, True])
def test_a_saved_tool_conversation_keeps_the_calls_and_results(saving: ServeProcess, tmp_path: Path, stream: bool):
    messages, answer = follow_up(saving.client(), user("Weather in Oslo?"), stream=stream)
    db = sqlite3.connect(tmp_path / "hearth" / "data" / "history.sqlite3")
    try:
        conversations = db.execute("SELECT id FROM conversations").fetchall()
        rows = db.execute("SELECT role, content, meta_json FROM messages ORDER BY id").fetchall()
        (prompt,) = db.execute("SELECT prompt_text FROM messages ORDER BY id DESC LIMIT 1").fetchone()
    finally:
        db.close()
    assert len(conversations) == 1, rows  # the follow-up continued the stored conversation
    assert [role for role, _, _ in rows] == ["user", "assistant", "tool", "assistant"]
    call_meta = json.loads(rows[1][2])
    assert "<tool_call>" not in rows[1][1]  # stored as the app stores a call: prose as text, the calls in meta
    sent = [{k: v for k, v in call.items() if k != "index"} for call in messages[1]["tool_calls"]]  # stream's
    assert call_meta["tool_calls"] == sent
    assert json.loads(rows[2][2])["tool_call_id"] == messages[1]["tool_calls"][0]["id"]
    assert rows[3][1] == (answer.choices[0].message.content or rows[3][1])
    # The answer's prompt holds the call (as the template writes one) and the tool's result.
    assert messages[1]["tool_calls"][0]["function"]["name"] in prompt and messages[2]["content"] in prompt


# ---- refusals ------------------------------------------------------------------------------------------------
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}


@pytest.mark.parametrize(
    ("change", "param", "words"),
    [
        ({"tools": [{"type": "retrieval"}]}, "tools", "tools[0]"),
        ({"tools": {"name": "get_weather"}}, "tools", "list"),
        ({"tools": [WEATHER, WEATHER]}, "tools", "used twice"),
        ({"tools": [{"type": "function", "function": {"name": "x", "parameters": {"type": 7}}}]}, "tools", "schema"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
            "nope",
        ),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice", "sometimes"),
        ({"tool_choice": "required"}, "tool_choice", "needs tools"),
        ({"functions": [{"name": "bad name!"}]}, "functions", "functions[0]"),
        ({"functions": [WEATHER["function"]], "function_call": {"name": "nope"}}, "function_call", "nope"),
    ],
)
def test_bad_tools_are_400s_naming_the_field(server: ServeProcess, change: dict[str, Any], param: str, words: str):
    status, error = error_of(server, {"model": "chat.gguf", "messages": user("hi"), **change})
    assert status == 400 and error["param"] == param and error["type"] == "invalid_request_error"
    assert error["message"].startswith(param) and words in error["message"], error


def test_an_unknown_tool_choice_is_a_bad_request_for_the_client(client: openai.OpenAI):
    with pytest.raises(openai.BadRequestError, match="nope") as caught:
        client.chat.completions.create(
            model="chat.gguf",
            messages=user("hi"),
            tools=[WEATHER],  # type: ignore[list-item]
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )
    assert caught.value.param == "tool_choice"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        (
            [
                *user("hi"),
                {"role": "assistant", "content": None, "tool_calls": [CALL]},
                {"role": "tool", "content": "x"},
            ],
            "messages[2].tool_call_id",
        ),
        ([*user("hi"), {"role": "tool", "tool_call_id": "call_1", "content": "x"}], "messages[1]"),
        (
            [
                *user("hi"),
                {"role": "assistant", "content": None, "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "call_9", "content": "x"},
            ],
            "messages[2].tool_call_id",
        ),
        ([*user("hi"), {"role": "assistant", "tool_calls": {"id": "x"}}, *user("ok")], "messages[1].tool_calls"),
        (
            [*user("hi"), {"role": "assistant", "tool_calls": [{**CALL, "id": ""}]}, *user("ok")],
            "messages[1].tool_calls[0].id",
        ),
        (
            [
                *user("hi"),
                {"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "f", "arguments": "{x"}}]},
                *user("ok"),
            ],
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            [
                *user("hi"),
                {"role": "assistant", "tool_calls": [{**CALL, "function": {"arguments": "{}"}}]},
                *user("ok"),
            ],
            "messages[1].tool_calls[0].function.name",
        ),
        ([{"role": "user", "content": "hi", "tool_calls": [CALL]}], "messages[0].tool_calls"),
        (
            [
                *user("hi"),
                {"role": "assistant", "content": None, "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "call_1"},
            ],
            "messages[2].content",
        ),
        ([*user("hi"), {"role": "assistant", "content": "hello"}], "messages[1].role"),
    ],
)
def test_bad_tool_messages_are_400s_naming_the_field(server: ServeProcess, messages: list[Any], param: str):
    status, error = error_of(server, {"model": "chat.gguf", "messages": messages, "tools": [WEATHER]})
    assert status == 400 and error["param"] == param, error
    assert error["message"].startswith(param)


def test_tools_on_text_completions_are_refused(server: ServeProcess):
    status, error = error_of(server, {"model": "chat.gguf", "prompt": "x", "tools": [WEATHER]}, "/v1/completions")
    assert status == 400 and error["param"] == "tools" and "/v1/chat/completions" in error["message"]


# ---- a real model ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_gemma_calls_a_tool_and_answers_its_result(gemma_path: Path, tmp_path: Path):
    """gemma-3-270m's template has no tool syntax: Hearth's generic tool prompt and the forced call's grammar
    make it call anyway, and its answer to the result comes back as text."""
    home = tmp_path / "gemma-home"
    (home / "hearth" / "models").mkdir(parents=True)
    process = serve(home, str(gemma_path), "--ctx", "2048")
    try:
        client = process.client()
        first = user("What is the weather in Paris? Answer in celsius.")
        reply = client.chat.completions.create(
            model=gemma_path.name,
            messages=first,
            tools=[WEATHER, CLOCK],  # type: ignore[list-item]
            tool_choice="required",
            temperature=0.0,
            max_tokens=100,
        )
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls", choice.message
        (call,) = choice.message.tool_calls or []
        check_call(call.function.name, call.function.arguments)
        messages = [
            *first,
            {"role": "assistant", "content": choice.message.content, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21, "sky": "clear"}'},
        ]
        answer = client.chat.completions.create(
            model=gemma_path.name,
            messages=messages,
            tools=[WEATHER, CLOCK],
            temperature=0.0,
            max_tokens=40,  # type: ignore[list-item]
        )
        assert answer.choices[0].finish_reason in ("stop", "length", "tool_calls")
        assert answer.usage and reply.usage and answer.usage.prompt_tokens > reply.usage.prompt_tokens
    finally:
        assert process.stop()[0] == 0
