"""Chat templates: choose the right one for a model (and say why), render conversations into prompts.

Order of choice: the user's override (per model or per conversation) -> the model's embedded Jinja template
(rendered in a sandbox; if it fails to compile or render, a built-in family takes over with a warning) ->
the family recognised from the architecture and names -> ChatML. A model never silently gets a format it
was not trained on (llama-cpp-python's fallback formats gemma-3 as Llama-2 [INST], and it answers nothing).

llama_cpp.Llama() compiles every embedded template at construction, so one broken template stops a model
from loading. That does not apply to Hearth: the
engine loads models through llama.cpp's C API, which never compiles templates; only this module does.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.core.errors import TemplateError
from app.core.gguf_info import ModelInfo
from app.core.messages import ROLES, ChatMessage
from app.core.template_families import FAMILIES, GENERIC_TOOL_SYNTAX, Family, Specials
from app.core.template_sandbox import compile_template, render_jinja
from app.core.tool_prompt import TOOL_STOPS, embedded_tool_syntax, fold_tools, uses_tools

Tools = Sequence[dict[str, Any]] | None

EMBEDDED = "embedded"
DEFAULT_FAMILY = "chatml"
# End-of-turn markers worth stopping on when an embedded template uses them.
_KNOWN_END_MARKERS = (
    "<|im_end|>",
    "<|eot_id|>",
    "<end_of_turn>",
    "<|end|>",
    "<|endoftext|>",
    "</s>",
    "<|end_of_text|>",
    "<|END_OF_TURN_TOKEN|>",
    "<|return|>",
    "<|im_start|>",
)


@dataclass(frozen=True)
class TemplateChoice:
    name: str  # a family name, or "embedded" / "embedded:<variant>"
    source: str  # "override" | "embedded" | "family" | "default"
    reason: str  # one sentence for the UI
    warning: str | None = None
    matches: str | None = None  # for an embedded template: the built-in family it renders like, if any

    @property
    def is_embedded(self) -> bool:
        return self.name == EMBEDDED or self.name.startswith(EMBEDDED + ":")

    @property
    def label(self) -> str:
        if self.is_embedded and self.matches:
            return f"{self.name} (like {self.matches})"
        return self.name


@dataclass(frozen=True)
class RenderedPrompt:
    text: str  # exactly what the template produced (may begin with the BOS text)
    stop: tuple[str, ...]  # never shown to the user
    choice: TemplateChoice
    tool_syntax: str = GENERIC_TOOL_SYNTAX  # how the model will write tool calls (app.core.tool_calls parses it)


def families() -> list[Family]:
    return list(FAMILIES.values())


def family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise TemplateError(f"unknown template {name!r}; choose from {', '.join(FAMILIES)} or embedded") from None


# ---- detection ------------------------------------------------------------------------------------------

_NAME_RULES: tuple[tuple[str, str], ...] = (
    (r"llama[-_ ]?3[._][123]", "llama-3.1"),  # 3.2 and 3.3 write tool calls the same way
    (r"llama[-_ ]?3", "llama-3"),
    (r"llama[-_ ]?2.*chat|chat.*llama[-_ ]?2", "llama-2"),
    (r"mistral.*v0[._]3", "mistral-v0.3"),
    (r"mi[sx]tral.*instruct|instruct.*mi[sx]tral", "mistral-instruct"),
    (r"zephyr|tinyllama.*chat", "zephyr"),
    (r"solar", "solar"),
    (r"phi[-_ ]?3", "phi-3"),
    (r"vicuna", "vicuna"),
    (r"alpaca", "alpaca"),
    (r"qwen[-_ ]?2[._]5", "qwen2.5"),
    (r"qwen|hermes|dolphin|chatml|yi[-_ ].*chat|internlm", "chatml"),
    (r"gemma", "gemma"),
)
_ARCH_RULES = {
    "gemma": "gemma",
    "gemma2": "gemma",
    "gemma3": "gemma",
    "gemma3n": "gemma",
    "qwen": "chatml",
    "qwen2": "chatml",
    "qwen2moe": "chatml",
    "qwen3": "chatml",
    "qwen3moe": "chatml",
    "phi3": "phi-3",
}


def detect_family(info: ModelInfo) -> tuple[str, str] | None:
    """The family recognised from architecture and names, with the reason; None when nothing matches."""
    arch_family = _ARCH_RULES.get(info.architecture)
    if arch_family:
        return arch_family, f"architecture {info.architecture} uses the {arch_family} format"
    names = " ".join(n for n in (info.name, info.basename, info.finetune, info.path.name) if n).lower()
    for pattern, name in _NAME_RULES:
        if re.search(pattern, names):
            return name, f"the model's name ({info.display_name}) identifies the {name} family"
    if info.architecture == "llama" and (info.vocab_size or 0) >= 128000:
        return "llama-3", "a llama model with Llama 3's 128k-token vocabulary"
    return None


def _embedded_source(info: ModelInfo, name: str) -> str | None:
    if name == EMBEDDED:
        return info.chat_template
    return info.chat_templates.get(name.removeprefix(EMBEDDED + ":"))


def _specials(info: ModelInfo | None, fam: Family | None) -> Specials:
    defaults = fam.defaults if fam else Specials("", "")
    if info is None:
        return defaults
    return Specials(bos=info.bos_token or defaults.bos, eos=info.eos_token or defaults.eos)


def _probe() -> list[ChatMessage]:
    return [
        ChatMessage("system", "S"),
        ChatMessage("user", "U1"),
        ChatMessage("assistant", "A1"),
        ChatMessage("user", "U2"),
    ]


def _check_embedded(info: ModelInfo, name: str) -> tuple[str | None, str | None]:
    """(error, matching family) for an embedded template: it must compile and render a probe conversation."""
    source = _embedded_source(info, name)
    if not source:
        return f"the model has no template named {name!r}", None
    try:
        compile_template(source)
        text = _render_embedded(source, info, _probe(), True)
    except TemplateError as exc:
        return str(exc), None
    for fam in FAMILIES.values():
        if fam.render(_probe(), True, _specials(info, fam)) == text:
            return None, fam.name
    return None, None


def choose_template(info: ModelInfo | None, override: str | None = None) -> TemplateChoice:
    """Pick the template for a model and say why. Never raises for a model's own (bad) template."""
    fallback = _fallback(info)
    if override:
        if override in FAMILIES:
            return TemplateChoice(override, "override", f"you chose the {override} template")
        if override == EMBEDDED or override.startswith(EMBEDDED + ":"):
            if info is None:
                raise TemplateError("an embedded template needs a model")
            error, matches = _check_embedded(info, override)
            if error is None:
                return TemplateChoice(override, "override", "you chose the model's own template", matches=matches)
            return _with_warning(fallback, f"the model's template {override!r} is unusable ({error})")
        family(override)  # raises with the list of valid names
    if info is not None and info.chat_template:
        error, matches = _check_embedded(info, EMBEDDED)
        if error is None:
            return TemplateChoice(EMBEDDED, "embedded", "the model file carries its own chat template", matches=matches)
        return _with_warning(fallback, f"the model's embedded template is unusable ({error})")
    return fallback


def _fallback(info: ModelInfo | None) -> TemplateChoice:
    detected = detect_family(info) if info is not None else None
    if detected:
        name, reason = detected
        return TemplateChoice(name, "family", f"no template in the file; {reason}")
    return TemplateChoice(
        DEFAULT_FAMILY,
        "default",
        "no template in the file and no family recognised; ChatML is the most common",
    )


def _with_warning(choice: TemplateChoice, warning: str) -> TemplateChoice:
    return TemplateChoice(choice.name, choice.source, choice.reason, f"{warning}; using {choice.name} instead")


# ---- rendering ------------------------------------------------------------------------------------------


def normalize(messages: Sequence[ChatMessage], *, keep_tools: bool = False) -> list[ChatMessage]:
    """What every family can render: one optional leading system message, then alternating turns.

    Later system messages become user messages, and consecutive messages of the same role are joined
    with a blank line (templates that insist on alternation would otherwise refuse the conversation).
    keep_tools (templates with tool use): assistant tool calls and "tool" results stay as they are and are
    never joined; otherwise any left (see tool_prompt.fold_tools) become plain user text.
    """
    result: list[ChatMessage] = []
    for index, message in enumerate(messages):
        role = message.role if message.role in ROLES else "user"
        if role == "tool" and not keep_tools:
            role = "user"
        if role == "system" and index > 0:
            role = "user"
        if keep_tools and (role == "tool" or message.tool_calls):
            calls = message.tool_calls if role == "assistant" else ()
            ids = (message.tool_call_id, message.name) if role == "tool" else (None, None)
            result.append(ChatMessage(role, message.content, calls, *ids))
            continue
        previous = result[-1] if result else None
        if previous and previous.role == role and role != "system" and not previous.tool_calls:
            result[-1] = ChatMessage(role, f"{previous.content}\n\n{message.content}")
        else:
            result.append(ChatMessage(role, message.content))
    return result


def _render_embedded(
    source: str, info: ModelInfo, messages: Sequence[ChatMessage], generation: bool, tools: Tools = None
) -> str:
    return render_jinja(
        source,
        [m.to_template() for m in messages],
        bos_token=info.bos_token or "",
        eos_token=info.eos_token or "",
        add_generation_prompt=generation,
        extra={"tools": list(tools)} if tools else None,
    )


def _embedded_stops(source: str, info: ModelInfo, matches: str | None) -> tuple[str, ...]:
    stops = list(FAMILIES[matches].stops) if matches else []
    stops += [marker for marker in _KNOWN_END_MARKERS if marker in source]
    return _with_model_ends(stops, info)


def _with_model_ends(stops: list[str], info: ModelInfo | None) -> tuple[str, ...]:
    if info is not None:
        stops += [t for t in (info.eos_token, info.eot_token) if t]
    return tuple(dict.fromkeys(s for s in stops if s))


def render_prompt(
    messages: Sequence[ChatMessage],
    info: ModelInfo | None,
    *,
    override: str | None = None,
    add_generation_prompt: bool = True,
    choice: TemplateChoice | None = None,
    tools: Tools = None,
) -> RenderedPrompt:
    """Render a conversation for a model. The chosen template (and any fallback warning) is in .choice.

    tools: OpenAI-shaped tool definitions ({"type": "function", "function": {...}}). Tool calls and results in
    the messages are rendered in the template's own syntax where it has one (the family's, or an embedded
    template that uses `tools`: given the tools and OpenAI-shaped messages, and its "tool_use" variant when the
    model has one); elsewhere through Hearth's generic tool prompt. .tool_syntax says how to parse the reply.
    """
    tools = list(tools) if tools else None
    choice = choice or choose_template(info, override)
    if choice.is_embedded and info is not None:
        source = _embedded_source(info, choice.name) or ""
        if tools and choice.name == EMBEDDED and info.chat_templates.get("tool_use"):
            source = info.chat_templates["tool_use"]
        try:
            return _render_embedded_prompt(source, info, messages, add_generation_prompt, choice, tools)
        except TemplateError as exc:  # the probe rendered, this conversation does not: fall back, say so
            choice = _with_warning(_fallback(info), f"the model's template failed on this conversation ({exc})")
    fam = family(choice.name)
    text, syntax = _render_with_family(fam, messages, add_generation_prompt, _specials(info, fam), tools)
    return RenderedPrompt(text, _with_model_ends(list(_tool_stops(fam.stops, syntax, tools)), info), choice, syntax)


def _render_embedded_prompt(
    source: str,
    info: ModelInfo,
    messages: Sequence[ChatMessage],
    generation: bool,
    choice: TemplateChoice,
    tools: Tools,
) -> RenderedPrompt:
    if uses_tools(source):
        syntax = embedded_tool_syntax(source, FAMILIES[choice.matches].tool_syntax if choice.matches else None)
        text = _render_embedded(source, info, normalize(messages, keep_tools=True), generation, tools)
    else:
        syntax = GENERIC_TOOL_SYNTAX
        text = _render_embedded(source, info, normalize(fold_tools(messages, tools)), generation)
    stops = _tool_stops(_embedded_stops(source, info, choice.matches), syntax, tools)
    return RenderedPrompt(text, stops, choice, syntax)


def _render_with_family(
    fam: Family, messages: Sequence[ChatMessage], generation: bool, specials: Specials, tools: Tools
) -> tuple[str, str]:
    """(prompt text, tool syntax) for a built-in family; families without tool use get the generic prompt."""
    if fam.tool_render is not None:
        return fam.tool_render(normalize(messages, keep_tools=True), generation, specials, tools), fam.tool_syntax
    return fam.render(normalize(fold_tools(messages, tools)), generation, specials), GENERIC_TOOL_SYNTAX


def _tool_stops(stops: Sequence[str], syntax: str, tools: Tools) -> tuple[str, ...]:
    """With tools on, also stop where a model starts to invent the tool's answer itself."""
    extra = TOOL_STOPS.get(syntax, ()) if tools else ()
    return tuple(dict.fromkeys([*stops, *extra]))


def render_family(
    name: str,
    messages: Sequence[ChatMessage],
    *,
    add_generation_prompt: bool = True,
    bos: str | None = None,
    eos: str | None = None,
    tools: Tools = None,
) -> RenderedPrompt:
    """Render with a built-in family and explicit BOS/EOS text (default: the family's reference models')."""
    fam = family(name)
    tools = list(tools) if tools else None
    specials = Specials(fam.defaults.bos if bos is None else bos, fam.defaults.eos if eos is None else eos)
    text, syntax = _render_with_family(fam, messages, add_generation_prompt, specials, tools)
    choice = TemplateChoice(fam.name, "override", f"you chose the {fam.name} template")
    return RenderedPrompt(text, _tool_stops(fam.stops, syntax, tools), choice, syntax)


def render_with_jinja_file(
    source: str,
    messages: Sequence[ChatMessage],
    *,
    add_generation_prompt: bool = True,
    bos_token: str = "",
    eos_token: str = "",
    tools: Tools = None,
) -> RenderedPrompt:
    """Render a conversation with a template given as text (`hearth render-prompt --jinja FILE`)."""
    tools = list(tools) if tools else None
    if uses_tools(source):
        syntax = embedded_tool_syntax(source, None)
        turns = [m.to_template() for m in normalize(messages, keep_tools=True)]
    else:
        syntax = GENERIC_TOOL_SYNTAX
        turns = [m.to_template() for m in normalize(fold_tools(messages, tools))]
    text = render_jinja(
        source,
        turns,
        bos_token=bos_token,
        eos_token=eos_token,
        add_generation_prompt=add_generation_prompt,
        extra={"tools": tools} if tools and uses_tools(source) else None,
    )
    stops = tuple(m for m in _KNOWN_END_MARKERS if m in source) + tuple(t for t in (eos_token,) if t)
    choice = TemplateChoice("file", "override", "a template file")
    return RenderedPrompt(text, _tool_stops(tuple(dict.fromkeys(stops)), syntax, tools), choice, syntax)
