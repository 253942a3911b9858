"""Tools in the prompt: Llama 3.1, Qwen2.5 and Mistral v0.3 equal their published templates byte for byte.

The oracles are the published chat templates (tests/data/chat-templates/, sources in SOURCES.md) rendered with
jinja2's ImmutableSandboxedEnvironment as transformers renders them (trim_blocks, lstrip_blocks, its tojson),
given hypothesis-generated tool schemas and conversations in OpenAI's shapes: tool calls with arbitrary JSON
arguments, tool results, several rounds. Also: embedded GGUF templates that use `tools` (through the sandbox),
the generic tool prompt for families without tool use, and `hearth render-prompt --tools`.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import jinja2
import jinja2.sandbox
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.cli import run
from app.core.gguf_info import inspect
from app.core.messages import ChatMessage, ToolCall
from app.core.template_families import FAMILIES, Specials
from app.core.templates import choose_template, normalize, render_family, render_prompt

DATA = Path(__file__).resolve().parents[1] / "data" / "chat-templates"
ORACLES = {
    "llama-3.1": ("llama-3.1.jinja", "<|begin_of_text|>", "<|eot_id|>"),
    "qwen2.5": ("variants/chatml-qwen2.5-instruct.jinja", "", "<|im_end|>"),
    "mistral-v0.3": ("variants/mistral-instruct-v0.3.jinja", "<s>", "</s>"),
}


def oracle_env() -> jinja2.Environment:
    """The environment transformers' apply_chat_template renders with."""
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )

    def fail(message: str) -> None:
        raise jinja2.TemplateError(message)

    env.globals["raise_exception"] = fail
    env.filters["tojson"] = lambda value, ensure_ascii=False, indent=None, separators=None, sort_keys=False: json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )
    return env


def oracle(file: str, messages: list[ChatMessage], tools: list[dict] | None, generation: bool, bos: str, eos: str):
    template = oracle_env().from_string((DATA / file).read_text(encoding="utf-8"))
    variables = {"tools": tools} if tools else {}
    return template.render(
        messages=[m.to_template() for m in messages],
        bos_token=bos,
        eos_token=eos,
        add_generation_prompt=generation,
        **variables,
    )


# ---- strategies ----------------------------------------------------------------------------------------------

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)
turn_text = st.one_of(text, st.sampled_from(["  padded  ", "\nnew\nlines\n", "", 'say "hi" \\ <b>', "{{ x }}"]))
names = st.text(alphabet=string.ascii_letters + string.digits + "_", min_size=1, max_size=16)
call_ids = st.text(alphabet=string.ascii_letters + string.digits, min_size=9, max_size=9)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(text, children, max_size=3),
    max_leaves=6,
)
arguments = st.dictionaries(names, json_values, max_size=4)


@st.composite
def property_schema(draw: st.DrawFn) -> dict:
    kind = draw(st.sampled_from(["string", "number", "integer", "boolean", "array", "enum"]))
    schema: dict = {"type": "array", "items": {"type": "string"}} if kind == "array" else {"type": kind}
    if kind == "enum":
        schema = {"type": "string", "enum": draw(st.lists(text, min_size=1, max_size=3, unique=True))}
    if draw(st.booleans()):
        schema["description"] = draw(text)
    return schema


@st.composite
def tool_lists(draw: st.DrawFn) -> list[dict]:
    tools = []
    for name in draw(st.lists(names, min_size=1, max_size=3, unique=True)):
        properties = draw(st.dictionaries(names, property_schema(), max_size=3))
        parameters: dict = {"type": "object", "properties": properties}
        if properties and draw(st.booleans()):
            parameters["required"] = sorted(properties)[:1]
        function = {"name": name, "description": draw(turn_text), "parameters": parameters}
        tools.append({"type": "function", "function": function})
    return tools


@st.composite
def tool_conversations(draw: st.DrawFn, *, single_call: bool = False, end_with_results: bool = True) -> list:
    """system? (user (assistant | assistant+calls tool... assistant))* user | ... tool results."""
    messages = [ChatMessage("system", draw(turn_text))] if draw(st.booleans()) else []
    rounds = draw(st.integers(1, 3))
    for index in range(rounds):
        messages.append(ChatMessage("user", draw(turn_text)))
        last = index == rounds - 1
        if last and not (end_with_results and draw(st.booleans())):
            break
        if not draw(st.booleans()) and not last:
            messages.append(ChatMessage("assistant", draw(turn_text)))
            continue
        for _ in range(draw(st.integers(1, 2))):  # one or two tool rounds in a row
            count = 1 if single_call else draw(st.integers(1, 3))
            calls = tuple(
                ToolCall(draw(call_ids), draw(names), json.dumps(draw(arguments), ensure_ascii=False))
                for _ in range(count)
            )
            messages.append(ChatMessage("assistant", draw(st.sampled_from(["", "Let me check."])), calls))
            for call in calls:
                messages.append(ChatMessage("tool", draw(turn_text), tool_call_id=call.id, name=call.name))
        if not last:
            messages.append(ChatMessage("assistant", draw(turn_text)))
    return messages


def family_render(name: str, messages: list[ChatMessage], tools: list[dict] | None, generation: bool) -> str:
    fam = FAMILIES[name]
    _file, bos, eos = ORACLES[name]
    return fam.tool_render(normalize(messages, keep_tools=True), generation, Specials(bos, eos), tools)


# ---- the three families against their published templates ----------------------------------------------------

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(tools=st.one_of(st.none(), tool_lists()), messages=tool_conversations(), generation=st.booleans())
def test_qwen25_renders_tools_calls_and_results_like_its_template(tools, messages, generation):
    file, bos, eos = ORACLES["qwen2.5"]
    assert family_render("qwen2.5", messages, tools, generation) == oracle(file, messages, tools, generation, bos, eos)


@SETTINGS
@given(
    tools=st.one_of(st.none(), tool_lists()),
    messages=tool_conversations(single_call=True),
    generation=st.booleans(),
)
def test_llama31_renders_tools_calls_and_results_like_its_template(tools, messages, generation):
    file, bos, eos = ORACLES["llama-3.1"]
    expected = oracle(file, messages, tools, generation, bos, eos)
    assert family_render("llama-3.1", messages, tools, generation) == expected


@SETTINGS
@given(tools=st.one_of(st.none(), tool_lists()), messages=tool_conversations(), generation=st.booleans())
def test_mistral_v03_renders_tools_calls_and_results_like_its_template(tools, messages, generation):
    file, bos, eos = ORACLES["mistral-v0.3"]
    expected = oracle(file, messages, tools, generation, bos, eos)
    assert family_render("mistral-v0.3", messages, tools, generation) == expected


def test_a_real_looking_exchange_in_each_family():
    """One readable case per family, so a reader sees the three syntaxes (and a failure is easy to read)."""
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    call = ToolCall("abc123XYZ", "get_weather", '{"city": "Paris"}')
    messages = [
        ChatMessage("user", "Weather in Paris?"),
        ChatMessage("assistant", "", (call,)),
        ChatMessage("tool", "18 C, sunny", tool_call_id="abc123XYZ", name="get_weather"),
    ]
    qwen = render_family("qwen2.5", messages, tools=tools).text
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>' in qwen
    assert "<|im_start|>user\n<tool_response>\n18 C, sunny\n</tool_response><|im_end|>\n<|im_start|>assistant\n" in qwen
    llama = render_family("llama-3.1", messages, tools=tools).text
    assert "Environment: ipython\n" in llama and '    "type": "function",' in llama  # indent=4 tool JSON
    assert '<|end_header_id|>\n\n{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|>' in llama
    assert '<|start_header_id|>ipython<|end_header_id|>\n\n"18 C, sunny"<|eot_id|>' in llama
    mistral = render_family("mistral-v0.3", messages, tools=tools).text
    assert mistral.startswith('<s>[AVAILABLE_TOOLS] [{"type": "function", "function": {"name": "get_weather", ')
    assert '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "abc123XYZ"}]</s>' in mistral
    assert mistral.endswith('[TOOL_RESULTS] {"content": 18 C, sunny, "call_id": "abc123XYZ"}[/TOOL_RESULTS]')
    for name in ORACLES:
        file, bos, eos = ORACLES[name]
        assert render_family(name, messages, tools=tools).text == oracle(file, messages, tools, True, bos, eos)


def test_conversations_the_published_templates_refuse_still_render():
    """Llama 3.1 refuses two calls in one turn and Mistral ids that are not 9 alphanumerics: Hearth writes
    consecutive single calls / a stable 9-character alias (the same for the call and its result)."""
    calls = (ToolCall("call_1", "a", "{}"), ToolCall("call_2", "b", '{"x": 1}'))
    messages = [
        ChatMessage("user", "U"),
        ChatMessage("assistant", "", calls),
        ChatMessage("tool", "ra", tool_call_id="call_1"),
        ChatMessage("tool", "rb", tool_call_id="call_2"),
    ]
    llama = render_family("llama-3.1", messages).text
    assert llama.count('<|start_header_id|>assistant<|end_header_id|>\n\n{"name": ') == 2
    with pytest.raises(jinja2.TemplateError, match="single tool-calls"):
        oracle(ORACLES["llama-3.1"][0], messages, None, True, "<|begin_of_text|>", "<|eot_id|>")
    mistral = render_family("mistral-v0.3", messages).text
    from app.core.tool_families import mistral_call_id

    alias = mistral_call_id("call_1")
    assert len(alias) == 9 and alias.isalnum() and alias != mistral_call_id("call_2")
    assert f'"id": "{alias}"' in mistral and f'"call_id": "{alias}"' in mistral


# ---- embedded templates that use `tools` --------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded_models(make_tiny_model):
    llama = (DATA / "llama-3.1.jinja").read_text(encoding="utf-8")
    hermes = (DATA / "variants/hermes-3-llama-3.1-tool_use.jinja").read_text(encoding="utf-8")
    return {
        "llama": inspect(make_tiny_model("embedded-llama31.gguf", name="Some Llama", chat_template=llama)),
        # Hermes 3 GGUFs carry a plain template and a "tool_use" one, used when tools are given.
        "hermes": inspect(
            make_tiny_model(
                "embedded-hermes3.gguf",
                name="Some Hermes",
                chat_template=(DATA / "chatml.jinja").read_text(encoding="utf-8"),
                chat_templates={"tool_use": hermes},
            )
        ),
    }


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(tools=tool_lists(), messages=tool_conversations(single_call=True), generation=st.booleans())
def test_embedded_templates_get_tools_and_openai_shaped_messages(embedded_models, tools, messages, generation):
    info = embedded_models["llama"]
    rendered = render_prompt(messages, info, tools=tools, add_generation_prompt=generation)
    assert rendered.choice.is_embedded and rendered.tool_syntax == "llama-3.1"
    expected = oracle("llama-3.1.jinja", messages, tools, generation, info.bos_token or "", info.eos_token or "")
    assert rendered.text == expected


def test_the_tool_use_variant_is_chosen_when_tools_are_given(embedded_models):
    info = embedded_models["hermes"]
    tools = [
        {
            "type": "function",
            "function": {
                "name": "f",
                "description": "F it",
                "parameters": {"type": "object", "properties": {"q": {"type": "string", "description": "query"}}},
            },
        }
    ]
    call = ToolCall("c1", "f", '{"q": "x"}')
    messages = [
        ChatMessage("system", "S"),
        ChatMessage("user", "U"),
        ChatMessage("assistant", "", (call,)),
        ChatMessage("tool", "R", tool_call_id="c1", name="f"),
    ]
    rendered = render_prompt(messages, info, tools=tools)
    assert rendered.tool_syntax == "hermes"
    file = "variants/hermes-3-llama-3.1-tool_use.jinja"
    assert rendered.text == oracle(file, messages, tools, True, info.bos_token or "", info.eos_token or "")
    assert "<tool_response>" in rendered.stop
    plain = render_prompt([ChatMessage("user", "U")], info)  # no tools: the default (ChatML) template
    assert plain.text == "<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"


# ---- families without tool use: Hearth's generic (Hermes-style) tool prompt ----------------------------------


def test_generic_tool_prompt_for_a_family_without_tool_use():
    tools = [
        {
            "type": "function",
            "function": {"name": "now", "description": "The time", "parameters": {"type": "object", "properties": {}}},
        }
    ]
    call = ToolCall("abc123XYZ", "now", "{}")
    messages = [
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "Time?"),
        ChatMessage("assistant", "", (call,)),
        ChatMessage("tool", "12:00", tool_call_id="abc123XYZ", name="now"),
    ]
    rendered = render_family("gemma", messages, tools=tools)
    tool_line = (
        '{"type": "function", "function": {"name": "now", "description": "The time", "parameters": '
        '{"type": "object", "properties": {}}}}'
    )
    assert rendered.text == (
        "<bos><start_of_turn>user\nBe brief.\n\n# Tools\n\nYou may call one or more functions to assist with the "
        "user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        f"{tool_line}\n</tools>\n\nFor each function call, return a json object with function name and arguments "
        'within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": '
        "<args-json-object>}\n</tool_call>\n\nTime?<end_of_turn>\n"
        '<start_of_turn>model\n<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call><end_of_turn>\n'
        "<start_of_turn>user\n<tool_response>\n12:00\n</tool_response><end_of_turn>\n<start_of_turn>model\n"
    )
    assert rendered.tool_syntax == "hermes" and "<tool_response>" in rendered.stop
    # Without tools, stored calls and results still render (as text), nothing is lost.
    again = render_family("chatml", messages).text
    assert '<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>' in again and "12:00" in again


def test_normalize_keeps_tool_turns_for_tool_templates_and_folds_them_otherwise():
    call = ToolCall("abc123XYZ", "now", "{}")
    messages = [
        ChatMessage("user", "a"),
        ChatMessage("user", "b"),
        ChatMessage("assistant", "", (call,)),
        ChatMessage("tool", "r", tool_call_id="abc123XYZ", name="now"),
        ChatMessage("tool", "r2", tool_call_id="x", name="now"),
    ]
    kept = normalize(messages, keep_tools=True)
    assert [m.role for m in kept] == ["user", "assistant", "tool", "tool"]
    assert kept[0].content == "a\n\nb" and kept[1].tool_calls == (call,) and kept[3].tool_call_id == "x"
    assert [m.role for m in normalize(messages)] == ["user", "assistant", "user"]


def test_detected_family_and_tools_through_render_prompt(make_tiny_model):
    info = inspect(make_tiny_model("qwen25-detect.gguf", name="Qwen2.5-0.5B-Instruct"))
    assert choose_template(info).name == "qwen2.5"
    tools = [{"type": "function", "function": {"name": "f", "description": "", "parameters": {"type": "object"}}}]
    rendered = render_prompt([ChatMessage("user", "U")], info, tools=tools)
    assert "<tools>\n" in rendered.text and rendered.tool_syntax == "hermes"


# ---- hearth render-prompt --messages --tools ----------------------------------------------------------------


def test_render_prompt_cli_with_tools_equals_the_published_template(tmp_path, capsys):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    messages = [
        {"role": "system", "content": "You help."},
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "abc123XYZ",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "abc123XYZ", "name": "get_weather", "content": "3 C"},
    ]
    (tmp_path / "m.json").write_text(json.dumps(messages))
    (tmp_path / "t.json").write_text(json.dumps(tools))
    for name, (file, bos, eos) in ORACLES.items():
        args = ["render-prompt", "--template", name, "--messages", str(tmp_path / "m.json")]
        assert run([*args, "--tools", str(tmp_path / "t.json")]) == 0
        out = capsys.readouterr().out
        chat = [
            ChatMessage("system", "You help."),
            ChatMessage("user", "Weather in Oslo?"),
            ChatMessage("assistant", "", (ToolCall("abc123XYZ", "get_weather", '{"city": "Oslo"}'),)),
            ChatMessage("tool", "3 C", tool_call_id="abc123XYZ", name="get_weather"),
        ]
        assert out == oracle(file, chat, tools, True, bos, eos), name
    jinja = ["render-prompt", "--jinja", str(DATA / "llama-3.1.jinja"), "--bos", "<|begin_of_text|>"]
    assert run([*jinja, "--messages", str(tmp_path / "m.json"), "--tools", str(tmp_path / "t.json"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["tool_syntax"] == "llama-3.1" and '"parameters": {"city": "Oslo"}' in result["prompt"]


@pytest.mark.parametrize(
    ("messages", "tools", "message"),
    [
        ([{"role": "robot", "content": "x"}], None, "role 'robot'"),
        ([{"role": "tool", "content": "x"}], None, "tool_call_id"),
        ([{"role": "user", "content": "x", "tool_calls": [{"id": "1"}]}], None, "only assistant"),
        ([{"role": "user", "content": "x"}], {"not": "a list"}, "must be a JSON list"),
        ([{"role": "user", "content": "x"}], [{"function": {"name": "bad name!"}}], "name must be"),
        (
            [{"role": "user", "content": "x"}],
            [{"function": {"name": "f", "parameters": {"type": "object", "properties": 3}}}],
            "invalid parameters schema",
        ),
    ],
)
def test_render_prompt_cli_refuses_bad_input_in_one_line(tmp_path, capsys, messages, tools, message):
    (tmp_path / "m.json").write_text(json.dumps(messages))
    args = ["render-prompt", "--template", "qwen2.5", "--messages", str(tmp_path / "m.json")]
    if tools is not None:
        (tmp_path / "t.json").write_text(json.dumps(tools))
        args += ["--tools", str(tmp_path / "t.json")]
    assert run(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
