"""Tools in the OpenAI-compatible API, checked with the official `openai` client's own types: a request's
tools/tool_choice, the reply's tool_calls as one message and as streamed chunks (accumulated the way the
client's stream helper does), and the client's follow-up (its call and the tool's result) answered. The end-to-
end tests run gemma-3-270m through the engine host, forced by the grammar as tool_choice asks."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from app.core.api_tools import ApiTools, ToolDeltaStream, completion_message, parse_api_tools
from app.core.errors import ConfigError
from app.core.host import EngineHost, LoadDone
from app.core.load_config import LoadConfig
from app.core.messages import messages_from_openai
from app.core.reply import ReplyChunk, ReplyDone, ReplyRequest, ReplyStarted
from app.core.sampling import SamplingSettings

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}


def completion(message: dict[str, Any], finish: str) -> ChatCompletion:
    """The response body the server sends (app/core/server/shapes.py's fields), read by the openai client."""
    return ChatCompletion.model_validate(
        {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 1,
            "model": "gemma",
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        }
    )


def streamed(texts: list[str], syntax: str | None, api: ApiTools, finish: str) -> tuple[ChatCompletion, list]:
    """Chunks as the server would send them, validated and accumulated by the client's stream state."""
    stream = ToolDeltaStream(syntax, api)
    deltas = [{"role": "assistant", "content": ""}]
    for text in texts:
        deltas += stream.feed(text)
    last, finish = stream.finish(finish)
    deltas += last
    state = ChatCompletionStreamState()
    chunks = []
    for index, delta in enumerate(deltas):
        chunk = ChatCompletionChunk.model_validate(
            {
                "id": "chatcmpl-test",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "gemma",
                "choices": [
                    {"index": 0, "delta": delta, "finish_reason": finish if index == len(deltas) - 1 else None}
                ],
            }
        )
        chunks.append(chunk)
        state.handle_chunk(chunk)
    return state.get_final_completion(), chunks


# ---- the request ----------------------------------------------------------------------------------------------


def test_request_tools_are_checked_with_one_line_errors():
    api = parse_api_tools(
        {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
    )
    assert api.active and api.choice.mode == "named" and api.specs[0].name == "get_weather"
    assert api.request_fields() == {
        "tools": (WEATHER,),
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    }
    assert not parse_api_tools({}).active and parse_api_tools({}).request_fields() == {}
    assert not parse_api_tools({"tools": [WEATHER], "tool_choice": "none"}).active
    legacy = parse_api_tools({"functions": [WEATHER["function"]], "function_call": {"name": "get_weather"}})
    assert legacy.choice.name == "get_weather" and legacy.tools[0]["function"]["name"] == "get_weather"
    for body, message in [
        ({"tools": {"a": 1}}, "tools must be a JSON list"),
        ({"tools": [{"type": "retrieval"}]}, "only tools of type 'function'"),
        ({"tools": [WEATHER, WEATHER]}, "is used twice"),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "is not among the tools"),
        ({"tool_choice": "required"}, "tool_choice needs tools"),
        ({"tools": [], "tool_choice": "required"}, "needs tools to choose from"),
        ({"tools": [WEATHER], "functions": []}, "not both"),
        ({"tools": [{"type": "function", "function": {"name": "x", "parameters": {"type": "array"}}}]}, "object"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_api_tools(body)


# ---- the response, from real-looking model text ----------------------------------------------------------------

API = parse_api_tools({"tools": [WEATHER]})
CALL_TEXT = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>'


def test_a_call_becomes_tool_calls_the_client_reads():
    message, finish = completion_message("Let me look.\n" + CALL_TEXT, "hermes", API, "stop")
    parsed = completion(message, finish)
    choice = parsed.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Let me look."
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and len(call.id) == 9
    assert json.loads(call.function.arguments) == {"city": "Paris", "unit": "celsius"}
    only_call = completion(*completion_message(CALL_TEXT, "hermes", API, "stop")).choices[0].message
    assert only_call.content is None and only_call.tool_calls


def test_a_streamed_call_is_held_back_then_sent_whole():
    pieces = [("Let me look.\n" + CALL_TEXT)[i : i + 5] for i in range(0, len("Let me look.\n" + CALL_TEXT), 5)]
    final, chunks = streamed(pieces, "hermes", API, "stop")
    contents = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert "<tool_call>" not in contents and "get_weather" not in contents  # never shown as text
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content.strip() == "Let me look."
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments)["city"] == "Paris"


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "kelvin"}}\n</tool_call>',
        '<tool_call>\n{"name": "rm_rf", "arguments": {}}\n</tool_call>',
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par',
    ],
)
def test_a_refused_call_stays_text_and_is_not_reported(text):
    message, finish = completion_message(text, "hermes", API, "stop")
    assert finish == "stop" and "tool_calls" not in message and message["content"] == text.strip()
    assert completion_message(text, "hermes", API, "length")[1] == "length"  # the reply's own ending stays
    final, _chunks = streamed([text[:7], text[7:]], "hermes", API, "stop")
    assert final.choices[0].message.tool_calls is None and final.choices[0].message.content.strip() == text.strip()
    assert final.choices[0].finish_reason == "stop"


def test_without_tools_text_passes_through_untouched():
    final, _chunks = streamed(["<tool_call>", " {}"], None, ApiTools(), "stop")
    assert final.choices[0].message.content == "<tool_call> {}"
    assert completion_message("x", "hermes", ApiTools(), "length") == ({"role": "assistant", "content": "x"}, "length")


# ---- end to end through the engine host --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def host(gemma_path, tmp_path_factory):
    host = EngineHost()
    done = host.client("loader").load(gemma_path, LoadConfig(n_ctx=2048, n_threads=2)).wait(120)
    assert isinstance(done, LoadDone) and done.error is None, done
    yield host
    assert host.shutdown(30)


def ask(host: EngineHost, body: dict[str, Any]) -> tuple[str, str | None, str, str]:
    """What the server does with a body: messages and tools into a ReplyRequest, the reply's events out."""
    api = parse_api_tools(body)
    request = ReplyRequest(
        tuple(messages_from_openai(body["messages"])),
        SamplingSettings(temperature=0.0, max_tokens=60, seed=1),
        **api.request_fields(),
    )
    text, syntax, prompt, finish = "", None, "", ""
    for event in host.client("api").reply(request).events(300):
        if isinstance(event, ReplyStarted):
            syntax, prompt = event.tool_syntax, event.prompt_text
        elif isinstance(event, ReplyChunk):
            text += event.text
        elif isinstance(event, ReplyDone):
            assert event.stats is not None, event.error
            finish = "length" if event.stats.finish_reason == "length" else "stop"
    return text, syntax, prompt, finish


@pytest.mark.slow
def test_the_client_gets_a_forced_call_and_its_result_is_answered(host):
    body = {
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    }
    text, syntax, prompt, finish = ask(host, body)
    assert syntax == "hermes" and '"name": "get_weather"' in prompt
    api = parse_api_tools(body)
    message = completion(*completion_message(text, syntax, api, finish)).choices[0]
    assert message.finish_reason == "tool_calls"
    (call,) = message.message.tool_calls
    arguments = json.loads(call.function.arguments)
    assert call.function.name == "get_weather" and arguments["unit"] in ("celsius", "fahrenheit")
    # Streamed, the same reply reaches the client as the same call.
    final, _chunks = streamed([text[i : i + 3] for i in range(0, len(text), 3)], syntax, api, finish)
    assert final.choices[0].message.tool_calls[0].function.arguments == call.function.arguments
    # The client runs the tool and sends the result back: the model answers (tools still shown, "auto").
    follow_up = {
        "messages": [
            *body["messages"],
            message.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21, "sky": "clear"}'},
        ],
        "tools": [WEATHER],
    }
    text, syntax, prompt, finish = ask(host, follow_up)
    assert '<tool_response>\n{"temperature": 21, "sky": "clear"}\n</tool_response>' in prompt
    answer = completion(*completion_message(text, syntax, parse_api_tools(follow_up), finish)).choices[0]
    assert answer.finish_reason in ("stop", "length", "tool_calls")


@pytest.mark.slow
def test_required_picks_one_of_the_tools(host):
    clock = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
    body = {"messages": [{"role": "user", "content": "Hi"}], "tools": [WEATHER, clock], "tool_choice": "required"}
    text, syntax, _prompt, finish = ask(host, body)
    message = completion(*completion_message(text, syntax, parse_api_tools(body), finish)).choices[0]
    assert message.finish_reason == "tool_calls"
    assert message.message.tool_calls[0].function.name in ("get_weather", "get_time")
