"""Conversations that reopen instantly: KV states saved and restored through the engine host, on real GGUF
files and a real cache folder; every invalidation case falls back to a full evaluation with the same answer."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from app.core.host import EngineHost, LoadDone, wait_for_text
from app.core.kv_state import StateCache, conversation_name
from app.core.load_config import LoadConfig, LoraAdapter
from app.core.messages import ChatMessage
from app.core.reply import ReplyRequest
from app.core.sampling import SamplingSettings
from app.core.store import Store
from app.core.tiny_model import TinyModelSpec, write_tiny_lora

GREEDY = SamplingSettings(temperature=0.0, max_tokens=24, repeat_penalty=1.0, logit_bias=((2, -100.0),))
HISTORY = [
    ChatMessage("system", "You answer questions about rivers and towns."),
    ChatMessage("user", "Tell me about the river that runs through the old town, " * 6),
    ChatMessage("assistant", "The river runs north past the mill and the market square, " * 6),
]
NEXT = ChatMessage("user", "And what about the bridge?")


def host_for(tmp_path: Path, cache: StateCache | None) -> EngineHost:
    return EngineHost(store_path=tmp_path / "history.sqlite3", state_cache=cache)


def conversation(tmp_path: Path) -> int:
    with Store.open(tmp_path / "history.sqlite3") as store:
        return store.create_conversation().id


def load(host: EngineHost, path: Path, **config: object) -> None:
    settings: dict[str, object] = {"n_ctx": 2048, "n_threads": 1, **config}
    done = host.client().load(path, LoadConfig(**settings)).wait(60)  # type: ignore[arg-type]
    assert isinstance(done, LoadDone) and done.error is None, done


def ask(host: EngineHost, messages: list[ChatMessage], conversation_id: int | None):
    request = ReplyRequest(tuple(messages), GREEDY, conversation_id=conversation_id)
    return wait_for_text(host.client().reply(request), timeout=60)


def warm(tmp_path: Path, model: Path, cache: StateCache, conv: int, **config: object) -> None:
    """A conversation evaluated once (its first reply), then left: its state is saved."""
    host = host_for(tmp_path, cache)
    load(host, model, **config)
    ask(host, HISTORY[:2], conv)
    saved = host.client().save_conversation(conv).wait(60)
    assert saved.error is None and saved.result > 0
    assert host.shutdown(30)


def test_restored_state_evaluates_only_the_new_turn_and_answers_the_same(tmp_path: Path, tiny_model: Path):
    cache = StateCache(tmp_path / "states")
    conv = conversation(tmp_path)
    warm(tmp_path, tiny_model, cache, conv)
    assert len(cache.files()) == 1
    full_host = host_for(tmp_path, None)  # no cache: the whole history is evaluated
    load(full_host, tiny_model)
    full_text, full = ask(full_host, [*HISTORY, NEXT], conv)
    full_host.shutdown(30)
    host = host_for(tmp_path, cache)
    load(host, tiny_model)
    text, restored = ask(host, [*HISTORY, NEXT], conv)
    host.shutdown(30)
    assert text == full_text
    assert full.stats.evaluated_tokens == full.stats.prompt_tokens
    assert restored.stats.evaluated_tokens < full.stats.prompt_tokens // 2  # the saved part came back


def test_restore_in_a_new_process_gives_the_same_next_reply(tmp_path: Path, tiny_model: Path):
    cache_dir = tmp_path / "states"
    conv = conversation(tmp_path)
    host = host_for(tmp_path, StateCache(cache_dir))
    load(host, tiny_model)
    ask(host, HISTORY[:2], conv)
    assert host.shutdown(30)  # quitting saves the conversation's state
    assert len(StateCache(cache_dir).files()) == 1
    script = textwrap.dedent(
        f"""
        import json, sys
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from tests.core.test_kv_state import host_for, load, ask, HISTORY, NEXT
        from app.core.kv_state import StateCache
        tmp = Path({str(tmp_path)!r})
        host = host_for(tmp, StateCache(tmp / "states"))
        load(host, Path({str(tiny_model)!r}))
        text, done = ask(host, [*HISTORY, NEXT], {conv})
        host.shutdown(30)
        stats = done.stats
        print(json.dumps({{"text": text, "evaluated": stats.evaluated_tokens, "prompt": stats.prompt_tokens}}))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    restarted = json.loads(result.stdout.strip().splitlines()[-1])
    full_host = host_for(tmp_path, None)
    load(full_host, tiny_model)
    full_text, _ = ask(full_host, [*HISTORY, NEXT], None)
    full_host.shutdown(30)
    assert restarted["text"] == full_text
    assert restarted["evaluated"] < restarted["prompt"] // 2


@pytest.mark.parametrize(
    "change",
    ["other model file", "context size", "KV cache type", "LoRA adapter", "edited history"],
)
def test_every_invalidation_falls_back_to_a_full_evaluation(tmp_path: Path, tiny_model: Path, make_tiny_model, change):
    cache = StateCache(tmp_path / "states")
    conv = conversation(tmp_path)
    model = tmp_path / "model.gguf"  # 32-wide heads: a quantized KV cache needs them
    model.write_bytes(make_tiny_model("kv-wide.gguf", n_embd=128, n_head=4, n_head_kv=2).read_bytes())
    warm(tmp_path, model, cache, conv)
    config: dict[str, object] = {}
    history = [*HISTORY, NEXT]
    if change == "other model file":
        other = make_tiny_model("kv-other.gguf", n_embd=128, n_head=4, n_head_kv=2, seed=11)
        model.write_bytes(other.read_bytes())  # same name, another file
    elif change == "context size":
        config = {"n_ctx": 1024}
    elif change == "KV cache type":
        config = {"kv_cache_type": "q8_0", "flash_attention": True}
    elif change == "LoRA adapter":
        spec = TinyModelSpec(n_embd=128, n_head=4, n_head_kv=2)
        lora = write_tiny_lora(tmp_path / "adapter.gguf", spec)
        config = {"loras": (LoraAdapter(lora, 0.5),)}
    else:
        history[1] = ChatMessage("user", "A different first question entirely, " * 6)
    host = host_for(tmp_path, cache)
    load(host, model, **config)
    text, done = ask(host, history, conv)
    host.shutdown(30)
    reference = host_for(tmp_path, None)
    load(reference, model, **config)
    expected, _ = ask(reference, history, None)
    reference.shutdown(30)
    assert text == expected  # never a wrong answer
    assert done.stats.evaluated_tokens > done.stats.prompt_tokens * 0.6  # (almost) all evaluated again


def test_a_damaged_state_file_is_removed_and_logged(tmp_path: Path, tiny_model: Path, caplog):
    cache = StateCache(tmp_path / "states")
    conv = conversation(tmp_path)
    warm(tmp_path, tiny_model, cache, conv)
    (path,) = cache.files()
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # one flipped byte in llama.cpp's data
    path.write_bytes(bytes(data))
    host = host_for(tmp_path, cache)
    load(host, tiny_model)
    with caplog.at_level(logging.WARNING, logger="hearth.engine"):
        text, done = ask(host, [*HISTORY, NEXT], conv)
    assert "damaged" in caplog.text and not path.exists()
    host.shutdown(30)  # (which saves a good state again)
    assert done.stats.evaluated_tokens == done.stats.prompt_tokens and text


def test_the_cache_stays_under_its_cap(tmp_path: Path, tiny_model: Path):
    cache = StateCache(tmp_path / "states")
    convs = [conversation(tmp_path) for _ in range(3)]
    host = host_for(tmp_path, cache)
    load(host, tiny_model)
    sizes = []
    for conv in convs:
        ask(host, HISTORY[:2], conv)
        sizes.append(host.client().save_conversation(conv).wait(60).result)
    assert all(size > 0 for size in sizes) and len(cache.files()) == 3
    cache.cap_bytes = sizes[0] * 2 + sizes[0] // 2  # room for two
    ask(host, HISTORY[:2], convs[0])
    host.client().save_conversation(convs[0]).wait(60)  # the newest save: the oldest other state goes
    host.shutdown(30)
    names = {p.name.split("-")[1] for p in cache.files()}
    assert cache.total_bytes() <= cache.cap_bytes and len(names) == 2
    assert str(convs[0]) in names and str(convs[1]) not in names
    assert conversation_name(convs[0]) == f"conversation-{convs[0]}"
