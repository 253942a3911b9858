"""The llama.cpp engine on real GGUF files: load, stream, stop, cancel, reuse, overflow, grammars, LoRA."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from app.core.engine import Engine, GenerationStats, PromptRequest, TextChunk
from app.core.errors import (
    ConfigError,
    ContextOverflowError,
    EngineBusyError,
    GenerationError,
    LoadCancelledError,
    ModelFileMissingError,
    ModelLoadError,
    UnsupportedArchitectureError,
)
from app.core.llama_engine import LlamaCppEngine
from app.core.load_config import LoadConfig, LoraAdapter
from app.core.sampling import SamplingSettings, preset
from app.core.structured import json_grammar
from app.core.tiny_model import TinyModelSpec, write_tiny_lora, write_tiny_model

GREEDY = SamplingSettings(temperature=0.0, max_tokens=16, repeat_penalty=1.0)


def run(engine: LlamaCppEngine, text: str, key=None, **kwargs) -> tuple[str, GenerationStats, list[str]]:
    chunks: list[str] = []
    stats = None
    for event in engine.generate(PromptRequest(text, **kwargs), key=key):
        if isinstance(event, TextChunk):
            chunks.append(event.text)
        else:
            stats = event
    assert isinstance(stats, GenerationStats)
    return "".join(chunks), stats, chunks


@pytest.fixture
def engine(tiny_model: Path):
    engine = LlamaCppEngine()
    engine.load(tiny_model, LoadConfig(n_ctx=512))
    yield engine
    engine.unload()


def test_is_an_engine_and_reports_what_it_loaded(engine: LlamaCppEngine, tiny_model: Path):
    assert isinstance(engine, Engine)
    loaded = engine.model
    assert loaded is not None and loaded.path == tiny_model and loaded.n_ctx == 512
    assert loaded.backend == "CPU" and loaded.n_gpu_layers == 0
    assert loaded.info.architecture == "llama"


def test_stream_and_stats(engine: LlamaCppEngine):
    text, stats, chunks = run(engine, "hello the world", sampling=SamplingSettings(max_tokens=24, seed=3))
    assert stats.finish_reason in ("length", "stop")
    assert stats.prompt_tokens == len(engine.tokenize("hello the world"))
    assert stats.evaluated_tokens == stats.prompt_tokens
    assert 1 <= stats.generated_tokens <= 24
    assert stats.ttft_ms > 0 and stats.prompt_tps > 0 and stats.total_ms >= stats.ttft_ms
    assert text == "".join(chunks) and all(chunks)
    assert stats.seed == 3


def test_progress_is_reported_while_loading(tiny_model: Path):
    seen: list[float] = []
    engine = LlamaCppEngine()
    engine.load(tiny_model, LoadConfig(n_ctx=256), progress=seen.append)
    engine.unload()
    assert seen and seen[-1] == pytest.approx(1.0)
    assert seen == sorted(seen)


def test_load_config_seed_is_the_default_for_replies_without_one(tiny_model: Path):
    engine = LlamaCppEngine()
    engine.load(tiny_model, LoadConfig(n_ctx=256, seed=1234))
    unfixed = SamplingSettings(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0, max_tokens=24)
    first, stats, _ = run(engine, "the", sampling=unfixed)
    again, _, _ = run(engine, "the", sampling=unfixed)
    assert stats.seed == 1234 and first == again
    assert run(engine, "the", sampling=replace(unfixed, seed=5))[1].seed == 5  # a reply's own seed wins
    engine.unload()


def test_fixed_seed_repeats_and_fresh_seeds_differ(engine: LlamaCppEngine):
    hot = SamplingSettings(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0, max_tokens=24, seed=42)
    first, _, _ = run(engine, "the", sampling=hot)
    again, _, _ = run(engine, "the", sampling=hot)
    assert first == again
    unfixed = SamplingSettings(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0, max_tokens=24)
    replies = {run(engine, "the", sampling=unfixed)[0] for _ in range(4)}
    assert len(replies) > 1  # llama.cpp's default seed would repeat the reply


def test_follow_up_turn_evaluates_only_new_tokens(engine: LlamaCppEngine):
    first = "you said hello and then the world was"
    _, stats1, _ = run(engine, first, sampling=GREEDY)
    reply, _, _ = run(engine, first, sampling=GREEDY)  # identical prompt: only the last token again
    _, same, _ = run(engine, first, sampling=GREEDY)
    assert same.evaluated_tokens == 1
    follow = first + reply + " and more words here"
    _, stats2, _ = run(engine, follow, sampling=GREEDY)
    new_tokens = stats2.prompt_tokens - stats1.prompt_tokens
    assert stats2.evaluated_tokens <= new_tokens + 2  # tokenization may merge at the join
    assert stats2.evaluated_tokens < stats2.prompt_tokens - stats1.prompt_tokens + 3
    assert stats2.evaluated_tokens < stats2.prompt_tokens


def test_stop_strings_never_leak_even_split_across_tokens(engine: LlamaCppEngine):
    grammar = 'root ::= "The answer is 42.<|END|> and text after the stop"'
    text, stats, chunks = run(
        engine,
        "hello",
        stop=("<|END|>",),
        grammar=grammar,
        sampling=GREEDY.__class__(temperature=0.0, max_tokens=64, repeat_penalty=1.0),
    )
    assert text == "The answer is 42."
    assert stats.finish_reason == "stop"
    assert not any("<" in chunk for chunk in chunks)


def test_held_back_prefix_is_released_when_no_stop_follows(engine: LlamaCppEngine):
    grammar = 'root ::= "value <|EN then more"'
    text, stats, _ = run(
        engine,
        "hello",
        stop=("<|END|>",),
        grammar=grammar,
        sampling=SamplingSettings(temperature=0.0, max_tokens=64, repeat_penalty=1.0),
    )
    assert text == "value <|EN then more" and stats.finish_reason == "stop"  # EOG after the grammar ends


def test_json_mode_output_is_valid_from_a_random_model(engine: LlamaCppEngine):
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "ok": {"type": "boolean"},
            "color": {"enum": ["red", "green", "blue"]},
        },
        "required": ["name", "ok", "color"],
        "additionalProperties": False,
    }
    for seed in range(3):
        text, stats, _ = run(
            engine,
            "Turn this into JSON: Bob, fine, blue",
            grammar=json_grammar(schema),
            sampling=SamplingSettings(temperature=1.0, max_tokens=200, seed=seed),
        )
        data = json.loads(text)
        assert set(data) == {"name", "ok", "color"} and data["color"] in ("red", "green", "blue")
        assert stats.finish_reason == "stop"


def test_invalid_grammar_and_schema_are_clear_errors(engine: LlamaCppEngine):
    with pytest.raises(ConfigError, match="invalid grammar: .*expecting"):
        run(engine, "x", grammar="root ::= (((", sampling=GREEDY)
    assert run(engine, "x", sampling=GREEDY)[1].error is None  # the engine is free again
    with pytest.raises(ConfigError, match="JSON schema"):
        json_grammar("{not json")


def test_cancel_during_generation_takes_effect_within_a_token(engine: LlamaCppEngine):
    chunks = 0
    stats = None
    for event in engine.generate(PromptRequest("the", sampling=SamplingSettings(max_tokens=400, seed=1))):
        if isinstance(event, TextChunk):
            chunks += 1
            if chunks == 3:
                threading.Thread(target=engine.cancel).start()
                time.sleep(0.05)  # the other thread's cancel lands while we are between tokens
        else:
            stats = event
    assert stats.finish_reason == "cancelled"
    assert stats.generated_tokens <= 5
    _, after, _ = run(engine, "the world", sampling=GREEDY)
    assert after.finish_reason in ("length", "stop") and after.generated_tokens > 0


@pytest.mark.slow
def test_cancel_interrupts_a_long_prompt_evaluation(gemma_path: Path):
    engine = LlamaCppEngine()
    engine.load(gemma_path, LoadConfig(n_ctx=4096, n_batch=4096))
    try:
        prompt = "The quick brown fox jumps over the lazy dog. " * 300  # ~3,000 tokens in one batch
        timer = threading.Timer(0.3, engine.cancel)
        started = time.perf_counter()
        timer.start()
        _, stats, _ = run(engine, prompt, sampling=GREEDY)
        elapsed = time.perf_counter() - started
        assert stats.finish_reason == "cancelled" and stats.generated_tokens == 0
        assert stats.evaluated_tokens < stats.prompt_tokens
        assert elapsed < 2.0, elapsed  # the whole prompt takes ~8 s on two cores
        _, after, _ = run(
            engine,
            "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
            sampling=SamplingSettings(temperature=0, max_tokens=4),
        )
        assert after.finish_reason in ("length", "stop") and after.error is None
    finally:
        engine.unload()


def test_prompt_larger_than_context_is_a_clear_error(engine: LlamaCppEngine):
    with pytest.raises(ContextOverflowError, match="context holds 512"):
        run(engine, "the " * 600)
    _, stats, _ = run(engine, "the " * 450, sampling=SamplingSettings(max_tokens=100, seed=1, temperature=1.0))
    assert stats.prompt_tokens + stats.generated_tokens <= 512
    assert stats.finish_reason in ("length", "stop")


def test_unload_refused_mid_generation_and_fine_when_idle(tiny_model: Path):
    engine = LlamaCppEngine()
    engine.load(tiny_model, LoadConfig(n_ctx=256))
    stream = engine.generate(PromptRequest("the", sampling=SamplingSettings(max_tokens=50, seed=1)))
    next(stream)
    assert engine.busy
    with pytest.raises(EngineBusyError, match="stop it first"):
        engine.unload()
    with pytest.raises(EngineBusyError):
        engine.load(tiny_model, LoadConfig(n_ctx=256))
    engine.cancel()
    assert isinstance(list(stream)[-1], GenerationStats)
    engine.unload()
    assert engine.model is None and not engine.busy
    with pytest.raises(GenerationError, match="no model"):
        run(engine, "the")
    engine.unload()  # unloading twice is harmless


def test_load_errors_are_typed_and_the_process_survives(tmp_path: Path):
    engine = LlamaCppEngine()
    with pytest.raises(ModelFileMissingError, match="file not found"):
        engine.load(tmp_path / "missing.gguf", LoadConfig())
    bad = tmp_path / "bad.gguf"
    bad.write_text("<html>this is not a model, it is an error page</html>")
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        engine.load(bad, LoadConfig())
    alien = write_tiny_model(tmp_path / "alien.gguf", TinyModelSpec(architecture="hearthformer"))
    with pytest.raises(UnsupportedArchitectureError, match="does not support the 'hearthformer' architecture"):
        engine.load(alien, LoadConfig(n_ctx=256))
    assert engine.model is None


def test_cancel_during_a_load_aborts_it_and_the_next_load_works(tiny_model: Path):
    engine = LlamaCppEngine()
    with pytest.raises(LoadCancelledError, match="loading cancelled"):
        engine.load(tiny_model, LoadConfig(n_ctx=256), progress=lambda _fraction: engine.cancel())
    assert engine.model is None and not engine.busy
    engine.load(tiny_model, LoadConfig(n_ctx=256))
    assert run(engine, "the", sampling=GREEDY)[1].generated_tokens > 0
    engine.unload()


OOM_CHILD = """
import resource, sys
from pathlib import Path
import psutil
from app.core.errors import ModelOutOfMemoryError
from app.core.llama_engine import LlamaCppEngine
from app.core.native import llama as _llama
from app.core.load_config import LoadConfig
from app.core.tiny_model import TinyModelSpec, write_tiny_model

# 4 layers x (K + V) x 256 x f16 = 4 KiB of KV cache per token: 4 GiB for a 1M-token context.
path = write_tiny_model(Path(sys.argv[1]), TinyModelSpec(n_embd=256, n_head=4, n_head_kv=4, n_layer=4,
                                                         context_length=1 << 20))
engine = LlamaCppEngine()
_llama()
headroom = psutil.Process().memory_info().vms + (1 << 30)  # 1 GiB more address space than in use now
resource.setrlimit(resource.RLIMIT_AS, (headroom, resource.RLIM_INFINITY))
try:
    engine.load(path, LoadConfig(n_ctx=1 << 20))
    print("loaded")
except ModelOutOfMemoryError as exc:
    print("OOM", exc)
engine.load(path, LoadConfig(n_ctx=1024))
print("then loaded", engine.model.n_ctx)
"""


def test_out_of_memory_is_a_typed_error_and_the_process_survives(tmp_path: Path):
    """A real allocation failure: a child process whose address space is capped asks for a 4 GiB KV cache."""
    result = subprocess.run(
        [sys.executable, "-c", OOM_CHILD, str(tmp_path / "kv-heavy.gguf")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("OOM kv-heavy.gguf: out of memory while allocating the context (n_ctx 1048576)")
    assert "use a smaller context" in lines[0] and "GPU" not in lines[0]  # CPU-only: no GPU advice
    assert lines[1] == "then loaded 1024"


@pytest.mark.parametrize(
    ("config", "pattern"),
    [
        (LoadConfig(n_ctx=100), "multiple of 256; use 256 or 512"),
        (LoadConfig(n_ctx=1000), "use 768 or 1024"),
        (LoadConfig(kv_cache_type="q8_0"), "needs flash attention"),
        (LoadConfig(kv_cache_type="q5"), "KV cache type must be one of"),
        (LoadConfig(n_gpu_layers=-5), "GPU layers"),
        (LoadConfig(n_gpu_layers=40), "at most 3"),
        (LoadConfig(n_batch=0), "batch size"),
    ],
)
def test_invalid_load_configs_are_refused_before_llama_cpp(tiny_model: Path, config: LoadConfig, pattern: str):
    with pytest.raises(ConfigError, match=pattern):
        LlamaCppEngine().load(tiny_model, config)


def test_quantized_kv_cache_with_flash_attention_loads(tiny_model: Path, make_tiny_model):
    wide = make_tiny_model("tiny-head32.gguf", n_embd=128, n_head=4, n_head_kv=2)
    engine = LlamaCppEngine()
    for kv in ("q8_0", "q4_0"):
        engine.load(wide, LoadConfig(n_ctx=256, flash_attention=True, kv_cache_type=kv))
        _, stats, _ = run(engine, "hello", sampling=GREEDY)
        assert stats.error is None and stats.generated_tokens > 0
    engine.unload()
    with pytest.raises(ConfigError, match="16-wide attention heads"):  # caught before llama.cpp refuses it
        engine.load(tiny_model, LoadConfig(n_ctx=256, flash_attention=True, kv_cache_type="q8_0"))


def test_lora_adapter_measurably_changes_the_output(tmp_path: Path, tiny_model: Path):
    lora = write_tiny_lora(tmp_path / "adapter.gguf")
    engine = LlamaCppEngine()
    outputs = {}
    for scale in (None, 1.0, 0.0):
        loras = () if scale is None else (LoraAdapter(lora, scale),)
        engine.load(tiny_model, LoadConfig(n_ctx=256, loras=loras))
        outputs[scale] = run(engine, "hello the", sampling=GREEDY)[0]
    engine.unload()
    assert outputs[1.0] != outputs[None]
    assert outputs[0.0] == outputs[None]
    with pytest.raises(ConfigError, match="not a LoRA adapter"):
        LoadConfig(loras=(LoraAdapter(tiny_model),)).validate()
    assert LoraAdapter.parse(f"{lora}:0.5") == LoraAdapter(lora, 0.5)
    assert LoraAdapter.parse(str(lora)) == LoraAdapter(lora, 1.0)


def test_no_double_bos_when_the_template_writes_it(engine: LlamaCppEngine):
    with_bos = engine.tokenize("<s>hello")
    plain = engine.tokenize("hello")
    assert with_bos[0] == plain[0] == 1
    assert with_bos.count(1) == 1
    assert engine.tokenize("hello", add_bos=False)[0] != 1


def test_llama_log_goes_to_the_log_not_the_terminal(tiny_model: Path, capfd, caplog):
    caplog.set_level(logging.DEBUG, logger="hearth.llama")
    engine = LlamaCppEngine()
    engine.load(tiny_model, LoadConfig(n_ctx=256))
    engine.unload()
    captured = capfd.readouterr()
    assert "llama" not in captured.err and "llama" not in captured.out
    assert any(r.name == "hearth.llama" for r in caplog.records)


def test_presets_and_sampling_validation():
    mistral = preset("mistral-tutorial")
    assert (
        mistral.temperature,
        mistral.top_k,
        mistral.top_p,
        mistral.repeat_penalty,
        mistral.max_tokens,
    ) == (0.9, 55, 0.93, 1.2, 2048)
    with pytest.raises(ConfigError, match="unknown sampling preset"):
        preset("wild")
    for bad, pattern in [
        ({"temperature": -1}, "temperature must be between 0 and 5"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": 2.5}, "whole number"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": float("nan")}, "temperature"),
        ({"seed": 2**32}, "seed"),
    ]:
        with pytest.raises(ConfigError, match=pattern):
            SamplingSettings(**bad).validate()
    stored = SamplingSettings(temperature=0.3, seed=7).to_dict() | {"from_the_future": 1}
    assert SamplingSettings.from_dict(stored) == SamplingSettings(temperature=0.3, seed=7)


@pytest.mark.slow
def test_memory_returns_after_load_unload_cycles(gemma_path: Path):
    """10 load/generate/unload cycles in a fresh process (this one's RSS moves with every other test)."""
    code = f"""
import psutil
from pathlib import Path
from app.core.engine import PromptRequest
from app.core.llama_engine import LlamaCppEngine
from app.core.load_config import LoadConfig
from app.core.sampling import SamplingSettings
engine, process, samples = LlamaCppEngine(), psutil.Process(), []
for _ in range(10):
    engine.load(Path({str(gemma_path)!r}), LoadConfig(n_ctx=1024))
    list(engine.generate(PromptRequest("<start_of_turn>user\\nHi<end_of_turn>\\n",
                                       sampling=SamplingSettings(max_tokens=8, seed=1))))
    engine.unload()
    samples.append(process.memory_info().rss)
print(samples)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    samples = json.loads(result.stdout)
    assert samples[-1] <= samples[0] * 1.05, [s // 2**20 for s in samples]


def test_next_turn_reuses_the_models_own_reply_tokens(make_tiny_model):
    """A random model's reply re-tokenizes differently; the next turn must still evaluate only new text."""
    from app.core.conversation import ChatRunner
    from app.core.messages import ChatMessage

    chatml = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    path = make_tiny_model(
        "reuse-chatml.gguf", chat_template=chatml, extra_control_tokens=("<|im_start|>", "<|im_end|>")
    )
    engine = LlamaCppEngine()
    engine.load(path, LoadConfig(n_ctx=2048))
    runner = ChatRunner(engine)
    history = [ChatMessage("system", "be kind")]
    sampling = SamplingSettings(temperature=1.0, max_tokens=30, seed=4)
    for turn in range(4):
        question = f"question number {turn} about the world"
        history.append(ChatMessage("user", question))
        reply, stats = run_chat(runner, history, sampling)
        history.append(ChatMessage("assistant", reply))
        if turn:
            new_text_tokens = len(engine.tokenize(question, add_bos=False))
            assert stats.evaluated_tokens <= new_text_tokens + 20, (turn, stats)  # + the turn markers
    engine.unload()


def test_a_stop_string_spelled_out_is_never_reused_as_the_turn_marker(make_tiny_model):
    """The model writes "<|im_end|>" as plain text pieces: the tokens that began the stop string are not
    shown, so the next turn must not reuse them in place of the template's real <|im_end|> token."""
    path = make_tiny_model(
        "no-space-prefix-chatml.gguf",
        extra_control_tokens=("<|im_start|>", "<|im_end|>"),
        extra_metadata={"tokenizer.ggml.add_space_prefix": False},  # like gemma and every BPE vocabulary
    )
    engine = LlamaCppEngine()
    engine.load(path, LoadConfig(n_ctx=512))
    first = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    spelled = 'root ::= "Hello<|im_end|> and more"'
    reply, stats, _ = run(engine, first, stop=("<|im_end|>",), grammar=spelled, sampling=GREEDY)
    assert reply == "Hello" and stats.finish_reason == "stop"
    second = first + reply + "<|im_end|>\n<|im_start|>user\nagain<|im_end|>\n<|im_start|>assistant\n"
    tokens = engine.prompt_tokens(second)
    (marker,) = engine.tokenize("<|im_end|>", add_bos=False)
    assert tokens.count(marker) == 3  # the reply's end, the question's end ... and the first turn's
    assert tokens[: stats.prompt_tokens] == engine.tokenize(first)  # the first prompt is still reused
    _, follow, _ = run(engine, second, sampling=GREEDY)
    assert follow.evaluated_tokens < follow.prompt_tokens
    engine.unload()


def run_chat(runner, history, sampling):
    reply, stats = "", None
    for event in runner.stream(history, sampling):
        if isinstance(event, TextChunk):
            reply += event.text
        else:
            stats = event
    return reply, stats


# ---- several sequences at once ------------------------------------------------------------------------------


def drive(engine: LlamaCppEngine, runs: list) -> dict[int, tuple[str, GenerationStats]]:
    """Step the runs together until all are done; text and stats per run index."""
    texts = {i: "" for i in range(len(runs))}
    stats: dict[int, GenerationStats] = {}
    while not all(r.done for r in runs):
        engine.step(runs)
        for i, r in enumerate(runs):
            for event in r.take_events():
                if isinstance(event, TextChunk):
                    texts[i] += event.text
                else:
                    stats[i] = event
    for i, r in enumerate(runs):
        for event in r.take_events():
            if isinstance(event, GenerationStats):
                stats[i] = event
    return {i: (texts[i], stats[i]) for i in texts}


def test_parallel_runs_give_each_its_own_text_identical_to_running_alone(tiny_model: Path):
    engine = LlamaCppEngine()
    engine.load(tiny_model, LoadConfig(n_ctx=1024, n_parallel=4))
    prompts = ["alpha beta gamma", "the quick brown fox", "one two three four five", "hello"]
    sampling = replace(GREEDY, max_tokens=20)
    alone = []
    for prompt in prompts:
        alone.append(run(engine, prompt, sampling=sampling)[0])
        engine.forget(None)
    runs = [engine.begin(PromptRequest(p, sampling=sampling), key=f"client-{i}") for i, p in enumerate(prompts)]
    assert engine.free_slots == 0
    with pytest.raises(EngineBusyError):
        engine.begin(PromptRequest("one more", sampling=sampling))
    together = drive(engine, runs)
    assert [together[i][0] for i in range(4)] == alone
    assert all(together[i][1].finish_reason == "length" for i in range(4))
    assert engine.free_slots == 4
    engine.unload()


def test_cancelling_one_run_leaves_the_others_going(tiny_model: Path):
    engine = LlamaCppEngine()
    engine.load(tiny_model, LoadConfig(n_ctx=1024, n_parallel=2))
    sampling = replace(GREEDY, max_tokens=40)
    a = engine.begin(PromptRequest("first client", sampling=sampling), key="a")
    b = engine.begin(PromptRequest("second client", sampling=sampling), key="b")
    for _ in range(5):
        engine.step([a, b])
    a.cancel.set()
    result = drive(engine, [a, b])
    assert result[0][1].finish_reason == "cancelled" and result[0][1].generated_tokens <= 6
    assert result[1][1].finish_reason == "length" and result[1][1].generated_tokens == 40
    engine.unload()


def test_a_conversation_keeps_its_sequence_and_cache_while_another_runs(tiny_model: Path):
    engine = LlamaCppEngine()
    engine.load(tiny_model, LoadConfig(n_ctx=1024, n_parallel=2))
    sampling = replace(GREEDY, max_tokens=8)
    first = "a long shared system prompt about rivers and towns " * 4
    text, stats, _ = run(engine, first, sampling=sampling, key="chat")
    run(engine, "something else entirely", sampling=sampling, key="other")
    _, again, _ = run(engine, first + text + " and more", sampling=sampling, key="chat")
    assert again.evaluated_tokens < again.prompt_tokens // 3  # only the new words were evaluated
    assert engine.context_used_by("chat") > stats.prompt_tokens
    engine.unload()


def test_a_long_prompt_is_evaluated_in_chunks_between_other_streams(tiny_model: Path):
    engine = LlamaCppEngine()
    engine.load(tiny_model, LoadConfig(n_ctx=2048, n_parallel=2, n_batch=512))
    streaming = engine.begin(PromptRequest("stream", sampling=replace(GREEDY, max_tokens=200)), key="s")
    engine.step([streaming])  # its prompt is in; it streams from now on
    long_prompt = " ".join(f"w{i}" for i in range(250))
    late = engine.begin(PromptRequest(long_prompt, sampling=replace(GREEDY, max_tokens=4)), key="l")
    tokens_per_step = []
    while late.state == "prompt":
        before, sampled = late.next_prompt, streaming.generated
        engine.step([streaming, late])
        tokens_per_step.append(late.next_prompt - before)
        assert streaming.generated == sampled + 1  # the stream got its token in every step
    assert len(tokens_per_step) > 1 and max(tokens_per_step) < 512
    engine.release(streaming)
    engine.release(late)
    engine.unload()


def test_closing_a_stream_early_frees_its_sequence(engine: LlamaCppEngine):
    stream = engine.generate(PromptRequest("tell me more", sampling=replace(GREEDY, max_tokens=200)))
    next(stream)
    stream.close()  # the caller stopped reading (a tool loop's Stop, a dropped client)
    assert not engine.busy and engine.free_slots == engine.model.config.n_parallel
    text, stats, _ = run(engine, "again", sampling=GREEDY)
    assert stats.finish_reason == "length" and text
