"""Chat templates: golden strings per family, the published templates as oracles, detection, the sandbox.

Expected strings are written from each family's published chat_template (tokenizer_config.json of the
reference model named in tests/data/chat-templates/SOURCES.md, which also records the byte-exact copies
used as oracles below). Alpaca and Vicuna have no official template; their expectations follow Hearth's
documented formats (Stanford Alpaca's prompt, FastChat's vicuna_v1.1).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jinja2
import jinja2.sandbox
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core.errors import TemplateError
from app.core.gguf_info import inspect
from app.core.stops import StopMatcher
from app.core.template_families import FAMILIES, Specials
from app.core.template_sandbox import render_jinja
from app.core.templates import (
    ChatMessage,
    choose_template,
    family,
    normalize,
    render_family,
    render_prompt,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "chat-templates"
S, U1, A1, U2 = (
    ChatMessage("system", "S"),
    ChatMessage("user", "U1"),
    ChatMessage("assistant", "A1"),
    ChatMessage("user", "U2"),
)

# (family, conversation, add_generation_prompt) -> expected text, with the family's reference BOS/EOS.
GOLDEN = {
    ("llama-2", (U1,), True): "<s>[INST] U1 [/INST]",
    ("llama-2", (S, U1), True): "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nU1 [/INST]",
    (
        "llama-2",
        (S, U1, A1, U2),
        True,
    ): "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nU1 [/INST] A1 </s><s>[INST] U2 [/INST]",
    ("llama-2", (U1, A1), False): "<s>[INST] U1 [/INST] A1 </s>",
    ("mistral-instruct", (U1,), True): "<s> [INST] U1 [/INST]",
    ("mistral-instruct", (S, U1), True): "<s> [INST] S\n\nU1 [/INST]",
    ("mistral-instruct", (S, U1, A1, U2), True): "<s> [INST] S\n\nU1 [/INST] A1</s> [INST] U2 [/INST]",
    ("mistral-instruct", (U1, A1), False): "<s> [INST] U1 [/INST] A1</s>",
    ("llama-3", (U1,), True): "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nU1<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ("llama-3", (S, U1), False): "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nU1<|eot_id|>",
    (
        "llama-3",
        (S, U1, A1, U2),
        True,
    ): "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nU1<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    "A1<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nU2<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ("chatml", (U1,), True): "<|im_start|>user\nU1<|im_end|>\n<|im_start|>assistant\n",
    ("chatml", (S, U1), False): "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n",
    ("chatml", (S, U1, A1, U2), True): "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n"
    "<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\nU2<|im_end|>\n<|im_start|>assistant\n",
    ("gemma", (U1,), True): "<bos><start_of_turn>user\nU1<end_of_turn>\n<start_of_turn>model\n",
    ("gemma", (S, U1), True): "<bos><start_of_turn>user\nS\n\nU1<end_of_turn>\n<start_of_turn>model\n",
    (
        "gemma",
        (S, U1, A1, U2),
        False,
    ): "<bos><start_of_turn>user\nS\n\nU1<end_of_turn>\n<start_of_turn>model\n"
    "A1<end_of_turn>\n<start_of_turn>user\nU2<end_of_turn>\n",
    ("phi-3", (U1,), True): "<|user|>\nU1<|end|>\n<|assistant|>\n",
    ("phi-3", (S, U1), False): "<|system|>\nS<|end|>\n<|user|>\nU1<|end|>\n<|endoftext|>",
    ("phi-3", (S, U1, A1, U2), True): "<|system|>\nS<|end|>\n<|user|>\nU1<|end|>\n<|assistant|>\nA1<|end|>\n"
    "<|user|>\nU2<|end|>\n<|assistant|>\n",
    ("solar", (U1,), True): "### User:\nU1\n\n### Assistant:\n",
    ("solar", (S, U1), False): "### System:\nS\n\n### User:\nU1\n\n",
    ("solar", (S, U1, A1, U2), True): "### System:\nS\n\n### User:\nU1\n\n### Assistant:\nA1### User:\nU2\n\n"
    "### Assistant:\n",
    ("zephyr", (U1,), True): "<|user|>\nU1</s>\n<|assistant|>\n",
    ("zephyr", (S, U1), False): "<|system|>\nS</s>\n<|user|>\nU1</s>\n",
    (
        "zephyr",
        (S, U1, A1, U2),
        True,
    ): "<|system|>\nS</s>\n<|user|>\nU1</s>\n<|assistant|>\nA1</s>\n<|user|>\nU2</s>\n<|assistant|>\n",
    (
        "alpaca",
        (U1,),
        True,
    ): "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\nU1\n\n### Response:\n",
    (
        "alpaca",
        (S, U1, A1, U2),
        True,
    ): "S\n\n### Instruction:\nU1\n\n### Response:\nA1\n\n### Instruction:\nU2\n\n### Response:\n",
    ("alpaca", (S, U1), False): "S\n\n### Instruction:\nU1\n\n",
    ("vicuna", (U1,), True): "A chat between a curious user and an artificial intelligence assistant. The "
    "assistant gives helpful, detailed, and polite answers to the user's questions. USER: U1 ASSISTANT:",
    ("vicuna", (S, U1, A1, U2), True): "S USER: U1 ASSISTANT: A1</s>USER: U2 ASSISTANT:",
    ("vicuna", (S, U1), False): "S USER: U1 ",
    ("llama-3.1", (U1,), True): "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge "
    "Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nU1"
    "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    ("llama-3.1", (S, U1), False): "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting "
    "Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nS<|eot_id|><|start_header_id|>user"
    "<|end_header_id|>\n\nU1<|eot_id|>",
    ("qwen2.5", (U1,), True): "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n<|im_start|>assistant\n",
    ("qwen2.5", (S, U1), False): "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n",
    ("mistral-v0.3", (U1,), True): "<s>[INST] U1[/INST]",
    ("mistral-v0.3", (S, U1), False): "<s>[INST] S\n\nU1[/INST]",
    ("mistral-v0.3", (S, U1, A1, U2), True): "<s>[INST] U1[/INST] A1</s>[INST] S\n\nU2[/INST]",
}


@pytest.mark.parametrize(("key", "expected"), list(GOLDEN.items()), ids=lambda v: "-".join(map(str, v[:1])))
def test_golden(key, expected):
    name, conversation, generation = key
    assert render_family(name, list(conversation), add_generation_prompt=generation).text == expected


def test_every_family_has_golden_cases_and_stops():
    assert {name for name, _, _ in GOLDEN} == set(FAMILIES)
    for fam in FAMILIES.values():
        assert fam.stops and fam.system_role in ("native", "folded")


# ---- the published templates as oracles --------------------------------------------------------------------


def _oracle_env() -> jinja2.Environment:
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def fail(message: str) -> None:
        raise jinja2.TemplateError(message)

    env.globals["raise_exception"] = fail
    # transformers' tojson (what every published template is rendered with): no HTML escaping, keys in order.
    env.filters["tojson"] = lambda value, ensure_ascii=False, indent=None, separators=None, sort_keys=False: json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )
    return env


ORACLES = json.loads((DATA / "families.json").read_text())
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
turn_text = st.one_of(text, st.sampled_from(["  padded  ", "\nnew\nlines\n", "", "<b>html</b>", "{{ x }}"]))


@st.composite
def conversations(draw: st.DrawFn) -> list[ChatMessage]:
    messages = [ChatMessage("system", draw(turn_text))] if draw(st.booleans()) else []
    for index in range(draw(st.integers(1, 5)) * 2 - 1):
        messages.append(ChatMessage("user" if index % 2 == 0 else "assistant", draw(turn_text)))
    return messages


@pytest.mark.parametrize("oracle", sorted(ORACLES))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(conversation=conversations(), generation=st.booleans())
def test_family_matches_its_published_template(oracle, conversation, generation):
    meta = ORACLES[oracle]
    template = _oracle_env().from_string((DATA / meta.get("file", f"{oracle}.jinja")).read_text(encoding="utf-8"))
    expected = template.render(
        messages=[m.to_template() for m in conversation],
        bos_token=meta["bos"],
        eos_token=meta["eos"],
        add_generation_prompt=generation,
    )
    ours = FAMILIES[meta["family"]].render(conversation, generation, Specials(meta["bos"], meta["eos"]))
    assert ours == expected


@settings(max_examples=60, deadline=None)
@given(conversation=conversations(), generation=st.booleans())
def test_gemma_2_template_agrees_where_it_accepts_the_conversation(conversation, generation):
    """Gemma 2's template refuses system messages; without one it must match Hearth's gemma exactly."""
    conversation = [m for m in conversation if m.role != "system"]
    template = _oracle_env().from_string((DATA / "gemma.jinja").read_text(encoding="utf-8"))
    expected = template.render(
        messages=[m.to_template() for m in conversation],
        bos_token="<bos>",
        eos_token="<eos>",
        add_generation_prompt=generation,
    )
    assert FAMILIES["gemma"].render(conversation, generation, Specials("<bos>", "<eos>")) == expected


@pytest.mark.parametrize(
    "variant",
    [
        "llama-3.1",
        "variants/chatml-qwen2.5-instruct",
        "variants/mistral-instruct-v0.3",
        "variants/mistral-instruct-v0.1-legacy",
    ],
)
def test_real_embedded_templates_render_in_the_sandbox(variant):
    source = (DATA / f"{variant}.jinja").read_text(encoding="utf-8")
    conversation = [
        {"role": "user", "content": "U1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "U2"},
    ]
    ours = render_jinja(source, conversation, bos_token="<s>", eos_token="</s>")
    theirs = (
        _oracle_env()
        .from_string(source)
        .render(messages=conversation, bos_token="<s>", eos_token="</s>", add_generation_prompt=True)
    )
    assert ours == theirs and "U2" in ours


# ---- detection ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected", "source"),
    [
        ({"architecture": "gemma3", "name": "Gemma 3 270m"}, "gemma", "family"),
        ({"name": "Meta-Llama-3-8B-Instruct"}, "llama-3", "family"),
        ({"name": "Mistral-7B-Instruct-v0.2"}, "mistral-instruct", "family"),
        ({"name": "Qwen2.5-7B-Instruct"}, "qwen2.5", "family"),
        ({"name": "Qwen2-7B-Instruct"}, "chatml", "family"),
        ({"name": "Llama-3.1-Storm-8B"}, "llama-3.1", "family"),
        ({"name": "Meta-Llama-3.1-8B-Instruct"}, "llama-3.1", "family"),
        ({"name": "Mistral-7B-Instruct-v0.3"}, "mistral-v0.3", "family"),
        ({"architecture": "phi3", "name": "Phi 3 Mini"}, "phi-3", "family"),
        ({"name": "SOLAR-10.7B-Instruct-v1.0"}, "solar", "family"),
        ({"name": "zephyr-7b-beta"}, "zephyr", "family"),
        ({"name": "TinyLlama-1.1B-Chat-v1.0"}, "zephyr", "family"),
        ({"name": "Llama-2-7b-chat"}, "llama-2", "family"),
        ({"name": "vicuna-13b-v1.5"}, "vicuna", "family"),
        ({"name": "Mystery Model"}, "chatml", "default"),
    ],
)
def test_detection_from_architecture_and_name(make_tiny_model, spec, expected, source):
    path = make_tiny_model(f"detect-{abs(hash(spec['name'])):x}.gguf", **spec)  # no family in the file name
    choice = choose_template(inspect(path))
    assert (choice.name, choice.source) == (expected, source)
    assert choice.reason and choice.warning is None


def test_embedded_template_wins_and_is_recognised(make_tiny_model):
    chatml = (DATA / "chatml.jinja").read_text(encoding="utf-8")
    info = inspect(
        make_tiny_model(
            "embedded-chatml.gguf",
            name="Mistral-7B-Instruct",
            chat_template=chatml,
            extra_control_tokens=("<|im_start|>", "<|im_end|>"),
        )
    )
    choice = choose_template(info)
    assert (choice.name, choice.source, choice.matches) == ("embedded", "embedded", "chatml")
    rendered = render_prompt([S, U1], info)
    assert rendered.text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n<|im_start|>assistant\n"
    assert "<|im_end|>" in rendered.stop and "</s>" in rendered.stop  # the model's EOS text too


def test_overrides_per_model_or_conversation(make_tiny_model):
    info = inspect(
        make_tiny_model(
            "override.gguf",
            name="Mistral-7B-Instruct",
            chat_template="{{ 'x' }}",
            chat_templates={"tool_use": "{{ 'tools' }}"},
        )
    )
    assert choose_template(info, "zephyr").source == "override"
    assert render_prompt([U1], info, override="zephyr").text == "<|user|>\nU1</s>\n<|assistant|>\n"
    assert render_prompt([U1], info, override="embedded:tool_use").text == "tools"
    with pytest.raises(TemplateError, match="unknown template 'nope'"):
        choose_template(info, "nope")


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{% do messages.append(1) %}", "syntax error"),
        ("{{ messages.append(1) }}", "sandbox|unsafe"),
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "sandbox|unsafe|undefined"),
        ("{{ raise_exception('nope') }}", "refused"),
        ("{% for x in messages %}{{ x.content.foo.bar() }}{% endfor %}", "failed|refused|undefined"),
    ],
)
def test_broken_or_hostile_embedded_template_falls_back_with_a_warning(make_tiny_model, template, problem):
    info = inspect(
        make_tiny_model(f"broken-{abs(hash(template))}.gguf", name="Mistral-7B-Instruct", chat_template=template)
    )
    choice = choose_template(info)
    assert choice.name == "mistral-instruct" and choice.source == "family"
    assert choice.warning and "unusable" in choice.warning
    import re

    assert re.search(problem, choice.warning.lower()), choice.warning
    assert render_prompt([U1], info).text == "<s> [INST] U1 [/INST]"


def test_a_broken_template_never_stops_the_model_from_loading(make_tiny_model):
    from app.core.conversation import ChatRunner
    from app.core.engine import GenerationStats
    from app.core.llama_engine import LlamaCppEngine
    from app.core.load_config import LoadConfig
    from app.core.sampling import SamplingSettings

    path = make_tiny_model("do-template.gguf", name="Some Chat", chat_template="{% do x %}{{ bos_token }}")
    engine = LlamaCppEngine()
    engine.load(path, LoadConfig(n_ctx=256))  # llama_cpp.Llama() would raise here (it compiles every embedded template)
    events = list(ChatRunner(engine).stream([U1], SamplingSettings(max_tokens=4, seed=1)))
    engine.unload()
    assert isinstance(events[-1], GenerationStats) and events[-1].error is None


@pytest.mark.parametrize(
    "template",
    [
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{{ 'x' * 10**9 }}",
        "{% for i in range(100000) %}{{ 'abcdefghijklmnopqrstuvwxyz0123456789' }}{% endfor %}",
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        "{{ (messages * 10000000) | length }}",
    ],
)
def test_hostile_templates_are_stopped_quickly(template):
    started = time.perf_counter()
    with pytest.raises(TemplateError):
        render_jinja(template, [{"role": "user", "content": "hi"}])
    assert time.perf_counter() - started < 3


def test_sandbox_helpers_real_templates_use():
    out = render_jinja(
        "{{ bos_token }}{% for m in messages %}{% if loop.index0 > 1 %}{% break %}{% endif %}{{ m | tojson }}"
        "{% endfor %}{{ strftime_now('%Y') | length }}"
        "{% if add_generation_prompt %}GO{% endif %}{{ eos_token }}",
        [{"role": "user", "content": "<é>"}] * 3,
        bos_token="<s>",
        eos_token="</s>",
    )
    assert out == '<s>{"role": "user", "content": "<é>"}{"role": "user", "content": "<é>"}4GO</s>'


def test_normalize_merges_and_demotes():
    messages = [S, U1, ChatMessage("user", "again"), ChatMessage("system", "late"), A1]
    assert normalize(messages) == [S, ChatMessage("user", "U1\n\nagain\n\nlate"), A1]


def test_unknown_family_lists_the_choices():
    with pytest.raises(TemplateError, match="choose from llama-2, mistral-instruct"):
        family("gpt-9")


# ---- stop strings across chunks ---------------------------------------------------------------------------


def test_stop_matcher_holds_back_partial_stops_and_cuts_at_the_stop():
    matcher = StopMatcher(["<|im_end|>", "\n### User:"])
    assert matcher.feed("Hello <|im") == ("Hello ", False)
    assert matcher.feed("_en") == ("", False)
    assert matcher.feed("d|> more") == ("", True)
    matcher = StopMatcher(["<|im_end|>"])
    assert matcher.feed("a <|i") == ("a ", False)
    assert matcher.feed("s not a stop") == ("<|is not a stop", False)
    matcher = StopMatcher(["\n### User:"])
    assert matcher.feed("x\n###") == ("x", False)
    assert matcher.flush() == "\n###"


@settings(max_examples=200, deadline=None)
@given(pieces=st.lists(st.text(alphabet="ab<|>_endim", max_size=6), max_size=20))
def test_stop_matcher_equals_cutting_the_whole_text(pieces):
    stops = ["<|im_end|>", "ab<"]
    whole = "".join(pieces)
    cut = min((i for i in (whole.find(s) for s in stops) if i >= 0), default=len(whole))
    matcher = StopMatcher(stops)
    shown, hit = "", False
    for piece in pieces:
        safe, hit = matcher.feed(piece)
        shown += safe
        if hit:
            break
    if not hit:
        shown += matcher.flush()
    assert shown == whole[:cut]
    assert hit == (cut < len(whole))


# ---- the real gemma-3-270m file ----------------------------------------------------------------------------


def test_real_gemma_gets_the_gemma_template_and_stops_at_end_of_turn(gemma_path: Path):
    from app.core.conversation import ChatRunner
    from app.core.engine import GenerationStats, TextChunk
    from app.core.llama_engine import LlamaCppEngine
    from app.core.load_config import LoadConfig
    from app.core.sampling import SamplingSettings

    info = inspect(gemma_path)
    choice = choose_template(info)
    assert (choice.name, choice.source) == ("gemma", "family")  # llama-cpp-python would use llama-2 [INST]
    rendered = render_prompt([ChatMessage("system", "Be brief."), ChatMessage("user", "Hi")], info)
    assert rendered.text == "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    assert "<end_of_turn>" in rendered.stop

    engine = LlamaCppEngine()
    engine.load(gemma_path, LoadConfig(n_ctx=1024))
    try:
        assert engine.tokenize(rendered.text).count(2) == 1  # one <bos>: no double BOS
        end_of_turn = engine.tokenize("<end_of_turn>", add_bos=False)
        assert len(end_of_turn) == 1
        # The base (not instruction-tuned) 270m model rarely ends a turn by itself; a logit bias makes it
        # emit <end_of_turn> within a few tokens, which must end the reply without any trace of the marker.
        sampling = SamplingSettings(temperature=0.0, max_tokens=40, logit_bias=((end_of_turn[0], 12.0),))
        events = list(ChatRunner(engine).stream([ChatMessage("user", "Hi")], sampling))
        text = "".join(e.text for e in events if isinstance(e, TextChunk))
        stats = events[-1]
        assert isinstance(stats, GenerationStats)
        assert stats.finish_reason == "stop" and stats.generated_tokens < 40
        assert "<end_of_turn>" not in text and "<start_of_turn>" not in text
    finally:
        engine.unload()
