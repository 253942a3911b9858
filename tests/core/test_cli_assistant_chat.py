"""`hearth chat --assistant NAME --var NAME=VALUE`, every sampling flag reaching llama.cpp's sampler (recorded as
the engine calls llama.cpp's sampler constructors; the real engine runs), the effective settings stored with
the reply, flags overriding the assistant's values, its template, reply format and load settings applied, and
`--preset` taking the names presets had before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import llama_cpp
import pytest

from app.cli import run
from app.core.assistants import Assistant, AssistantLibrary
from app.core.chat_setup import LoadOverrides
from app.core.load_config import LoraAdapter
from app.core.paths import AppPaths
from app.core.sampling import PRESETS, SamplingSettings
from app.core.store import Store
from app.core.structured import JSON_SCHEMA, ReplyFormat
from app.core.tiny_model import write_tiny_lora

SAMPLERS = ("top_k", "top_p", "min_p", "typical", "temp", "dist", "penalties", "mirostat_v2", "greedy")


@pytest.fixture
def sampler_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[Any, ...]]]:
    """Each llama_sampler_init_* call the engine makes, with its arguments (the call itself goes through)."""
    calls: list[tuple[str, tuple[Any, ...]]] = []

    def spy(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def recorded(*args: Any) -> Any:
            calls.append((name, args))
            return original(*args)

        return recorded

    for name in SAMPLERS:
        function = f"llama_sampler_init_{name}"
        monkeypatch.setattr(llama_cpp, function, spy(name, getattr(llama_cpp, function)))
    return calls


def chat(*args: str) -> int:
    return run(["chat", *args])


def called(calls: list[tuple[str, tuple[Any, ...]]]) -> dict[str, tuple[Any, ...]]:
    """The last call of each sampler (one reply was generated)."""
    return {name: args for name, args in calls}


def last_reply(paths: AppPaths):
    with Store.open(paths.history_db) as store:
        conversation = store.list_conversations()[0]
        return conversation, store.messages(conversation.id)[-1]


def test_every_sampling_flag_reaches_the_sampler_over_an_assistant(
    tiny_model: Path, hearth_home: AppPaths, sampler_calls: list, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = {
        "--temperature": "0.7",
        "--top-k": "17",
        "--top-p": "0.83",
        "--min-p": "0.07",
        "--typical-p": "0.9",
        "--repeat-penalty": "1.3",
        "--repeat-last-n": "32",
        "--presence-penalty": "0.4",
        "--frequency-penalty": "0.2",
        "--max-tokens": "5",
        "--seed": "1234",
    }
    given = [item for pair in flags.items() for item in pair]
    argv = [str(tiny_model), "--assistant", "Translator", "--var", "target language=French", "-m", "hello"]
    assert chat(*argv, *given, "--ctx", "512") == 0, capsys.readouterr().err
    assert "Assistant: Translator" in capsys.readouterr().err
    sampler = called(sampler_calls)
    assert sampler["top_k"] == (17,)
    assert sampler["top_p"] == (pytest.approx(0.83), 1) and sampler["min_p"] == (pytest.approx(0.07), 1)
    assert sampler["typical"] == (pytest.approx(0.9), 1) and sampler["temp"] == (pytest.approx(0.7),)
    assert sampler["dist"] == (1234,)
    _n_vocab, last_n, repeat, frequency, presence = sampler["penalties"]
    assert (last_n, repeat, frequency, presence) == (32, pytest.approx(1.3), pytest.approx(0.2), pytest.approx(0.4))
    assert "greedy" not in sampler and "mirostat_v2" not in sampler

    conversation, reply = last_reply(hearth_home)
    expected = SamplingSettings(
        temperature=0.7,
        top_k=17,
        top_p=0.83,
        min_p=0.07,
        typical_p=0.9,
        repeat_penalty=1.3,
        repeat_last_n=32,
        presence_penalty=0.4,
        frequency_penalty=0.2,
        max_tokens=5,
        seed=1234,
    )
    assert SamplingSettings.from_dict(reply.meta["sampling"]) == expected  # stored with the reply
    assert reply.generated_tokens is not None and reply.generated_tokens <= 5
    assert conversation.system_prompt.startswith("You are a translator. Translate the text the user sends into French.")
    assert conversation.meta["assistant"]["name"] == "Translator"
    assert conversation.meta["assistant"]["values"] == {"target language": "French"}
    assert conversation.sampling["preset"] == "precise"  # the assistant's preset, changed by the flags


def test_the_assistants_own_values_apply_where_no_flag_is_given(
    tiny_model: Path, hearth_home: AppPaths, sampler_calls: list
) -> None:
    assert chat(str(tiny_model), "--assistant", "translator", "-m", "hi", "--top-k", "7", "--max-tokens", "3") == 0
    sampler = called(sampler_calls)
    precise = PRESETS["precise"]  # the Translator's sampling (with up to 2,048 new tokens)
    assert sampler["top_k"] == (7,) and sampler["temp"] == (pytest.approx(precise.temperature),)
    assert sampler["top_p"] == (pytest.approx(precise.top_p), 1)
    assert sampler["penalties"][1:3] == (precise.repeat_last_n, pytest.approx(precise.repeat_penalty))
    conversation, reply = last_reply(hearth_home)
    assert "into English." in conversation.system_prompt  # the variable's default
    stored = reply.meta["sampling"]
    assert (stored["top_k"], stored["temperature"], stored["max_tokens"]) == (7, precise.temperature, 3)


def test_mirostat_flags_reach_the_sampler(tiny_model: Path, sampler_calls: list) -> None:
    argv = ["--mirostat", "2", "--mirostat-tau", "4.5", "--mirostat-eta", "0.2", "--temperature", "0.6"]
    assert chat(str(tiny_model), "-m", "hi", "--max-tokens", "3", "--seed", "9", *argv, "--no-history") == 0
    sampler = called(sampler_calls)
    assert sampler["mirostat_v2"] == (9, pytest.approx(4.5), pytest.approx(0.2))
    assert sampler["temp"] == (pytest.approx(0.6),) and "top_k" not in sampler


def test_old_preset_names_are_accepted(tiny_model: Path, hearth_home: AppPaths, sampler_calls: list) -> None:
    assert chat(str(tiny_model), "--preset", "mistral-tutorial", "-m", "hi", "--max-tokens", "3") == 0
    sampler = called(sampler_calls)
    assert sampler["top_k"] == (55,) and sampler["top_p"] == (pytest.approx(0.93), 1)
    assert sampler["temp"] == (pytest.approx(0.9),) and sampler["penalties"][2] == pytest.approx(1.2)
    conversation, reply = last_reply(hearth_home)
    assert conversation.sampling["preset"] == "mistral-7b-instruct-community"
    community = PRESETS["mistral-7b-instruct-community"].to_dict()
    assert {k: v for k, v in reply.meta["sampling"].items() if k not in ("seed", "max_tokens", "logit_bias")} == {
        k: v for k, v in community.items() if k not in ("seed", "max_tokens", "logit_bias")
    }


def hearth(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args], capture_output=True, text=True, timeout=120, env=os.environ.copy()
    )


def test_an_assistants_template_reply_format_and_load_settings_apply(
    tiny_model: Path, hearth_home: AppPaths, tmp_path: Path
) -> None:
    adapter = write_tiny_lora(tmp_path / "tiny-lora.gguf")  # fits the default tiny model
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    AssistantLibrary.default(hearth_home).save(
        Assistant(
            id="",
            name="Checker",
            system_prompt="Answer {{question kind}} questions with JSON.",
            template="llama-2",
            preset="custom",
            sampling=SamplingSettings(max_tokens=100, seed=1),
            reply_format=ReplyFormat(JSON_SCHEMA, schema),
            load=LoadOverrides(n_ctx=512, loras=(LoraAdapter(adapter, 0.5),)),
        )
    )
    result = hearth("chat", str(tiny_model), "--assistant", "Checker", "--var", "question kind=yes/no", "-m", "OK?")
    assert result.returncode == 0, result.stderr
    assert isinstance(json.loads(result.stdout)["ok"], bool)  # the assistant's schema constrained the reply
    assert "n_ctx 512" in result.stderr and "Template: llama-2 (you chose" in result.stderr
    conversation, reply = last_reply(hearth_home)
    assert reply.template == "llama-2" and "[INST]" in (_prompt(hearth_home, reply.id))
    assert "Answer yes/no questions with JSON." in _prompt(hearth_home, reply.id)
    assert reply.meta["load"]["n_ctx"] == 512
    assert reply.meta["load"]["loras"] == [{"path": str(adapter), "scale": 0.5}]
    assert reply.meta["reply_format"] == {"kind": JSON_SCHEMA, "schema": schema}
    assert conversation.meta["load"] == LoadOverrides(n_ctx=512, loras=(LoraAdapter(adapter, 0.5),)).to_dict()

    # Flags given on the command line win: the context, the template, and text instead of JSON.
    again = hearth(
        "chat", str(tiny_model), "--assistant", "checker", "--var", "question kind=yes/no", "-m", "OK?",
        "--ctx", "1024", "--template", "chatml", "--grammar", str(_root_grammar(tmp_path)),
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "yes"
    _, reply = last_reply(hearth_home)
    assert reply.meta["load"]["n_ctx"] == 1024 and reply.meta["load"]["loras"][0]["scale"] == 0.5
    assert reply.template == "chatml"


def _root_grammar(folder: Path) -> Path:
    path = folder / "yes.gbnf"
    path.write_text('root ::= "yes"\n', encoding="utf-8")
    return path


def _prompt(paths: AppPaths, message_id: int) -> str:
    with Store.open(paths.history_db) as store:
        return store.prompt_text(message_id) or ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--var", "a=b"], "hearth: --var fills in an assistant's variables: give --assistant NAME too"),
        (["--assistant", "Nobody"], "hearth: no assistant named 'Nobody'; there are: Translator, Summariser"),
        (["--assistant", "Needs"], "hearth: fill in {{port}}: it has no value and no default"),
        (["--preset", "fast"], "hearth: unknown sampling preset 'fast'; choose from balanced"),
        (["--assistant", "Needs", "--var", "novalue"], "expected NAME=VALUE, e.g. 'target language=French'"),
    ],
)
def test_bad_assistant_input_is_one_line_and_exit_2(
    tiny_model: Path, hearth_home: AppPaths, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    AssistantLibrary.default(hearth_home).save(Assistant(id="", name="Needs", system_prompt="From {{port}}."))
    try:
        code = chat(str(tiny_model), "-m", "hi", *args)
    except SystemExit as exc:  # argparse refuses a malformed flag itself (usage and one line, status 2)
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err
    if hearth_home.history_db.exists():
        with Store.open(hearth_home.history_db) as store:
            assert store.list_conversations() == []  # nothing was saved
