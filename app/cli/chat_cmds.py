"""`hearth chat` (a terminal chat, or one message with -m) and `hearth bench` (speed figures)."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from app.cli import flags
from app.cli.context import CliContext
from app.core.conversation import ChatRunner
from app.core.documents.attached import AttachedDocuments, DocumentRetriever, source_lines
from app.core.engine import GenerationStats, LoadedModel, TextChunk
from app.core.errors import ConfigError, HearthError, ModelLoadError
from app.core.host import EngineHost, HostClient, LoadDone
from app.core.llama_engine import LlamaCppEngine
from app.core.messages import ChatMessage
from app.core.reply import ReplyChunk, ReplyDone, ReplyRequest, ReplyStarted, create_conversation
from app.core.sampling import PRESETS, SamplingSettings, preset
from app.core.store import Store
from app.core.structured import json_grammar
from app.core.templates import choose_template

HELP = "Commands: /new (start over), /exit (or Ctrl-D). Ctrl-C stops a reply."


def register(subparsers: argparse._SubParsersAction) -> None:
    chat = subparsers.add_parser("chat", help="chat with a model in the terminal (or send one message with -m)")
    chat.add_argument("model", type=Path)
    flags.add_load_flags(chat)
    chat.add_argument("--template", help="override the chat template (a family name or 'embedded')")
    chat.add_argument("--preset", default="balanced", choices=sorted(PRESETS), help="sampling preset")
    flags.add_sampling_flags(chat)
    chat.add_argument("--system", "-s", default="", help="system prompt")
    chat.add_argument("-m", "--message", help="send this one message, print the reply and exit")
    structured = chat.add_mutually_exclusive_group()
    structured.add_argument("--json", action="store_true", help="constrain the reply to valid JSON")
    structured.add_argument("--json-schema", type=Path, metavar="FILE", help="constrain to a JSON schema")
    structured.add_argument("--grammar", type=Path, metavar="FILE", help="constrain to a GBNF grammar")
    chat.add_argument(
        "--docs",
        action="append",
        default=[],
        metavar="NAME",
        help="answer from a document collection (or a single file), citing its sources; may be repeated",
    )
    chat.add_argument("--stats", action="store_true", help="print token counts and speed after each reply")
    chat.add_argument("--no-history", action="store_true", help="do not save this chat to the history")
    chat.set_defaults(handler=cmd_chat)

    bench = subparsers.add_parser("bench", help="measure prompt and generation speed of a model")
    bench.add_argument("model", type=Path)
    flags.add_load_flags(bench)
    bench.add_argument("--prompt", type=int, default=256, help="prompt tokens (default 256)")
    bench.add_argument("--gen", type=int, default=128, help="generated tokens (default 128)")
    bench.add_argument("--turns", type=int, default=0, help="also run a multi-turn chat of N turns")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.set_defaults(handler=cmd_bench)


def _describe(loaded: LoadedModel) -> str:
    return (
        f"Loaded {loaded.info.display_name} ({loaded.info.file_type}, n_ctx {loaded.n_ctx}, "
        f"{loaded.backend}, {loaded.n_gpu_layers} GPU layers) in {loaded.load_ms:.0f} ms"
    )


def _load(args: argparse.Namespace, ctx: CliContext, err: TextIO) -> LlamaCppEngine:
    """Load for a benchmark: straight into an engine of our own, the same load policy as the app."""
    engine = LlamaCppEngine()
    loaded = engine.load(args.model, flags.load_config(args, ctx, args.model))
    print(_describe(loaded), file=err)
    return engine


@contextlib.contextmanager
def _ctrl_c_cancels(cancel: Callable[[], None]) -> Iterator[None]:
    """While a reply streams, Ctrl-C stops the reply (not the program)."""
    previous = signal.signal(signal.SIGINT, lambda *_: cancel())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def cmd_chat(args: argparse.Namespace, ctx: CliContext) -> int:
    err = sys.stderr
    sampling = flags.sampling(args, preset(args.preset))
    grammar = _grammar(args)
    config = flags.load_config(args, ctx, args.model)
    documents = _attached(args, ctx)  # an unknown name fails before the model loads
    retriever = DocumentRetriever(ctx.paths.documents_db, lambda: str(ctx.settings.get("embedding_model")))
    host = EngineHost(store_path=None if args.no_history else ctx.paths.history_db, documents=retriever)
    try:
        client = host.client("cli")
        done = client.load(args.model, config).wait()
        assert isinstance(done, LoadDone)
        if done.error or done.model is None:
            raise ModelLoadError(done.error or "the model could not be loaded")
        print(_describe(done.model), file=err)
        for note in done.notes:
            print(note, file=err)
        choice = choose_template(done.model.info, args.template)
        print(f"Template: {choice.label} ({choice.reason})", file=err)
        if choice.warning:
            print(f"Warning: {choice.warning}", file=err)
        chat = _TerminalChat(ctx, client, done.model, args, sampling, grammar, documents)
        if args.message is not None:
            stats = chat.send(args.message)
            return 0 if stats.finish_reason != "error" else 1
        return chat.interactive()
    finally:
        host.shutdown()


def _attached(args: argparse.Namespace, ctx: CliContext) -> AttachedDocuments | None:
    """--docs: collection names (or paths of single files) to answer from."""
    if not args.docs:
        return None
    from app.core.documents.index import DocumentIndex
    from app.core.errors import DocumentsError

    index = DocumentIndex(ctx.paths.documents_db)
    try:
        names = set(index.collection_names())
    finally:
        index.close()
    attached = AttachedDocuments()
    for item in args.docs:
        if item in names:
            attached = attached.with_collection(item)
        elif Path(item).expanduser().is_file():
            attached = attached.with_file(item)
        else:
            known = ", ".join(sorted(names)) or "none yet; `hearth docs add NAME FOLDER` makes one"
            raise DocumentsError(f"no document collection or file named {item!r} (collections: {known})")
    return attached


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


class _TerminalChat:
    """A conversation in the terminal: sent through the engine host and, unless --no-history, saved to the
    history like a chat in the app (the host writes each reply as it streams)."""

    def __init__(
        self,
        ctx: CliContext,
        client: HostClient,
        model: LoadedModel,
        args: argparse.Namespace,
        sampling: SamplingSettings,
        grammar: str | None,
        documents: AttachedDocuments | None = None,
    ) -> None:
        self.ctx = ctx
        self.documents = documents
        self.client = client
        self.model = model
        self.args = args
        self.sampling = sampling
        self.grammar = grammar
        self.history: list[ChatMessage] = [ChatMessage("system", args.system)] if args.system else []
        self.store: Store | None = None
        self.conversation_id: int | None = None
        self.session = 0  # a new key after /new, so the engine does not reuse the old conversation's cache

    def interactive(self) -> int:
        err = sys.stderr
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
                self.history = self.history[:1] if self.args.system else []
                self.conversation_id = None
                self.session += 1
                continue
            if not line.strip():
                continue
            try:
                self.send(line)
            except HearthError as exc:
                print(f"hearth: {exc}", file=err)

    def send(self, text: str) -> GenerationStats:
        """One exchange: the user's text, the streamed reply. Raises HearthError when no reply could start
        (the message is then left out of the conversation)."""
        err, out = sys.stderr, self.ctx.out
        parent_id = self._save_user(text)
        messages = (*self.history, ChatMessage("user", text))
        request = ReplyRequest(
            messages,
            self.sampling,
            template_override=self.args.template,
            grammar=self.grammar,
            conversation_id=self.conversation_id,
            parent_id=parent_id if parent_id is not None else "leaf",
            key=("cli", self.session),
            documents=self.documents,
        )
        job = self.client.reply(request)
        parts: list[str] = []
        done: ReplyDone | None = None
        started: ReplyStarted | None = None
        with _ctrl_c_cancels(job.cancel):
            for event in job.events():
                if isinstance(event, ReplyStarted):
                    started = event
                elif isinstance(event, ReplyChunk):
                    parts.append(event.text)
                    out.write(event.text)
                    out.flush()
                elif isinstance(event, ReplyDone):
                    done = event
        assert done is not None
        if done.stats is None:
            raise HearthError(done.error or "the reply could not start")
        stats = done.stats
        out.write("\n")
        if self.documents and started is not None:
            self._print_sources(started.meta)
        self.history += [ChatMessage("user", text), ChatMessage("assistant", "".join(parts))]
        if stats.dropped_messages:
            print(
                f"(the {stats.dropped_messages} oldest messages no longer fit the context and were left out)",
                file=err,
            )
        if stats.finish_reason == "cancelled":
            print("(stopped)", file=err)
        elif stats.finish_reason == "error":
            print(f"hearth: generation failed: {stats.error}", file=err)
        if self.args.stats or stats.finish_reason == "length":
            print(
                f"[{stats.generated_tokens} tokens, {stats.gen_tps:.1f} tok/s, TTFT {stats.ttft_ms:.0f} ms, "
                f"finish: {stats.finish_reason}]",
                file=err,
            )
        return stats

    def _print_sources(self, meta: dict[str, Any]) -> None:
        """After the answer: the sources it was given (the [n] it cites), and the retrieval's note."""
        from app.core.documents.retrieval import sources_from_meta

        sources = sources_from_meta(meta.get("sources"))
        note = (meta.get("retrieval") or {}).get("note", "")
        if note:
            print(f"(documents: {note})", file=sys.stderr)
        if not sources:
            self.ctx.print("\nSources: none found in the attached documents.")
            return
        self.ctx.print("\nSources:")
        for line in source_lines(sources):
            self.ctx.print(line)

    def _save_user(self, text: str) -> int | None:
        """Save the user's message (creating the conversation first); None with --no-history."""
        if self.args.no_history:
            return None
        if self.store is None:
            from app.cli.history_cmds import open_history

            self.store = open_history(self.ctx)
        if self.conversation_id is None:
            self.conversation_id = create_conversation(
                self.store,
                model_path=str(self.model.path),
                load_settings=self.model.config.to_dict(),
                system_prompt=self.args.system,
                template_override=self.args.template or "",
                preset=self.args.preset,
                sampling=self.sampling,
                meta={"documents": self.documents.to_meta()} if self.documents else None,
            )
        return self.store.add_message(self.conversation_id, "user", text).id


def cmd_bench(args: argparse.Namespace, ctx: CliContext) -> int:
    from app.core.engine import PromptRequest

    if args.prompt < 1 or args.gen < 1 or args.turns < 0:
        raise ConfigError("--prompt and --gen must be at least 1, --turns at least 0")
    engine = _load(args, ctx, sys.stderr)
    model = engine.model
    assert model is not None
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
