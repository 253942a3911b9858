"""`hearth chat`, `hearth bench`, `hearth render-prompt` and `hearth templates` run as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.child_signals import default_signals


def hearth(*args: str, stdin: str | None = None, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=timeout,
        env=os.environ.copy(),
    )


def test_one_message_chat_prints_the_reply(tiny_model: Path):
    result = hearth("chat", str(tiny_model), "-m", "hello", "--max-tokens", "8", "--seed", "3", "--ctx", "512")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "Template: chatml" in result.stderr and "Loaded Tiny Llama Test" in result.stderr
    again = hearth("chat", str(tiny_model), "-m", "hello", "--max-tokens", "8", "--seed", "3", "--ctx", "512")
    assert again.stdout == result.stdout  # a fixed seed repeats


def test_json_mode_from_the_command_line(tiny_model: Path, tmp_path: Path):
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}))
    result = hearth(
        "chat",
        str(tiny_model),
        "-m",
        "Is it fine?",
        "--json-schema",
        str(schema),
        "--ctx",
        "512",
        "--max-tokens",
        "100",
        "--seed",
        "1",
    )
    assert result.returncode == 0, result.stderr
    assert isinstance(json.loads(result.stdout)["ok"], bool)


def test_interactive_chat_from_stdin(tiny_model: Path):
    result = hearth(
        "chat",
        str(tiny_model),
        "--ctx",
        "512",
        "--max-tokens",
        "6",
        "--system",
        "Be nice.",
        stdin="hello\n/new\nthe world\n/exit\n",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("> ") == 4  # one prompt per line read: hello, /new, the world, /exit
    assert "Commands:" in result.stderr


@pytest.mark.slow
def test_ctrl_c_stops_the_reply_not_the_program(gemma_path: Path):
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "chat", str(gemma_path), "--ctx", "1024", "--max-tokens", "2000"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
        preexec_fn=default_signals,  # the Ctrl-C below must reach it even when pytest runs in the background
    )
    try:
        process.stdin.write("Tell me a very long story.\n")
        process.stdin.flush()
        process.stdout.read(20)  # the reply is streaming
        started = time.perf_counter()
        process.send_signal(signal.SIGINT)
        process.stdin.write("/exit\n")
        process.stdin.flush()
        _, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        assert "(stopped)" in err
        assert time.perf_counter() - started < 20  # 2000 tokens would take ~30 s
    finally:
        process.kill()


def test_bench_json(tiny_model: Path):
    result = hearth(
        "bench", str(tiny_model), "--prompt", "64", "--gen", "16", "--turns", "3", "--ctx", "1024", "--json"
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert {"prompt_tps", "gen_tps", "ttft_ms"} <= data.keys()
    assert data["gen_tokens"] == 16 and 50 <= data["prompt_tokens"] <= 64
    assert len(data["turns"]) == 3
    for turn in data["turns"]:
        assert {"ttft_ms", "prompt_tokens", "evaluated_tokens"} <= turn.keys()
    later = data["turns"][2]
    assert later["evaluated_tokens"] < later["prompt_tokens"]  # the KV cache was reused


def test_bench_resume_and_spec_json(make_tiny_model):
    model = make_tiny_model("bench-wide.gguf", n_embd=128, n_head=4, n_head_kv=2)
    result = hearth(
        "bench", str(model), "--prompt", "32", "--gen", "24", "--ctx", "2048", "--resume", "600", "--spec", "lookup",
        "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    resume = data["resume"]
    assert {"reeval_ttft_ms", "restored_ttft_ms", "state_bytes"} <= resume.keys()
    assert resume["state_bytes"] > 0 and resume["identical"] and resume["conversation_tokens"] >= 500
    assert resume["restored_evaluated_tokens"] < resume["reeval_evaluated_tokens"] // 4
    tasks = {row["task"]: row for row in data["spec"]}
    assert set(tasks) == {"rewrite", "extract-json", "free-writing"}
    assert all(row["identical"] for row in tasks.values())
    assert all({"plain_tps", "spec_tps", "acceptance"} <= row.keys() for row in tasks.values())


def test_bad_model_and_bad_settings_exit_2(tmp_path: Path, tiny_model: Path):
    for args in (
        ["chat", str(tmp_path / "nope.gguf"), "-m", "x"],
        ["chat", str(tiny_model), "--ctx", "100", "-m", "x"],
        ["bench", str(tiny_model), "--kv", "q8_0"],
    ):
        result = hearth(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr and result.stderr.strip().startswith("hearth: ")


def test_render_prompt_is_exact(tmp_path: Path, gemma_path: Path):
    messages = tmp_path / "m.json"
    messages.write_text(json.dumps([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]))
    result = hearth("render-prompt", "--template", "chatml", "--messages", str(messages))
    assert (
        result.stdout == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    bare = hearth("render-prompt", "--template", "llama-3", "--messages", str(messages), "--no-generation-prompt")
    assert bare.stdout.endswith("Hi<|eot_id|>")
    data = json.loads(hearth("render-prompt", "--model", str(gemma_path), "--messages", str(messages), "--json").stdout)
    assert data == {
        "template": "gemma",
        "source": "family",
        "reason": "no template in the file; architecture gemma3 uses the gemma format",
        "prompt": "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n",
        "stop": ["<end_of_turn>", "<start_of_turn>", "<eos>"],
        "tool_syntax": "hermes",
    }
    jinja = tmp_path / "t.jinja"
    jinja.write_text("{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}")
    assert (
        hearth("render-prompt", "--jinja", str(jinja), "--messages", str(messages)).stdout
        == "[system]Be brief.[user]Hi"
    )


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ("not json", "not valid JSON"),
        ("{}", "non-empty JSON list"),
        ('[{"role": "bot", "content": "x"}]', "role"),
        ('[{"role": "user"}]', "needs string 'content'"),
        ('[{"content": "x"}]', "needs a string 'role'"),
    ],
)
def test_render_prompt_refuses_bad_message_files(tmp_path: Path, content: str, pattern: str):
    messages = tmp_path / "m.json"
    messages.write_text(content)
    result = hearth("render-prompt", "--template", "chatml", "--messages", str(messages))
    assert result.returncode == 2 and pattern in result.stderr and len(result.stderr.splitlines()) == 1


def test_templates_lists_every_family():
    result = hearth("templates", "--json")
    names = [f["name"] for f in json.loads(result.stdout)]
    assert names == [
        "llama-2",
        "mistral-instruct",
        "mistral-v0.3",
        "llama-3",
        "llama-3.1",
        "chatml",
        "qwen2.5",
        "gemma",
        "phi-3",
        "solar",
        "zephyr",
        "alpaca",
        "vicuna",
    ]
