"""`hearth chat` (a terminal chat, or one message with -m) and `hearth bench` (speed figures)."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from app.cli.context import CliContext
from app.cli.terminal import for_stream, warn
from app.core.conversation import ChatRunner
from app.core.engine import GenerationStats, TextChunk
from app.core.errors import ConfigError, HearthError
from app.core.llama_engine import LlamaCppEngine
from app.core.load_config import LoadConfig, LoraAdapter
from app.core.messages import ChatMessage
from app.core.sampling import PRESETS, SamplingSettings, preset
from app.core.store import ReplyStats, ReplyWriter
from app.core.structured import json_grammar
from app.core.templates import choose_template

HELP = "Commands: /new (start over), /exit (or Ctrl-D). Ctrl-C stops a reply."


def register(subparsers: argparse._SubParsersAction) -> None:
    chat = subparsers.add_parser("chat", help="chat with a model in the terminal (or send one message with -m)")
    chat.add_argument("model", type=Path)
    _load_args(chat)
    chat.add_argument("--template", help="override the chat template (a family name or 'embedded')")
    chat.add_argument("--preset", default="balanced", choices=sorted(PRESETS), help="sampling preset")
    chat.add_argument("--temperature", type=float, help="override the preset's temperature")
    chat.add_argument("--seed", type=int, help="fixed seed (default: fresh per reply)")
    chat.add_argument("--system", "-s", default="", help="system prompt")
    chat.add_argument("-m", "--message", help="send this one message, print the reply and exit")
    chat.add_argument("--max-tokens", type=int, help="longest reply in tokens")
    structured = chat.add_mutually_exclusive_group()
    structured.add_argument("--json", action="store_true", help="constrain the reply to valid JSON")
    structured.add_argument("--json-schema", type=Path, metavar="FILE", help="constrain to a JSON schema")
    structured.add_argument("--grammar", type=Path, metavar="FILE", help="constrain to a GBNF grammar")
    chat.add_argument("--stats", action="store_true", help="print token counts and speed after each reply")
    chat.add_argument("--no-history", action="store_true", help="do not save this chat to the history")
    chat.set_defaults(handler=cmd_chat)

    bench = subparsers.add_parser("bench", help="measure prompt and generation speed of a model")
    bench.add_argument("model", type=Path)
    _load_args(bench)
    bench.add_argument("--prompt", type=int, default=256, help="prompt tokens (default 256)")
    bench.add_argument("--gen", type=int, default=128, help="generated tokens (default 128)")
    bench.add_argument("--turns", type=int, default=0, help="also run a multi-turn chat of N turns")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.set_defaults(handler=cmd_bench)


def _load_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ngl", type=int, default=0, help="layers offloaded to the GPU (-1 = all)")
    parser.add_argument("--ctx", type=int, default=4096, help="context size, a multiple of 256 (0 = model's)")
    parser.add_argument("--threads", type=int, default=0, help="generation threads (0 = physical cores)")
    parser.add_argument("--flash-attn", choices=["auto", "on", "off"], default="auto", help="flash attention")
    parser.add_argument("--kv", default="f16", choices=["f16", "q8_0", "q4_0"], help="KV cache type")
    parser.add_argument("--lora", action="append", default=[], metavar="FILE[:SCALE]", help="LoRA adapter")


def _load(args: argparse.Namespace, err: TextIO) -> LlamaCppEngine:
    config = LoadConfig(
        n_gpu_layers=args.ngl,
        n_ctx=args.ctx,
        n_threads=args.threads,
        flash_attention={"auto": None, "on": True, "off": False}[args.flash_attn],
        kv_cache_type=args.kv,
        loras=tuple(LoraAdapter.parse(item) for item in args.lora),
    )
    engine = LlamaCppEngine()
    loaded = engine.load(args.model, config)
    print(
        f"Loaded {loaded.info.display_name} ({loaded.info.file_type}, n_ctx {loaded.n_ctx}, "
        f"{loaded.backend}, {loaded.n_gpu_layers} GPU layers) in {loaded.load_ms:.0f} ms",
        file=err,
    )
    return engine


@contextlib.contextmanager
def _ctrl_c_cancels(engine: LlamaCppEngine) -> Iterator[None]:
    """While a reply streams, Ctrl-C stops the reply (not the program)."""
    previous = signal.signal(signal.SIGINT, lambda *_: engine.cancel())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def cmd_chat(args: argparse.Namespace, ctx: CliContext) -> int:
    err = sys.stderr
    sampling = preset(args.preset)
    changes = {
        k: v
        for k, v in (("temperature", args.temperature), ("seed", args.seed), ("max_tokens", args.max_tokens))
        if v is not None
    }
    sampling = replace(sampling, **changes).validate()
    grammar = _grammar(args)
    engine = _load(args, err)
    try:
        choice = choose_template(engine.model.info, args.template)
        warn(f"Template: {choice.label} ({choice.reason})")  # the reason names the model
        if choice.warning:
            warn(f"Warning: {choice.warning}")
        runner = ChatRunner(engine)
        saver = None if args.no_history else _Saver(ctx, engine, choice.name, args.system, sampling)
        history = [ChatMessage("system", args.system)] if args.system else []
        if args.message is not None:
            history.append(ChatMessage("user", args.message))
            stats, _ = _reply(runner, history, sampling, args, grammar, ctx.out, saver)
            return 0 if stats.finish_reason != "error" else 1
        print(HELP, file=err)
        while True:
            try:
                line = input("> ")
            except EOFError:
                print(file=err)
                return 0
            except KeyboardInterrupt:
                print("\n(Ctrl-D or /exit quits)", file=err)
                continue
            if line.strip() in ("/exit", "/quit"):
                return 0
            if line.strip() == "/new":
                history = history[:1] if args.system else []
                runner.forget(None)
                if saver:
                    saver.conversation_id = None
                continue
            if not line.strip():
                continue
            history.append(ChatMessage("user", line))
            try:
                _, reply = _reply(runner, history, sampling, args, grammar, ctx.out, saver)
            except HearthError as exc:
                history.pop()
                print(f"hearth: {exc}", file=err)
                continue
            history.append(ChatMessage("assistant", reply))
    finally:
        engine.unload()


def _grammar(args: argparse.Namespace) -> str | None:
    try:
        if args.json:
            return json_grammar()
        if args.json_schema:
            return json_grammar(args.json_schema.read_text(encoding="utf-8"))
        if args.grammar:
            return args.grammar.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {exc.filename}: {exc.strerror}") from None
    return None


def _reply(
    runner: ChatRunner,
    history: list[ChatMessage],
    sampling: SamplingSettings,
    args: argparse.Namespace,
    grammar: str | None,
    out: TextIO,
    saver: _Saver | None = None,
) -> tuple[GenerationStats, str]:
    err = sys.stderr
    parts: list[str] = []
    stats: GenerationStats | None = None
    prepared = runner.prepare(history, sampling, override=args.template)
    writer = saver.start(history[-1].content, prepared.rendered.text) if saver else None
    with _ctrl_c_cancels(runner.engine):
        for event in runner.stream(history, sampling, override=args.template, grammar=grammar, prepared=prepared):
            if isinstance(event, TextChunk):
                parts.append(event.text)
                if writer:
                    writer.append(event.text)
                out.write(for_stream(event.text, out))  # a reply may hold escape sequences
                out.flush()
            else:
                stats = event
    if writer and stats:
        writer.finish(
            ReplyStats(stats.finish_reason, stats.prompt_tokens, stats.generated_tokens, stats.gen_tps, stats.ttft_ms)
        )
    out.write("\n")
    assert stats is not None
    if stats.dropped_messages:
        print(
            f"(the {stats.dropped_messages} oldest messages no longer fit the context and were left out)",
            file=err,
        )
    if stats.finish_reason == "cancelled":
        print("(stopped)", file=err)
    elif stats.finish_reason == "error":
        print(f"hearth: generation failed: {stats.error}", file=err)
    if args.stats or stats.finish_reason == "length":
        print(
            f"[{stats.generated_tokens} tokens, {stats.gen_tps:.1f} tok/s, TTFT {stats.ttft_ms:.0f} ms, "
            f"finish: {stats.finish_reason}]",
            file=err,
        )
    return stats, "".join(parts)


class _Saver:
    """Saves a terminal chat to the history like any other conversation."""

    def __init__(
        self, ctx: CliContext, engine: LlamaCppEngine, template: str, system: str, sampling: SamplingSettings
    ) -> None:
        from app.cli.history_cmds import open_history

        self.store = open_history(ctx)
        self.engine = engine
        self.template = template
        self.system = system
        self.sampling = sampling
        self.conversation_id: int | None = None

    def start(self, user_text: str, prompt_text: str) -> ReplyWriter:
        model = self.engine.model
        if self.conversation_id is None:
            self.conversation_id = self.store.create_conversation(
                model_path=str(model.path),
                template=self.template,
                system_prompt=self.system,
                sampling=self.sampling.to_dict(),
                load_settings=model.config.to_dict(),
            ).id
        self.store.add_message(self.conversation_id, "user", user_text)
        return self.store.start_reply(
            self.conversation_id, model=model.path.name, template=self.template, prompt_text=prompt_text
        )


def cmd_bench(args: argparse.Namespace, ctx: CliContext) -> int:
    from app.core.engine import PromptRequest

    if args.prompt < 1 or args.gen < 1 or args.turns < 0:
        raise ConfigError("--prompt and --gen must be at least 1, --turns at least 0")
    engine = _load(args, sys.stderr)
    try:
        info = engine.model.info
        ban_end = tuple((t, -100.0) for t in {info.eos_token_id, info.eot_token_id} if t is not None)
        sampling = SamplingSettings(max_tokens=args.gen, seed=1, logit_bias=ban_end)  # generate exactly --gen
        words = "the quick brown fox jumps over the lazy dog and " * (args.prompt // 4 + 2)
        tokens = engine.tokenize(words)[: args.prompt]
        text = _detokenize_prefix(engine, words, len(tokens))
        if len(engine.tokenize(text)) + args.gen > engine.model.n_ctx:
            raise ConfigError(f"--prompt {args.prompt} + --gen {args.gen} exceed the context ({engine.model.n_ctx})")
        events = list(engine.generate(PromptRequest(text, sampling=sampling)))
        stats = next(e for e in events if isinstance(e, GenerationStats))
        result = {
            "model": str(args.model),
            "threads": engine.model.config.threads,
            "n_ctx": engine.model.n_ctx,
            "backend": engine.model.backend,
            "prompt_tokens": stats.evaluated_tokens,
            "gen_tokens": stats.generated_tokens,
            "prompt_tps": round(stats.prompt_tps, 2),
            "gen_tps": round(stats.gen_tps, 2),
            "ttft_ms": round(stats.ttft_ms, 1),
        }
        if args.turns:
            result["turns"] = _bench_turns(engine, args.turns)
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
    return 0


def _detokenize_prefix(engine: LlamaCppEngine, text: str, count: int) -> str:
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


def _bench_turns(engine: LlamaCppEngine, turns: int) -> list[dict[str, float]]:
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
