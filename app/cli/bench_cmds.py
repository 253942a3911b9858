"""`hearth bench`: prompt and generation speed, follow-up turns, reopening a conversation from its saved
KV cache, and speculative decoding on copy-heavy and free-writing tasks, as figures or one JSON object."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from app.cli import flags
from app.cli.chat_cmds import _describe
from app.cli.terminal import safe
from app.core.errors import ConfigError
from app.core.messages import ChatMessage
from app.core.sampling import SamplingSettings

if TYPE_CHECKING:  # imported where used: the engine and the chat runner (jinja2) are no part of `--help`
    from app.cli.context import CliContext
    from app.core.conversation import ChatRunner
    from app.core.engine import Engine, GenerationStats
    from app.core.llama_engine import LlamaCppEngine


def register(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser("bench", help="measure prompt and generation speed of a model")
    bench.add_argument("model", type=Path)
    flags.add_load_flags(bench)
    bench.add_argument("--prompt", type=int, default=256, help="prompt tokens (default 256)")
    bench.add_argument("--gen", type=int, default=128, help="generated tokens (default 128)")
    bench.add_argument("--turns", type=int, default=0, help="also run a multi-turn chat of N turns")
    bench.add_argument(
        "--resume",
        type=int,
        metavar="TOKENS",
        help="reopen a conversation of about TOKENS tokens: its saved KV state against evaluating it again",
    )
    bench.add_argument(
        "--spec",
        metavar="lookup|draft:FILE",
        help="speculative decoding on copy-heavy and free-writing tasks, against plain decoding",
    )
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.set_defaults(handler=cmd_bench)


def _load(args: argparse.Namespace, ctx: CliContext, err: TextIO, **changes: Any) -> Engine:
    """Load for a benchmark: straight into an engine of our own, the same load policy as the app."""
    from app.core.isolated_engine import engine_for

    config = flags.load_config(args, ctx, args.model)
    config = replace(config, **changes) if changes else config
    engine = engine_for(config)  # a split over RPC workers runs in a child process
    loaded = engine.load(args.model, config)
    for line in getattr(engine, "placement", ()) or ():
        print(safe(f"  {line}"), file=err)
    print(safe(_describe(loaded)), file=err)  # the model's own name
    return engine


def cmd_bench(args: argparse.Namespace, ctx: CliContext) -> int:
    from app.core.engine import GenerationStats, PromptRequest
    from app.core.llama_engine import LlamaCppEngine

    if args.prompt < 1 or args.gen < 1 or args.turns < 0 or (args.resume is not None and args.resume < 64):
        raise ConfigError("--prompt and --gen must be at least 1, --turns at least 0, --resume at least 64")
    changes: dict[str, Any] = {}
    if args.spec:  # drafts are only checked exactly with flash attention: the whole bench runs with it
        changes["flash_attention"] = True
        if args.spec.startswith("draft:"):
            changes["draft_model"] = args.spec.removeprefix("draft:")
        elif args.spec != "lookup":
            raise ConfigError("--spec must be lookup or draft:FILE")
    engine = _load(args, ctx, sys.stderr, **changes)
    model = engine.model
    assert model is not None
    if not hasattr(engine, "begin") and (args.spec or args.resume or args.turns):
        engine.unload()
        raise ConfigError("--spec, --resume and --turns need the model in this process (not split over RPC)")
    policy = getattr(engine, "spec", None)
    if hasattr(engine, "spec"):
        engine.spec = None  # the speed figures are plain decoding, as llama-bench's
    try:
        info = model.info
        ban_end = tuple((t, -100.0) for t in {info.eos_token_id, info.eot_token_id} if t is not None)
        sampling = SamplingSettings(max_tokens=args.gen, seed=1, logit_bias=ban_end)  # generate exactly --gen
        words = "the quick brown fox jumps over the lazy dog and " * (args.prompt // 4 + 2)
        tokens = engine.tokenize(words)[: args.prompt]
        text = _detokenize_prefix(engine, words, len(tokens))
        if len(engine.tokenize(text)) + args.gen > model.n_ctx:
            raise ConfigError(f"--prompt {args.prompt} + --gen {args.gen} exceed the context ({model.n_ctx})")
        events = list(engine.generate(PromptRequest(text, sampling=sampling)))
        stats = next(e for e in events if isinstance(e, GenerationStats))
        result: dict[str, Any] = {
            "model": str(args.model),
            "threads": model.config.threads,
            "n_ctx": model.n_ctx,
            "backend": model.backend,
            "prompt_tokens": stats.evaluated_tokens,
            "gen_tokens": stats.generated_tokens,
            "prompt_tps": round(stats.prompt_tps, 2),
            "gen_tps": round(stats.gen_tps, 2),
            "ttft_ms": round(stats.ttft_ms, 1),
        }
        if args.turns:
            result["turns"] = _bench_turns(engine, args.turns)
        if args.resume or args.spec:
            if not isinstance(engine, LlamaCppEngine):
                raise ConfigError("--resume and --spec measure an engine in this process; leave out --rpc")
            if args.resume:
                result["resume"] = _bench_resume(engine, args.resume)
            if args.spec:
                if policy is None:
                    raise ConfigError("speculative decoding is off for this load (it needs flash attention)")
                result["spec"] = _bench_spec(engine, args.gen)
    finally:
        engine.unload()
    if args.json:
        ctx.print_json(result)
        return 0
    ctx.print(f"prompt: {result['prompt_tokens']} tokens at {result['prompt_tps']:.1f} tok/s")
    ctx.print(f"generation: {result['gen_tokens']} tokens at {result['gen_tps']:.2f} tok/s")
    ctx.print(f"time to first token: {result['ttft_ms']:.0f} ms  ({result['threads']} threads, {result['backend']})")
    for index, turn in enumerate(result.get("turns", []), 1):
        ctx.print(
            f"turn {index:>2}: prompt {turn['prompt_tokens']:>5} tokens, evaluated {turn['evaluated_tokens']:>4},"
            f" TTFT {turn['ttft_ms']:>7.1f} ms"
        )
    if "resume" in result:
        r = result["resume"]
        ctx.print(
            f"reopening {r['conversation_tokens']} tokens: evaluated again {r['reeval_ttft_ms']:.0f} ms, "
            f"restored {r['restored_ttft_ms']:.0f} ms ({r['speedup']}x; state {r['state_bytes'] / 2**20:.1f} MiB)"
        )
    for row in result.get("spec", []):
        ctx.print(
            f"{row['task']:<13} plain {row['plain_tps']:>7.2f} tok/s, drafts {row['spec_tps']:>7.2f} tok/s "
            f"({row['speedup']:.2f}x, acceptance {row['acceptance']:.0%}, identical: {row['identical']})"
        )
    return 0


def _detokenize_prefix(engine: Engine, text: str, count: int) -> str:
    """The longest word-aligned prefix of text with at most `count` tokens (binary search on words)."""
    words = text.split(" ")
    low, high = 1, len(words)
    while low < high:
        mid = (low + high + 1) // 2
        if len(engine.tokenize(" ".join(words[:mid]))) <= count:
            low = mid
        else:
            high = mid - 1
    return " ".join(words[:low])


def _bench_turns(engine: Engine, turns: int) -> list[dict[str, float]]:
    from app.core.conversation import ChatRunner
    from app.core.engine import TextChunk

    runner = ChatRunner(engine)
    history = [ChatMessage("system", "You are a helpful assistant.")]
    sampling = SamplingSettings(max_tokens=32, seed=7)
    rows = []
    for turn in range(1, turns + 1):
        history.append(ChatMessage("user", f"Question {turn:03d}: tell me one more fact about rivers and towns."))
        reply, stats = "", None
        for event in runner.stream(history, sampling, conversation="bench"):
            if isinstance(event, TextChunk):
                reply += event.text
            else:
                stats = event
        assert stats is not None
        history.append(ChatMessage("assistant", reply))
        rows.append(
            {
                "ttft_ms": round(stats.ttft_ms, 1),
                "prompt_tokens": stats.prompt_tokens,
                "evaluated_tokens": stats.evaluated_tokens,
                "dropped_messages": stats.dropped_messages,
            }
        )
    return rows


# ---- reopening a conversation ---------------------------------------------------------------------------------

FILLER_QUESTION = "Tell me about the history of the river crossing and the market town beside it."
FILLER_ANSWER = (
    "The town grew around a ford where the old road crossed the river. Merchants stopped there to rest their "
    "horses, a market followed, and by the fourteenth century a stone bridge replaced the ford. The bridge "
    "still stands, widened twice, and the market square keeps its medieval shape."
)


def _long_conversation(engine: Engine, target: int) -> list[ChatMessage]:
    """A conversation of about `target` tokens (system prompt, then question/answer pairs)."""
    history = [ChatMessage("system", "You are a helpful local historian.")]
    pair = len(engine.tokenize(FILLER_QUESTION + FILLER_ANSWER, add_bos=False)) + 12
    for turn in range(max(1, target // pair)):
        history += [ChatMessage("user", f"{turn}: {FILLER_QUESTION}"), ChatMessage("assistant", FILLER_ANSWER)]
    return history


def _reply(runner: ChatRunner, history: list[ChatMessage], key: object) -> tuple[str, GenerationStats]:
    from app.core.engine import TextChunk

    sampling = SamplingSettings(temperature=0.0, max_tokens=16, repeat_penalty=1.0)
    text, stats = "", None
    for event in runner.stream(history, sampling, conversation=key):
        if isinstance(event, TextChunk):
            text += event.text
        else:
            stats = event
    assert stats is not None
    return text, stats


def _bench_resume(engine: LlamaCppEngine, target: int) -> dict[str, Any]:
    """Reopen a long conversation twice: once evaluating it again, once restoring its saved KV state."""
    import tempfile

    from app.core.conversation import ChatRunner
    from app.core.kv_state import StateCache

    runner = ChatRunner(engine)
    key = ("conversation", 1)
    history = [*_long_conversation(engine, target), ChatMessage("user", "Which century was the bridge built?")]
    first, _ = _reply(runner, history, key)  # the conversation as it was left
    follow_up = [*history, ChatMessage("assistant", first), ChatMessage("user", "And who paid for it?")]
    with tempfile.TemporaryDirectory(prefix="hearth-bench-") as folder:
        cache = StateCache(Path(folder))
        state_bytes = cache.save(engine, key, "bench")
        engine.forget(key)
        runner.forget(key)
        reeval_text, reeval = _reply(runner, follow_up, key)  # reopened without a saved state
        engine.forget(key)
        runner.forget(key)
        started = time.perf_counter()
        restored_tokens = cache.restore(engine, key, "bench").tokens
        restore_ms = (time.perf_counter() - started) * 1000
        restored_text, restored = _reply(runner, follow_up, key)
    return {
        "conversation_tokens": reeval.prompt_tokens,
        "reeval_ttft_ms": round(reeval.ttft_ms, 1),
        "reeval_evaluated_tokens": reeval.evaluated_tokens,
        "restored_ttft_ms": round(restore_ms + restored.ttft_ms, 1),
        "restore_ms": round(restore_ms, 1),
        "restored_tokens": restored_tokens,
        "restored_evaluated_tokens": restored.evaluated_tokens,
        "state_bytes": state_bytes,
        "speedup": round(reeval.ttft_ms / max(restore_ms + restored.ttft_ms, 1e-3), 1),
        "identical": reeval_text == restored_text,
    }


# ---- speculative decoding ------------------------------------------------------------------------------------

SPEC_SOURCE = (
    "Invoice 2024-117 was issued on 3 March 2024 by Northwind Traders, 12 Harbour Street, Bristol, to Contoso "
    "Ltd for the delivery of forty office chairs and twelve standing desks. The total amount is 8,420.50 euros, "
    "payable within thirty days by bank transfer to the account ending in 4471. Questions about this invoice "
    "go to Maria Lopez at the accounts department of Northwind Traders."
)
SPEC_TASKS: dict[str, str] = {
    "rewrite": "Rewrite the following text exactly as it is, but replace 'forty' with 'fifty':\n\n" + SPEC_SOURCE,
    "extract-json": (
        "Copy the following text, then extract invoice_number, date, seller, buyer and total from it as JSON:\n\n"
        + SPEC_SOURCE
    ),
    "free-writing": "Write a short story about a lighthouse keeper who finds a message in a bottle.",
}


def _bench_spec(engine: LlamaCppEngine, gen: int) -> list[dict[str, Any]]:
    """Each task greedy, without drafts and with them (the real policy, which learns as it goes)."""
    from app.core.conversation import ChatRunner
    from app.core.engine import TextChunk
    from app.core.speculative import SpecPolicy

    runner = ChatRunner(engine)
    sampling = SamplingSettings(temperature=0.0, max_tokens=gen, repeat_penalty=1.0)
    rows = []
    for name, prompt in SPEC_TASKS.items():
        messages = [ChatMessage("user", prompt)]
        results = {}
        for mode in ("plain", "spec"):
            engine.spec = None if mode == "plain" else SpecPolicy()
            engine.forget(None)
            runner.forget(None)
            text, stats = "", None
            for event in runner.stream(messages, sampling):
                if isinstance(event, TextChunk):
                    text += event.text
                else:
                    stats = event
            assert stats is not None
            results[mode] = (text, stats)
        plain, spec = results["plain"][1], results["spec"][1]
        rows.append(
            {
                "task": name,
                "tokens": spec.generated_tokens,
                "plain_tps": round(plain.gen_tps, 2),
                "spec_tps": round(spec.gen_tps, 2),
                "speedup": round(spec.gen_tps / plain.gen_tps, 3) if plain.gen_tps else 0.0,
                "drafted": spec.drafted_tokens,
                "acceptance": round(spec.accepted_tokens / spec.drafted_tokens, 3) if spec.drafted_tokens else 0.0,
                "identical": results["plain"][0] == results["spec"][0],
            }
        )
    engine.spec = SpecPolicy()
    return rows
