"""The conversation layer on a real model: template, context-overflow trimming in chunks, KV reuse after a cut."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from app.core.conversation import REFILL_FRACTION, ChatRunner
from app.core.engine import GenerationStats, TextChunk
from app.core.errors import ContextOverflowError, GenerationError
from app.core.llama_engine import LlamaCppEngine
from app.core.load_config import LoadConfig
from app.core.messages import ChatMessage
from app.core.sampling import SamplingSettings

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
REPLY = SamplingSettings(temperature=0.0, max_tokens=24, repeat_penalty=1.0)
SYSTEM = ChatMessage("system", "you are kind and brief")
MARKERS = "<|im_end|>\n<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n"  # around a new user message


@pytest.fixture
def runner(make_tiny_model) -> ChatRunner:
    path = make_tiny_model(
        "conversation-chatml.gguf",
        chat_template=CHATML,
        extra_control_tokens=("<|im_start|>", "<|im_end|>"),
        eot_token="<|im_end|>",
    )
    engine = LlamaCppEngine()
    engine.load(path, LoadConfig(n_ctx=512))
    yield ChatRunner(engine)
    engine.unload()


def reply(runner: ChatRunner, history: list[ChatMessage], conversation: object = "c") -> tuple[str, GenerationStats]:
    text, stats = "", None
    for event in runner.stream(history, REPLY, conversation=conversation):
        if isinstance(event, TextChunk):
            text += event.text
        else:
            stats = event
    assert isinstance(stats, GenerationStats) and stats.error is None, stats
    return text, stats


def question(turn: int) -> ChatMessage:
    return ChatMessage("user", f"question {turn:02d} about the world and the water and the light of the day")


def test_a_long_chat_drops_the_oldest_exchanges_in_chunks_and_keeps_reusing_the_cache(runner: ChatRunner):
    history = [SYSTEM]
    cuts = []
    for turn in range(1, 25):
        history.append(question(turn))
        prepared = runner.prepare(history, REPLY, conversation="c")
        assert prepared.messages[0] == SYSTEM and prepared.messages[-1] == history[-1]
        assert prepared.messages[1].role == "user"  # whole exchanges are dropped
        assert prepared.prompt_tokens + prepared.reply_budget <= 512
        answer, stats = reply(runner, history)
        assert stats.dropped_messages == prepared.dropped
        assert stats.prompt_tokens + stats.generated_tokens <= 512
        if cuts and stats.dropped_messages == cuts[-1]:  # same cut as last turn: only the new text is evaluated
            new_text = runner.engine.tokenize(MARKERS + history[-1].content, add_bos=False)
            assert stats.evaluated_tokens <= len(new_text) + 1, (turn, stats)
        cuts.append(stats.dropped_messages)
        history.append(ChatMessage("assistant", answer))
    changes = [b for a, b in itertools.pairwise(cuts) if a != b]
    assert changes, "a 24-turn chat must overflow a 512-token context"
    assert all(later > earlier for earlier, later in itertools.pairwise(cuts) if later != earlier)
    # Chunks, not one exchange per turn: most turns keep the previous cut (and its KV-cache reuse).
    assert len(changes) <= len(cuts) // 3, cuts
    assert all(c % 2 == 0 for c in cuts)


def test_after_a_cut_the_prompt_leaves_room_to_grow(runner: ChatRunner):
    history = [SYSTEM]
    for turn in range(1, 40):
        history.append(question(turn))
        prepared = runner.prepare(history, REPLY, conversation="room")
        history.append(ChatMessage("assistant", "the answer is the water"))
        if prepared.dropped:
            budget = 512 - REPLY.max_tokens
            assert prepared.prompt_tokens <= budget * REFILL_FRACTION + 60  # one exchange of slack
            return
    pytest.fail("the conversation never overflowed")


def test_one_message_larger_than_the_context_is_a_clear_error(runner: ChatRunner):
    history = [SYSTEM, question(1), ChatMessage("assistant", "ok"), ChatMessage("user", "the water " * 400)]
    with pytest.raises(ContextOverflowError, match="the message is too long: .* needs \\d+ tokens"):
        runner.prepare(history, REPLY, conversation="big")
    _, stats = reply(runner, [SYSTEM, question(2)], conversation="small")  # the engine is fine afterwards
    assert stats.generated_tokens > 0


def test_every_size_near_the_limit_either_fits_or_is_refused_cleanly(runner: ChatRunner):
    for words in range(80, 260, 7):  # prompts around n_ctx - max_tokens and beyond, in small steps
        history = [SYSTEM, ChatMessage("user", "water " * words)]
        try:
            _, stats = reply(runner, history, conversation=words)
        except ContextOverflowError:
            continue
        assert stats.prompt_tokens + stats.generated_tokens <= 512


def test_a_shorter_branch_does_not_inherit_an_old_cut(runner: ChatRunner):
    history = [SYSTEM]
    for turn in range(1, 30):
        history.append(question(turn))
        if runner.prepare(history, REPLY, conversation="b").dropped:
            break
        history.append(ChatMessage("assistant", "the answer is the water"))
    else:
        pytest.fail("the conversation never overflowed")
    branch = [*history[:3], ChatMessage("user", "a different second question")]  # edited back at message 3
    assert runner.prepare(branch, REPLY, conversation="b").dropped == 0
    shorter = [*history[:-4], history[-1]]  # two exchanges deleted: everything may fit again
    prepared = runner.prepare(shorter, REPLY, conversation="b")
    assert prepared.dropped == 0 or prepared.prompt_tokens > (512 - 24) * REFILL_FRACTION


def test_cut_points_are_user_messages_even_when_roles_do_not_alternate(runner: ChatRunner):
    history = [SYSTEM]
    for turn in range(1, 30):
        history += [question(turn), ChatMessage("user", "and also this"), ChatMessage("assistant", "the water")]
    history.append(question(99))
    prepared = runner.prepare(history, REPLY, conversation="odd")
    assert prepared.dropped > 0
    assert prepared.messages[1].role == "user" and prepared.messages[1].content.startswith("question")


def test_a_reply_needs_a_loaded_model_and_a_user_message(runner: ChatRunner):
    with pytest.raises(GenerationError, match="end with a user message"):
        runner.prepare([SYSTEM, question(1), ChatMessage("assistant", "hi")], REPLY)
    runner.engine.unload()
    with pytest.raises(GenerationError, match="no model is loaded"):
        runner.prepare([question(1)], REPLY)


def test_the_prompt_keeps_its_prefix_stable_across_turns(runner: ChatRunner, tmp_path: Path):
    """Nothing that changes earlier tokens each turn (dates, counters): turn n's prompt starts turn n-1's."""
    history = [SYSTEM, question(1)]
    first = runner.prepare(history, REPLY, conversation="s").rendered.text
    answer, _ = reply(runner, history, conversation="s")
    history += [ChatMessage("assistant", answer), question(2)]
    second = runner.prepare(history, REPLY, conversation="s").rendered.text
    assert second.startswith(first)
