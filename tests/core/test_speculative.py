"""Speculative decoding on real GGUF files: drafts from the conversation (prompt lookup) never change what the
model writes, greedy or sampled; the policy drafts only where it pays and switches itself off where not."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.engine import GenerationStats, PromptRequest, TextChunk
from app.core.llama_engine import LlamaCppEngine
from app.core.load_config import LoadConfig
from app.core.sampling import SamplingSettings
from app.core.speculative import LookupDrafter, SpecPolicy

GREEDY = SamplingSettings(temperature=0.0, max_tokens=80, repeat_penalty=1.0, logit_bias=((2, -100.0),))
REPETITIVE = "one two three four five six seven eight nine ten " * 6


def generate(engine: LlamaCppEngine, text: str, sampling: SamplingSettings, stop=()) -> tuple[str, GenerationStats]:
    parts, stats = [], None
    for event in engine.generate(PromptRequest(text, stop=stop, sampling=sampling)):
        if isinstance(event, TextChunk):
            parts.append(event.text)
        else:
            stats = event
    assert stats is not None
    return "".join(parts), stats


def cheap_batches() -> SpecPolicy:
    """A policy that has measured batches as nearly free (as on a GPU)."""
    return SpecPolicy(step_ms={1: 10.0, 2: 10.5, 4: 11.0, 8: 12.0, 13: 13.0})


class AlwaysDraft(SpecPolicy):
    """Checks every draft the lookup finds, whatever this machine's timings say: for testing what drafts do
    to the output (on this CPU the real policy rightly drafts little for a tiny model)."""

    def best_length(self, key: object, available: int) -> int:
        return available


def engine_for(path: Path, speculative: str, policy: SpecPolicy | None = None) -> LlamaCppEngine:
    """Flash attention on: the only way llama.cpp checks drafts with exactly the logits of single steps."""
    engine = LlamaCppEngine()
    engine.load(path, LoadConfig(n_ctx=2048, n_threads=1, speculative=speculative, flash_attention=True))
    if policy is not None:
        engine.spec = policy
    return engine


# ---- the drafter and the policy ----------------------------------------------------------------------------


def test_lookup_proposes_what_followed_the_latest_occurrence():
    drafter = LookupDrafter(ngram_max=3, ngram_min=2)
    tokens = [1, 2, 3, 4, 5, 6, 7, 8, 9, 5, 6]
    assert drafter.propose(tokens, 7, 5) == [8, 9, 5, 6, 7]  # ...5 6 7 was followed by 8 9 5 6 (7)
    assert drafter.propose([10, 11, 12], 13, 4) == []  # nothing repeats: no drafts
    drafter.rewind(2)
    assert drafter.propose([1, 2, 3, 1, 2], 3, 4) == [1, 2, 3]


def test_policy_drafts_only_where_it_pays():
    linear = SpecPolicy(step_ms={1: 10.0, 5: 50.0, 9: 90.0})  # a batch costs as much as its tokens (CPU, 1.1B)
    assert linear.best_length("chat", 8) == 0
    cheap = cheap_batches()
    assert cheap.best_length("chat", 8) == 2  # at most two drafts a step: exactly the model's own output
    for _ in range(10):  # drafts that are never accepted: it stops drafting for that conversation
        cheap.observe_drafts("chat", 8, 0)
    assert cheap.best_length("chat", 8) == 0 and "chat" in cheap.switched_off
    assert cheap.best_length("other chat", 8) == 2  # other conversations keep their chance
    assert SpecPolicy().best_length("new", 8) == 0  # nothing measured yet: a plain step first


# ---- the engine ------------------------------------------------------------------------------------------


def test_greedy_output_is_identical_with_and_without_drafts(tiny_model: Path):
    plain = engine_for(tiny_model, "off")
    expected, _ = generate(plain, REPETITIVE, GREEDY)
    plain.unload()
    spec = engine_for(tiny_model, "auto", AlwaysDraft())
    text, stats = generate(spec, REPETITIVE, GREEDY)
    spec.unload()
    assert text == expected
    assert stats.drafted_tokens > 0 and stats.generated_tokens == 80


def test_sampled_output_keeps_the_models_choices(tiny_model: Path):
    """Every emitted token is the model's own sample at its place, so with the same seed the text is the same
    as without drafts (the strongest form of keeping the model's distribution)."""
    plain = engine_for(tiny_model, "off")
    spec = engine_for(tiny_model, "auto", AlwaysDraft())
    drafted = 0
    for seed in range(1, 7):
        sampling = SamplingSettings(temperature=0.7, top_k=8, max_tokens=60, seed=seed, logit_bias=((2, -100.0),))
        expected, _ = generate(plain, REPETITIVE, sampling)
        text, stats = generate(spec, REPETITIVE, sampling)
        assert text == expected, seed
        drafted += stats.drafted_tokens
    plain.unload()
    spec.unload()
    assert drafted > 0


@pytest.mark.slow
def test_a_real_model_copying_its_prompt_accepts_most_drafts_and_writes_the_same(gemma_path: Path):
    text = (
        "The committee met on Tuesday to review the budget for the new library. After a long discussion, the "
        "members agreed to increase funding for children's books by ten percent, to extend opening hours on "
        "weekends, and to hire two additional librarians before the end of the year."
    )
    prompt = (
        "<start_of_turn>user\nRewrite the following text exactly, but replace Tuesday with Friday:\n\n"
        f"{text}<end_of_turn>\n<start_of_turn>model\n"
    )
    sampling = SamplingSettings(temperature=0.0, max_tokens=100, repeat_penalty=1.0)
    plain = engine_for(gemma_path, "off")
    expected, _ = generate(plain, prompt, sampling, stop=("<end_of_turn>",))
    plain.unload()
    spec = engine_for(gemma_path, "auto", AlwaysDraft())
    written, stats = generate(spec, prompt, sampling, stop=("<end_of_turn>",))
    spec.unload()
    assert written == expected
    assert stats.drafted_tokens > 20 and stats.accepted_tokens / stats.drafted_tokens > 0.7


def test_without_flash_attention_nothing_is_drafted(tiny_model: Path):
    engine = LlamaCppEngine()
    engine.load(tiny_model, LoadConfig(n_ctx=2048, n_threads=1, flash_attention=False))
    assert engine.spec is None  # checking drafts would change the output there
    _, stats = generate(engine, REPETITIVE, GREEDY)
    assert stats.drafted_tokens == 0
    engine.unload()


def test_drafts_are_checked_only_for_a_lone_stream(tiny_model: Path):
    engine = engine_for(tiny_model, "auto", AlwaysDraft())
    runs = [engine.begin(PromptRequest(REPETITIVE + str(i), sampling=GREEDY), key=i) for i in range(2)]
    while not any(r.done for r in runs):
        engine.step(runs)
        assert all(r.drafted == 0 for r in runs)  # two streams share each decode: no drafts
    while not all(r.done for r in runs):
        engine.step(runs)
    assert any(r.drafted > 0 for r in runs)  # the one left alone drafts again
    engine.unload()


# ---- a draft model ---------------------------------------------------------------------------------------------


def test_a_draft_model_with_the_same_vocabulary_drafts_and_changes_nothing(make_tiny_model):
    from app.core.draft_models import find_draft_model, vocab_fingerprint

    target = make_tiny_model("spec-target.gguf", n_embd=128, n_head=4, n_head_kv=2, n_layer=4, seed=21)
    draft = make_tiny_model("spec-draft.gguf", n_embd=64, n_head=2, n_head_kv=1, n_layer=1, seed=21)
    other = make_tiny_model("spec-other-vocab.gguf", filler_tokens=50, seed=3)
    assert vocab_fingerprint(target) == vocab_fingerprint(draft) != vocab_fingerprint(other)
    assert find_draft_model(target, [other, draft, target]) == draft
    plain = engine_for(target, "off")
    expected, _ = generate(plain, REPETITIVE, GREEDY)
    plain.unload()
    engine = LlamaCppEngine()
    engine.load(target, LoadConfig(n_ctx=2048, n_threads=1, flash_attention=True, draft_model=str(draft)))
    engine.spec = AlwaysDraft()
    text, stats = generate(engine, REPETITIVE, GREEDY)
    engine.unload()
    assert text == expected and stats.drafted_tokens > 0


def test_a_draft_model_that_tokenizes_differently_is_refused(make_tiny_model):
    from app.core.errors import ConfigError

    target = make_tiny_model("spec-target2.gguf", n_embd=128, n_head=4, n_head_kv=2)
    other = make_tiny_model("spec-other-vocab.gguf", filler_tokens=50, seed=3)
    engine = LlamaCppEngine()
    with pytest.raises(ConfigError, match="tokenizes differently"):
        engine.load(target, LoadConfig(n_ctx=512, flash_attention=True, draft_model=str(other)))
    assert engine.model is None
