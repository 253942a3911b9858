"""The built-in families with native tool use (Llama 3.1, Qwen2.5, Mistral v0.3), written to match their templates.

Each renderer reproduces, byte for byte, what the model's published chat_template (cited per function; the
copies in tests/data/chat-templates/ are the test oracles) renders for a conversation in OpenAI's shapes:
`tools` as [{"type": "function", "function": {name, description, parameters}}], assistant turns with
tool_calls, and "tool" turns with the call's id. JSON is written as transformers' `tojson` writes it
(json.dumps, ensure_ascii=False, keys in their given order).

Where a published template refuses a conversation Hearth can produce (Llama 3.1: several calls in one turn;
Mistral: call ids that are not 9 alphanumerics, a user turn right after tool results), the renderer writes the
nearest thing the model knows instead of failing; those cases are the only departures from the templates.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from app.core.errors import TemplateError
from app.core.messages import ChatMessage

if TYPE_CHECKING:  # a runtime import would be circular: template_families registers these renderers
    from app.core.template_families import Specials

Tools = Sequence[dict[str, Any]] | None


def _json(value: Any, indent: int | None = None) -> str:
    """transformers' tojson: no HTML escaping, non-ASCII kept, keys in order."""
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _split_system(messages: Sequence[ChatMessage]) -> tuple[str | None, list[ChatMessage]]:
    if messages and messages[0].role == "system":
        return messages[0].content, list(messages[1:])
    return None, list(messages)


def _function(call_arguments: str) -> Any:
    """A call's arguments as the templates receive them (an object; {} when the text is not one)."""
    try:
        value = json.loads(call_arguments)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# ---- Llama 3.1 ---------------------------------------------------------------------------------------------

LLAMA31_DATE = "26 Jul 2024"  # the template's default date_string (transformers and llama.cpp pass none)
_LLAMA31_TOOLS_INTRO = (
    "Given the following functions, please respond with a JSON for a function call with its proper arguments "
    "that best answers the given prompt.\n\n"
    'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.'
    "Do not use variables.\n\n"
)


def render_llama31(messages: Sequence[ChatMessage], generation: bool, sp: Specials, tools: Tools = None) -> str:
    # meta-llama/Llama-3.1-8B-Instruct: a system header always (Cutting Knowledge / Today Date, then the
    # trimmed system text); with tools, "Environment: ipython" in it and the tool list (indent=4 JSON) put in
    # front of the first user message (tools_in_user_message defaults to true). A call is the JSON
    # {"name": ..., "parameters": ...} as the whole assistant turn; a result is an "ipython" turn whose content
    # is written with tojson (a string is iterable to Jinja, so it is quoted).
    system, turns = _split_system(messages)
    head = "<|start_header_id|>system<|end_header_id|>\n\n"
    if tools is not None:
        head += "Environment: ipython\n"
    head += f"Cutting Knowledge Date: December 2023\nToday Date: {LLAMA31_DATE}\n\n"
    out = [sp.bos, head, (system or "").strip(), "<|eot_id|>"]
    if tools is not None:
        if not turns:
            raise TemplateError("Cannot put tools in the first user message when there's no first user message!")
        first, turns = turns[0], turns[1:]
        listing = "".join(_json(tool, indent=4) + "\n\n" for tool in tools)
        out.append(f"<|start_header_id|>user<|end_header_id|>\n\n{_LLAMA31_TOOLS_INTRO}{listing}")
        out.append(first.content.strip() + "<|eot_id|>")
    for message in turns:
        if message.tool_calls:
            # The template refuses several calls in one turn ("This model only supports single tool-calls at
            # once!"): write them as consecutive single-call turns, which is how the model makes them.
            for call in message.tool_calls:
                body = f'{{"name": "{call.name}", "parameters": {_json(_function(call.arguments))}}}'
                out.append(f"<|start_header_id|>assistant<|end_header_id|>\n\n{body}<|eot_id|>")
        elif message.role in ("tool", "ipython"):
            out.append(f"<|start_header_id|>ipython<|end_header_id|>\n\n{_json(message.content)}<|eot_id|>")
        else:
            out.append(f"<|start_header_id|>{message.role}<|end_header_id|>\n\n{message.content.strip()}<|eot_id|>")
    if generation:
        out.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
    return "".join(out)


# ---- Qwen2.5 (Hermes-style <tool_call>) -----------------------------------------------------------------------

QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
HERMES_TOOLS_INTRO = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with "
    "function signatures within <tools></tools> XML tags:\n<tools>"
)
HERMES_TOOLS_OUTRO = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}'
    "\n</tool_call>"
)


def hermes_tool_block(tools: Sequence[dict[str, Any]]) -> str:
    """Qwen2.5's tool instructions (after the system text): the tools as one JSON line each."""
    return HERMES_TOOLS_INTRO + "".join("\n" + _json(tool) for tool in tools) + HERMES_TOOLS_OUTRO


def hermes_call(name: str, arguments: str) -> str:
    """One call as Qwen2.5 writes it (without the newline that precedes it)."""
    return f'<tool_call>\n{{"name": "{name}", "arguments": {_json(_function(arguments))}}}\n</tool_call>'


def render_qwen25(messages: Sequence[ChatMessage], generation: bool, sp: Specials, tools: Tools = None) -> str:
    # Qwen/Qwen2.5-7B-Instruct: ChatML with Qwen's default system prompt when none is given; with tools, the
    # system turn carries "# Tools" and one JSON line per tool. A reply's calls follow its text as
    # <tool_call> blocks; consecutive results share one user turn of <tool_response> blocks. No BOS text.
    system = messages[0].content if messages and messages[0].role == "system" else None
    out = []
    if tools:
        out.append(f"<|im_start|>system\n{QWEN_SYSTEM if system is None else system}")
        out.append(hermes_tool_block(tools) + "<|im_end|>\n")
    else:
        out.append(f"<|im_start|>system\n{QWEN_SYSTEM if system is None else system}<|im_end|>\n")
    for index, message in enumerate(messages):
        previous = messages[index - 1] if index > 0 else None
        following = messages[index + 1] if index + 1 < len(messages) else None
        if message.role == "system" and index == 0:
            continue
        if message.role in ("user", "system") or (message.role == "assistant" and not message.tool_calls):
            out.append(f"<|im_start|>{message.role}\n{message.content}<|im_end|>\n")
        elif message.role == "assistant":
            out.append("<|im_start|>assistant" + (f"\n{message.content}" if message.content else ""))
            out.extend("\n" + hermes_call(call.name, call.arguments) for call in message.tool_calls)
            out.append("<|im_end|>\n")
        elif message.role == "tool":
            if previous is None or previous.role != "tool":
                out.append("<|im_start|>user")
            out.append(f"\n<tool_response>\n{message.content}\n</tool_response>")
            if following is None or following.role != "tool":
                out.append("<|im_end|>\n")
    if generation:
        out.append("<|im_start|>assistant\n")
    return "".join(out)


# ---- Mistral v0.3 ------------------------------------------------------------------------------------------

_MISTRAL_ID = re.compile(r"[A-Za-z0-9]{9}")


def mistral_call_id(call_id: str | None) -> str:
    """The 9-alphanumeric id Mistral's template insists on: the id itself when it is one, else a stable alias
    (the same for a call and its result, so the model can still pair them)."""
    text = call_id or ""
    if _MISTRAL_ID.fullmatch(text):
        return text
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:9]


def _mistral_tool(tool: dict[str, Any]) -> str:
    # The template writes string values raw between quotes (no escaping) and everything else with tojson.
    function = tool.get("function") or {}
    fields = [
        f'"{key}": "{value}"' if isinstance(value, str) else f'"{key}": {_json(value)}'
        for key, value in function.items()
        if key != "return"
    ]
    return '{"type": "function", "function": {' + ", ".join(fields) + "}}"


def render_mistral_v3(messages: Sequence[ChatMessage], generation: bool, sp: Specials, tools: Tools = None) -> str:
    # mistralai/Mistral-7B-Instruct-v0.3: BOS, "[INST] u[/INST]" and " a</s>"; the system text goes in front of
    # the last message when that is a user turn (and nowhere otherwise); [AVAILABLE_TOOLS] before the last user
    # turn (before every user turn equal to it, as the template compares whole messages); calls as
    # [TOOL_CALLS] [{"name", "arguments", "id"}]</s>; results as [TOOL_RESULTS] {"content": <raw text>, ...}.
    # add_generation_prompt changes nothing (the open [INST] ... [/INST] is the prompt).
    system, turns = _split_system(messages)
    user_dicts = [m.to_template() for m in turns if m.role == "user"]
    last_user = user_dicts[-1] if user_dicts else None
    out = [sp.bos]
    for index, message in enumerate(turns):
        if message.role == "user":
            if tools is not None and message.to_template() == last_user:
                out.append("[AVAILABLE_TOOLS] [" + ", ".join(_mistral_tool(t) for t in tools) + "][/AVAILABLE_TOOLS]")
            if index == len(turns) - 1 and system is not None:
                out.append(f"[INST] {system}\n\n{message.content}[/INST]")
            else:
                out.append(f"[INST] {message.content}[/INST]")
        elif message.tool_calls:
            calls = [
                _json({"name": c.name, "arguments": _function(c.arguments)})[:-1]
                + f', "id": "{mistral_call_id(c.id)}"}}'
                for c in message.tool_calls
            ]
            out.append("[TOOL_CALLS] [" + ", ".join(calls) + "]" + sp.eos)
        elif message.role == "assistant":
            out.append(f" {message.content.strip()}{sp.eos}")
        elif message.role == "tool":
            call_id = mistral_call_id(message.tool_call_id)
            out.append(f'[TOOL_RESULTS] {{"content": {message.content}, "call_id": "{call_id}"}}[/TOOL_RESULTS]')
        else:
            raise TemplateError(
                "Only user and assistant roles are supported, with the exception of an initial optional system message!"
            )
    return "".join(out)
