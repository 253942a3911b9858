"""Tool calls parsed from real-looking model text, per family syntax, streamed in any chunking.

Each case is text a model of that family writes (Qwen2.5/Hermes <tool_call> blocks, Llama 3.1 JSON with or
without <|python_tag|>, Mistral [TOOL_CALLS] arrays with or without the hidden control token): calls alone,
wrapped in prose, several at once, malformed JSON, an unknown tool, arguments that break the schema.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core.tool_calls import (
    ToolCallStream,
    openai_message,
    openai_tool_call_deltas,
    openai_tool_calls,
    parse_tool_calls,
)
from app.core.tools import ToolSpec

TOOLS = [
    ToolSpec(
        "get_weather",
        "Current weather for a city",
        {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city"],
        },
    ),
    ToolSpec("get_time", "The time", {"type": "object", "properties": {"timezone": {"type": "string"}}}),
]
PARIS = {"city": "Paris"}

# (syntax, model text, expected calls [(name, arguments)], expected content, expected rejection reasons)
CASES = {
    "hermes-alone": (
        "hermes",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        [("get_weather", PARIS)],
        "",
        [],
    ),
    "hermes-in-prose": (
        "hermes",
        'Let me look that up.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}\n'
        "</tool_call>",
        [("get_weather", {"city": "Paris", "unit": "c"})],
        "Let me look that up.",
        [],
    ),
    "hermes-several": (
        "hermes",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n<tool_call>\n'
        '{"name": "get_time", "arguments": {"timezone": "Europe/Paris"}}\n</tool_call>',
        [("get_weather", PARIS), ("get_time", {"timezone": "Europe/Paris"})],
        "",
        [],
    ),
    "hermes-unclosed-at-end": (
        "hermes",
        '<tool_call>\n{"name": "get_time", "arguments": {}}',
        [("get_time", {})],
        "",
        [],
    ),
    "hermes-arguments-as-string": (
        "hermes",
        '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}</tool_call>',
        [("get_weather", PARIS)],
        "",
        [],
    ),
    "hermes-malformed": (
        "hermes",
        'Checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}\n</tool_call>',
        [],
        'Checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}\n</tool_call>',
        ["not valid JSON"],
    ),
    "hermes-unknown-tool": (
        "hermes",
        '<tool_call>\n{"name": "get_stock_price", "arguments": {"ticker": "ACME"}}\n</tool_call>',
        [],
        '<tool_call>\n{"name": "get_stock_price", "arguments": {"ticker": "ACME"}}\n</tool_call>',
        ["unknown tool 'get_stock_price' (available: get_time, get_weather)"],
    ),
    "hermes-breaks-schema": (
        "hermes",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": 75001, "unit": "kelvin"}}\n</tool_call>',
        [],
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": 75001, "unit": "kelvin"}}\n</tool_call>',
        ["do not fit its schema: "],
    ),
    "hermes-one-good-one-bad": (
        "hermes",
        '<tool_call>\n{"name": "get_weather", "arguments": {}}\n</tool_call>\n<tool_call>\n'
        '{"name": "get_time", "arguments": {}}\n</tool_call>',
        [("get_time", {})],
        '<tool_call>\n{"name": "get_weather", "arguments": {}}\n</tool_call>',
        ["'city' is a required property"],
    ),
    "llama-bare": (
        "llama-3.1",
        '{"name": "get_weather", "parameters": {"city": "Paris"}}',
        [("get_weather", PARIS)],
        "",
        [],
    ),
    "llama-python-tag": (
        "llama-3.1",
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}',
        [("get_weather", PARIS)],
        "",
        [],
    ),
    "llama-in-prose": (
        "llama-3.1",
        'I will check the weather for you.\n\n{"name": "get_weather", "parameters": {"city": "Paris"}}',
        [("get_weather", PARIS)],
        "I will check the weather for you.",
        [],
    ),
    "llama-several": (
        "llama-3.1",
        '{"name": "get_weather", "parameters": {"city": "Paris"}}; {"name": "get_time", "parameters": {}}',
        [("get_weather", PARIS), ("get_time", {})],
        "",
        [],
    ),
    "llama-builtin-form": (
        "llama-3.1",
        '<|python_tag|>get_weather.call(city="Paris")',
        [("get_weather", PARIS)],
        "",
        [],
    ),
    "llama-json-in-prose-is-not-a-call": (
        "llama-3.1",
        'Send {"name": "Bob", "age": 3} as the body.',
        [],
        'Send {"name": "Bob", "age": 3} as the body.',
        [],
    ),
    "llama-malformed": (
        "llama-3.1",
        'Sure: {"name": "get_weather", "parameters": {"city": "Paris"}',
        [],
        'Sure: {"name": "get_weather", "parameters": {"city": "Paris"}',
        ["not valid JSON"],
    ),
    "llama-unknown-tool": (
        "llama-3.1",
        '{"name": "brave_search", "parameters": {"query": "weather"}}',
        [],
        '{"name": "brave_search", "parameters": {"query": "weather"}}',
        ["unknown tool 'brave_search'"],
    ),
    "llama-breaks-schema": (
        "llama-3.1",
        '{"name": "get_weather", "parameters": {"town": "Paris"}}',
        [],
        '{"name": "get_weather", "parameters": {"town": "Paris"}}',
        ["'city' is a required property"],
    ),
    "mistral-marker": (
        "mistral",
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "abc123XYZ"}]',
        [("get_weather", PARIS)],
        "",
        [],
    ),
    "mistral-hidden-control-token": (  # llama.cpp does not show [TOOL_CALLS] (a control token)
        "mistral",
        ' [{"name": "get_weather", "arguments": {"city": "Paris"}}]',
        [("get_weather", PARIS)],
        "",
        [],
    ),
    "mistral-several-in-prose": (
        "mistral",
        'Two lookups. [TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}, '
        '{"name": "get_time", "arguments": {"timezone": "UTC"}}]',
        [("get_weather", PARIS), ("get_time", {"timezone": "UTC"})],
        "Two lookups.",
        [],
    ),
    "mistral-malformed": (
        "mistral",
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"]',
        [],
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"]',
        ["not valid JSON"],
    ),
    "mistral-unknown-and-bad": (
        "mistral",
        '[TOOL_CALLS] [{"name": "nope", "arguments": {}}, {"name": "get_weather", "arguments": {"city": ["P"]}}]',
        [],
        '{"name": "nope", "arguments": {}}\n{"name": "get_weather", "arguments": {"city": ["P"]}}',
        ["unknown tool 'nope'", "city: ['P'] is not of type 'string'"],
    ),
    "no-call-at-all": ("hermes", "Paris is sunny today.\n", [], "Paris is sunny today.\n", []),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_calls_in_real_looking_replies(case):
    syntax, text, calls, content, reasons = CASES[case]
    parsed = parse_tool_calls(text, syntax, TOOLS)
    assert [(c.name, json.loads(c.arguments)) for c in parsed.calls] == calls
    assert parsed.content == content
    assert len(parsed.rejected) == len(reasons)
    for rejected, reason in zip(parsed.rejected, reasons):
        assert reason in rejected.reason
    assert len(parsed.notes) == len(reasons) and all(n.startswith("A tool call was not run: ") for n in parsed.notes)
    for call in parsed.calls:  # ids: 9 letters/digits (Mistral's rule), the model's own when it gave one
        assert len(call.id) == 9 and call.id.isalnum()
    if case == "mistral-marker":
        assert parsed.calls[0].id == "abc123XYZ"


@settings(max_examples=300, deadline=None)
@given(case=st.sampled_from(sorted(CASES)), cuts=st.lists(st.integers(0, 200), max_size=12))
def test_streaming_in_any_chunking_gives_the_same_result(case, cuts):
    syntax, text, _calls, _content, _reasons = CASES[case]
    whole = ToolCallStream(syntax, TOOLS)
    whole_shown = whole.feed(text)
    expected = whole.finish()
    stream = ToolCallStream(syntax, TOOLS)
    points = sorted({min(c, len(text)) for c in cuts})
    pieces = [text[a:b] for a, b in zip([0, *points], [*points, len(text)])]
    shown = "".join(stream.feed(piece) for piece in pieces)
    parsed = stream.finish()
    assert (parsed.content, parsed.rejected) == (expected.content, expected.rejected)
    assert [(c.name, c.arguments) for c in parsed.calls] == [(c.name, c.arguments) for c in expected.calls]
    assert shown == whole_shown
    # Nothing of a call that will run is ever shown as prose.
    for call in parsed.calls:
        assert call.name not in shown
    assert "<tool_call>" not in shown and "[TOOL_CALLS]" not in shown and "<|python_tag|>" not in shown


def test_a_call_is_known_as_soon_as_it_starts():
    stream = ToolCallStream("hermes", TOOLS)
    assert stream.feed("Let me check. <tool") == "Let me check. "  # held back: may be a call
    assert not stream.in_call
    assert stream.feed('_call>\n{"name": "get_wea') == ""
    assert stream.in_call
    assert stream.feed('ther", "arguments": {"city": "Paris"}}\n</tool_call>') == ""
    assert not stream.in_call
    assert stream.feed(" Done?") == " Done?"
    parsed = stream.finish()
    assert parsed.content == "Let me check.  Done?" and [c.name for c in parsed.calls] == ["get_weather"]


def test_a_held_back_start_that_is_not_a_call_is_shown_after_all():
    stream = ToolCallStream("llama-3.1", TOOLS)
    assert stream.feed("a set {") == "a set "
    assert stream.feed("1, 2}") == "{1, 2}"
    stream = ToolCallStream("llama-3.1", TOOLS)
    assert stream.feed('JSON: {"name": "Bob"') == "JSON: "
    assert stream.in_call
    assert stream.feed(', "age": 3} ok') == '{"name": "Bob", "age": 3} ok'
    assert stream.finish().calls == ()


def test_openai_shapes_for_the_server():
    parsed = parse_tool_calls(
        '<tool_call>{"name": "get_time", "arguments": {"timezone": "UTC"}}</tool_call>', "hermes", TOOLS
    )
    call = parsed.calls[0]
    assert openai_tool_calls(parsed.calls) == [
        {"id": call.id, "type": "function", "function": {"name": "get_time", "arguments": '{"timezone": "UTC"}'}}
    ]
    assert openai_tool_call_deltas(parsed.calls)[0]["index"] == 0
    assert openai_message(parsed) == {
        "role": "assistant",
        "content": None,
        "tool_calls": openai_tool_calls(parsed.calls),
    }
    refused = parse_tool_calls('Hi <tool_call>{"name": "x", "arguments": {}}</tool_call>', "hermes", TOOLS)
    assert openai_message(refused) == {"role": "assistant", "content": refused.content}
    assert refused.rejected_text == '<tool_call>{"name": "x", "arguments": {}}</tool_call>'
    assert refused.content == "Hi " + refused.rejected_text


def test_unknown_syntax_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown tool-call syntax"):
        ToolCallStream("xml", TOOLS)
