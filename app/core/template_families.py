"""Hearth's built-in chat template families, written in Python, each matching its published format exactly.

Each renderer reproduces the text the family's own published template (the `chat_template` of the model's
tokenizer_config.json, cited per family) produces for an alternating user/assistant conversation with an
optional leading system message — whitespace, BOS text and quirks included. Where the published template
has no system role (Gemma 2, the 2023 Mistral template), the system prompt is folded into the first user
turn the way the family's newer template does. Alpaca and Vicuna have no official template; their formats
here follow Stanford Alpaca's prompt and FastChat's vicuna_v1.1 conversation template (documented below).
The families with native tool use (llama-3.1, qwen2.5, mistral-v0.3) render tools, tool calls and tool
results too; their renderers live in app.core.tool_families.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from app.core.messages import ChatMessage
from app.core.tool_families import render_llama31, render_mistral_v3, render_qwen25


class Turn(Protocol):
    """What a family renders: a role and its text (app.core.messages.Turn has both)."""

    # Read-only properties: frozen dataclasses (ChatMessage) satisfy them, plain attributes would not.
    @property
    def role(self) -> str: ...

    @property
    def content(self) -> str: ...


@dataclass(frozen=True)
class Specials:
    """The model's special-token texts a template may write (from the GGUF; family defaults otherwise)."""

    bos: str
    eos: str


Renderer = Callable[[Sequence[Turn], bool, Specials], str]
# A family with native tool use also renders tools, assistant tool calls and tool results (app.core.tool_families).
ToolRenderer = Callable[[Sequence[ChatMessage], bool, Specials, Sequence[dict[str, Any]] | None], str]

# How a model writes its tool calls (app.core.tool_calls parses each): "hermes" = <tool_call>{json}</tool_call>
# (Qwen2.5, Hermes, and Hearth's generic tool prompt for families without tool use), "llama-3.1" = a bare
# {"name", "parameters"} object (after <|python_tag|>), "mistral" = [TOOL_CALLS] [{"name", "arguments"}].
GENERIC_TOOL_SYNTAX = "hermes"


@dataclass(frozen=True)
class Family:
    """A built-in template family."""

    name: str
    title: str
    source: str  # where the format was read
    system_role: str  # "native" or "folded" (into the first user turn)
    stops: tuple[str, ...]
    defaults: Specials  # BOS/EOS text of the family's reference models
    render: Renderer
    tool_render: ToolRenderer | None = None  # None: tools go through the generic tool prompt (tool_prompt.py)
    tool_syntax: str = GENERIC_TOOL_SYNTAX

    @property
    def native_tools(self) -> bool:
        return self.tool_render is not None


def _without_tools(render: ToolRenderer) -> Renderer:
    def plain(messages: Sequence[Turn], generation: bool, sp: Specials) -> str:
        return render(messages, generation, sp, None)  # type: ignore[arg-type]  # ChatMessages in practice

    return plain


def _split_system(messages: Sequence[Turn]) -> tuple[str | None, list[Turn]]:
    if messages and messages[0].role == "system":
        return messages[0].content, list(messages[1:])
    return None, list(messages)


def _llama2(messages: Sequence[Turn], generation: bool, sp: Specials) -> str:
    # Llama-2-chat: every user turn opens with BOS; the system prompt sits in <<SYS>> inside the first
    # [INST]; both the combined first turn and replies are strip()ped; replies end " </s>".
    # (The template ignores add_generation_prompt: the open [INST] ... [/INST] is the prompt.)
    system, turns = _split_system(messages)
    out = []
    for index, message in enumerate(turns):
        content = message.content
        if index == 0 and system is not None:
            content = f"<<SYS>>\n{system}\n<</SYS>>\n\n{content}"
        if message.role == "user":
            out.append(f"{sp.bos}[INST] {content.strip()} [/INST]")
        elif message.role == "assistant":
            out.append(f" {content.strip()} {sp.eos}")
    return "".join(out)


def _mistral(messages: Sequence[Turn], generation: bool, sp: Specials) -> str:
    # Mistral-7B-Instruct-v0.1/v0.2, current revision: BOS once, " [INST] ... [/INST]" per user turn,
    # the system prompt folded into the first one with a blank line, replies " A</s>". No stripping.
    system, turns = _split_system(messages)
    out = [sp.bos]
    for index, message in enumerate(turns):
        if message.role == "user":
            prefix = f"{system}\n\n" if index == 0 and system is not None else ""
            out.append(f" [INST] {prefix}{message.content} [/INST]")
        elif message.role == "assistant":
            out.append(f" {message.content}{sp.eos}")
    return "".join(out)


def _llama3(messages: Sequence[Turn], generation: bool, sp: Specials) -> str:
    # Meta-Llama-3-8B-Instruct: header tokens per message, trimmed content, <|eot_id|>; BOS before the first.
    out = [sp.bos]
    for message in messages:
        out.append(f"<|start_header_id|>{message.role}<|end_header_id|>\n\n{message.content.strip()}<|eot_id|>")
    if generation:
        out.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
    return "".join(out)


def _chatml(messages: Sequence[Turn], generation: bool, sp: Specials) -> str:
    # OpenHermes-2.5-Mistral-7B (ChatML; also Qwen): no BOS text, no trimming.
    out = [f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n" for m in messages]
    if generation:
        out.append("<|im_start|>assistant\n")
    return "".join(out)


def _gemma(messages: Sequence[Turn], generation: bool, sp: Specials) -> str:
    # Gemma 3 instruct: BOS, <start_of_turn>user|model, trimmed content, <end_of_turn>\n. The system prompt
    # (untrimmed) + a blank line prefixes the first user turn (Gemma 2's template refused system messages).
    system, turns = _split_system(messages)
    prefix = f"{system}\n\n" if system is not None else ""
    out = [sp.bos]
    for index, message in enumerate(turns):
        role = "model" if message.role == "assistant" else message.role
        lead = prefix if index == 0 else ""
        out.append(f"<start_of_turn>{role}\n{lead}{message.content.strip()}<end_of_turn>\n")
    if generation:
        out.append("<start_of_turn>model\n")
    return "".join(out)


def _phi3(messages: Sequence[Turn], generation: bool, sp: Specials) -> str:
    # Phi-3-mini-4k-instruct (current revision): <|role|>\n content <|end|>\n; no BOS; without a generation
    # prompt the template closes with the EOS text.
    tags = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
    out = [f"{tags[m.role]}\n{m.content}<|end|>\n" for m in messages if m.role in tags]
    out.append("<|assistant|>\n" if generation else sp.eos)
    return "".join(out)


def _solar(messages: Sequence[Turn], generation: bool, sp: Specials) -> str:
    # SOLAR-10.7B-Instruct-v1.0: "### System/User/Assistant:" headers; an empty system prompt is skipped.
    # Quirk kept from the published template: a reply has no separator after it ("A1### User:").
    out = []
    for message in messages:
        if message.role == "system":
            if message.content:
                out.append(f"### System:\n{message.content}\n\n")
        elif message.role == "user":
            out.append(f"### User:\n{message.content}\n\n")
        elif message.role == "assistant":
            out.append(f"### Assistant:\n{message.content}")
    if generation and messages:
        out.append("### Assistant:\n")
    return "".join(out)


def _zephyr(messages: Sequence[Turn], generation: bool, sp: Specials) -> str:
    # zephyr-7b-beta (also TinyLlama-1.1B-Chat): <|role|>\n content </s>\n per message.
    tags = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
    out = [f"{tags[m.role]}\n{m.content}{sp.eos}\n" for m in messages if m.role in tags]
    if generation and messages:
        out.append("<|assistant|>\n")
    return "".join(out)


ALPACA_SYSTEM = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)


def _alpaca(messages: Sequence[Turn], generation: bool, sp: Specials) -> str:
    # No official chat template exists. Hearth's Alpaca is Stanford Alpaca's prompt (no-input variant)
    # extended to several turns: preamble (the system prompt, else Alpaca's own sentence), then
    # "### Instruction:\n...\n\n### Response:\n..." blocks separated by a blank line. No BOS text (the
    # tokenizer adds one for models that want it). vLLM's example template differs only in whitespace.
    system, turns = _split_system(messages)
    out = [f"{(system if system is not None else ALPACA_SYSTEM).strip()}\n\n"]
    blocks = []
    for message in turns:
        if message.role == "user":
            blocks.append(f"### Instruction:\n{message.content.strip()}\n\n")
        elif message.role == "assistant":
            blocks.append(f"### Response:\n{message.content.strip()}\n\n")
    out.extend(blocks)
    if generation and turns and turns[-1].role == "user":
        out.append("### Response:\n")
    return "".join(out)


VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


def _vicuna(messages: Sequence[Turn], generation: bool, sp: Specials) -> str:
    # No official chat template exists (lmsys publishes none). Hearth's Vicuna is FastChat's vicuna_v1.1
    # conversation template: "SYSTEM USER: u ASSISTANT: a</s>USER: u ASSISTANT:" (sep " ", sep2 EOS text),
    # with FastChat's default system sentence when none is given.
    system, turns = _split_system(messages)
    out = [(system if system is not None else VICUNA_SYSTEM) + " "]
    for message in turns:
        if message.role == "user":
            out.append(f"USER: {message.content} ")
        elif message.role == "assistant":
            out.append(f"ASSISTANT: {message.content}{sp.eos}")
    if generation and turns and turns[-1].role == "user":
        out.append("ASSISTANT:")
    return "".join(out)


_LLAMA_SPECIALS = Specials("<s>", "</s>")

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "llama-2",
            "Llama 2 chat ([INST] <<SYS>>)",
            "meta-llama/Llama-2-7b-chat-hf tokenizer_config.json",
            "native",
            ("[INST]", "</s>"),
            _LLAMA_SPECIALS,
            _llama2,
        ),
        Family(
            "mistral-instruct",
            "Mistral Instruct ([INST])",
            "mistralai/Mistral-7B-Instruct-v0.1 tokenizer_config.json (current revision)",
            "folded",
            ("[INST]", "</s>"),
            _LLAMA_SPECIALS,
            _mistral,
        ),
        Family(
            "mistral-v0.3",
            "Mistral v0.3 ([INST], [TOOL_CALLS])",
            "mistralai/Mistral-7B-Instruct-v0.3",
            "folded",
            ("[INST]", "</s>"),
            _LLAMA_SPECIALS,
            _without_tools(render_mistral_v3),
            render_mistral_v3,
            "mistral",
        ),
        Family(
            "llama-3",
            "Llama 3 instruct (header tokens)",
            "meta-llama/Meta-Llama-3-8B-Instruct",
            "native",
            ("<|eot_id|>", "<|end_of_text|>", "<|start_header_id|>"),
            Specials("<|begin_of_text|>", "<|eot_id|>"),
            _llama3,
        ),
        Family(
            "llama-3.1",
            "Llama 3.1 instruct (header tokens, tools)",
            "meta-llama/Llama-3.1-8B-Instruct",
            "native",
            ("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|start_header_id|>"),
            Specials("<|begin_of_text|>", "<|eot_id|>"),
            _without_tools(render_llama31),
            render_llama31,
            "llama-3.1",
        ),
        Family(
            "chatml",
            "ChatML (<|im_start|>)",
            "teknium/OpenHermes-2.5-Mistral-7B",
            "native",
            ("<|im_end|>", "<|im_start|>"),
            Specials("<s>", "<|im_end|>"),
            _chatml,
        ),
        Family(
            "qwen2.5",
            "Qwen2.5 (ChatML with <tool_call>)",
            "Qwen/Qwen2.5-7B-Instruct",
            "native",
            ("<|im_end|>", "<|im_start|>", "<|endoftext|>"),
            Specials("", "<|im_end|>"),
            _without_tools(render_qwen25),
            render_qwen25,
            "hermes",
        ),
        Family(
            "gemma",
            "Gemma (<start_of_turn>)",
            "google/gemma-3-1b-it (and gemma-2)",
            "folded",
            ("<end_of_turn>", "<start_of_turn>", "<eos>"),
            Specials("<bos>", "<eos>"),
            _gemma,
        ),
        Family(
            "phi-3",
            "Phi-3 (<|user|> <|end|>)",
            "microsoft/Phi-3-mini-4k-instruct",
            "native",
            ("<|end|>", "<|endoftext|>", "<|user|>"),
            Specials("<s>", "<|endoftext|>"),
            _phi3,
        ),
        Family(
            "solar",
            "SOLAR instruct (### User:)",
            "upstage/SOLAR-10.7B-Instruct-v1.0",
            "native",
            ("### User:", "### System:", "</s>"),
            _LLAMA_SPECIALS,
            _solar,
        ),
        Family(
            "zephyr",
            "Zephyr (<|user|> </s>)",
            "HuggingFaceH4/zephyr-7b-beta",
            "native",
            ("</s>", "<|user|>"),
            _LLAMA_SPECIALS,
            _zephyr,
        ),
        Family(
            "alpaca",
            "Alpaca (### Instruction:)",
            "Stanford Alpaca prompt (no official chat template)",
            "native",
            ("### Instruction:", "### Input:", "</s>"),
            _LLAMA_SPECIALS,
            _alpaca,
        ),
        Family(
            "vicuna",
            "Vicuna v1.1 (USER: / ASSISTANT:)",
            "FastChat vicuna_v1.1 (no official chat template)",
            "native",
            ("</s>", "USER:"),
            _LLAMA_SPECIALS,
            _vicuna,
        ),
    )
}
