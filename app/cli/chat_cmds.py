"""`hearth chat` (a terminal chat, or one message with -m) and `hearth bench` (speed figures)."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.cli import flags
from app.cli.assistant_cmds import parse_value
from app.cli.terminal import for_stream, warn
from app.cli.tools_cmds import ChatTools, add_tool_args
from app.core.errors import ConfigError, HearthError, ModelLoadError
from app.core.sampling import PRESETS, canonical_preset_name, preset

if TYPE_CHECKING:  # imported where used: the engine host, templates and documents are no part of `--help`
    from app.cli.context import CliContext
    from app.core.chat_setup import ChatSetup
    from app.core.documents.attached import AttachedDocuments
    from app.core.engine import GenerationStats, LoadedModel
    from app.core.host import HostClient
    from app.core.load_config import LoadConfig
    from app.core.messages import ChatMessage
    from app.core.remote_servers import RemoteModel
    from app.core.store import Store
    from app.core.structured import ReplyFormat

HELP = "Commands: /new (start over), /exit (or Ctrl-D). Ctrl-C stops a reply."


def register(subparsers: argparse._SubParsersAction) -> None:
    chat = subparsers.add_parser("chat", help="chat with a model in the terminal (or send one message with -m)")
    chat.add_argument("model", help="a GGUF file; with --server, one of the server's model ids")
    chat.add_argument("--server", metavar="NAME", help="chat with MODEL on this server (see `hearth servers`)")
    chat.add_argument(
        "--assistant",
        metavar="NAME",
        help="chat with an assistant's setup (`hearth assistants list`): its system prompt, template, sampling, "
        "reply format and load settings; the flags given here override them",
    )
    chat.add_argument(
        "--var",
        action="append",
        default=[],
        type=parse_value,
        metavar="NAME=VALUE",
        help="a value for a {{variable}} of the assistant's system prompt (repeatable)",
    )
    flags.add_load_flags(chat)
    chat.add_argument("--template", help="override the chat template (a family name or 'embedded')")
    chat.add_argument(
        "--preset",
        metavar="NAME",
        help=f"sampling preset (default: the assistant's, else balanced): {', '.join(PRESETS)}",
    )
    flags.add_sampling_flags(chat)
    chat.add_argument("--system", "-s", help="system prompt (default: the assistant's, else none)")
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
    add_tool_args(chat)
    chat.set_defaults(handler=cmd_chat)


def _describe(loaded: LoadedModel) -> str:
    return (
        f"Loaded {loaded.info.display_name} ({loaded.info.file_type}, n_ctx {loaded.n_ctx}, "
        f"{loaded.backend}, {loaded.n_gpu_layers} GPU layers) in {loaded.load_ms:.0f} ms"
    )


@contextlib.contextmanager
def _ctrl_c_cancels(cancel: Callable[[], None]) -> Iterator[None]:
    """While a reply streams, Ctrl-C stops the reply (not the program)."""
    previous = signal.signal(signal.SIGINT, lambda *_: cancel())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def chat_setup(args: argparse.Namespace, ctx: CliContext) -> ChatSetup:
    """What this chat runs with: the assistant's setup (with --var values) or the defaults, and every flag given
    on top of it (--system, --template, --preset and each sampling flag, --json / --json-schema)."""
    from app.core.assistants import load_assistant
    from app.core.chat_setup import ChatSetup

    values = dict(args.var)
    if args.assistant:
        base = load_assistant(args.assistant, ctx.paths).setup(values)
    elif values:
        raise ConfigError("--var fills in an assistant's variables: give --assistant NAME too")
    else:
        base = ChatSetup(preset="balanced", sampling=preset("balanced"))
    name = canonical_preset_name(args.preset) if args.preset else base.preset
    sampling = flags.sampling(args, preset(args.preset) if args.preset else base.sampling)
    return replace(
        base,
        system_prompt=base.system_prompt if args.system is None else args.system,
        template=base.template if args.template is None else args.template,
        preset=name,
        sampling=sampling,
        reply_format=_reply_format(args) or base.reply_format,
    )


def _reply_format(args: argparse.Namespace) -> ReplyFormat | None:
    """--json / --json-schema FILE as a reply format (None when neither is given)."""
    from app.core.structured import JSON_ANY, JSON_SCHEMA, ReplyFormat

    if args.json:
        return ReplyFormat(JSON_ANY)
    if not args.json_schema:
        return None
    try:
        schema = json.loads(args.json_schema.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {exc.filename}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"--json-schema: {args.json_schema.name} is not JSON ({exc})") from None
    if not isinstance(schema, dict):
        raise ConfigError(f"--json-schema: {args.json_schema.name} must hold a JSON object")
    return ReplyFormat(JSON_SCHEMA, schema).validate()


def load_config(args: argparse.Namespace, ctx: CliContext, setup: ChatSetup) -> LoadConfig:
    """The model's load settings as the app would load it, then the assistant's (context, GPU layers, LoRA
    adapters), then the flags given (--ctx, --ngl ..., --lora, --rpc, --draft)."""
    from app.core.fields import apply_load_values
    from app.core.load_policy import configured_load

    config = setup.load.apply(configured_load(ctx.settings, Path(args.model).name))
    config = apply_load_values(config, flags.load_values(args))
    return flags.apply_file_flags(config, args, ctx, Path(args.model))


def cmd_chat(args: argparse.Namespace, ctx: CliContext) -> int:
    from app.core.documents.attached import DocumentRetriever
    from app.core.host import EngineHost, LoadDone
    from app.core.templates import choose_template

    setup = chat_setup(args, ctx)
    if args.server:
        if args.mcp or args.tools_builtin:
            raise ConfigError("tools (--mcp, --tools-builtin) work with local models only, not with --server")
        return _remote_chat(args, ctx, setup)
    grammar = _grammar(args, setup)
    config = load_config(args, ctx, setup)
    if grammar is not None and (args.mcp or args.tools_builtin):
        raise ConfigError("--json, --json-schema and --grammar cannot be combined with tools (--mcp, --tools-builtin)")
    tools = ChatTools.from_args(args)  # MCP servers start now: one that fails is named before the model loads
    documents = _attached(args, ctx)  # an unknown name fails before the model loads
    retriever = DocumentRetriever(ctx.paths.documents_db, lambda: str(ctx.settings.get("embedding_model")))
    host = EngineHost(store_path=None if args.no_history else ctx.paths.history_db, documents=retriever)
    try:
        client = host.client("cli")
        done = client.load(args.model, config).wait()
        assert isinstance(done, LoadDone)
        if done.error or done.model is None:
            raise ModelLoadError(done.error or "the model could not be loaded")
        warn(_describe(done.model))  # names from the model's file, the template's errors: shown safe
        for line in done.placement:  # a split over RPC workers: where the layers went
            warn(f"  {line}")
        for note in done.notes:
            warn(note)
        choice = choose_template(done.model.info, setup.template or None)
        warn(f"Template: {choice.label} ({choice.reason})")
        if choice.warning:
            warn(f"Warning: {choice.warning}")
        if setup.assistant_name:
            warn(f"Assistant: {setup.assistant_name}")
        chat = _TerminalChat(ctx, client, done.model, args, setup, grammar, tools=tools, documents=documents)
        return chat.run()
    finally:
        host.shutdown()
        if tools is not None:
            tools.close()  # every MCP server process ends with the chat


def _attached(args: argparse.Namespace, ctx: CliContext) -> AttachedDocuments | None:
    """--docs: collection names (or paths of single files) to answer from."""
    if not args.docs:
        return None
    from app.core.documents.attached import AttachedDocuments
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


def _remote_chat(args: argparse.Namespace, ctx: CliContext, setup: ChatSetup) -> int:
    """The same terminal chat, sent to a model on an OpenAI-compatible server (`--server NAME`)."""
    from app.core.host import EngineHost
    from app.core.remote_catalog import RemoteCatalog
    from app.core.remote_servers import RemoteModel, ServerRegistry

    if args.template:
        raise ConfigError("--template does not apply to a server: it applies its own chat template")
    config = ServerRegistry(ctx.settings).get(args.server)
    response_format, grammar = _remote_format(args)
    host = EngineHost(store_path=None if args.no_history else ctx.paths.history_db)
    catalog = RemoteCatalog(host)
    try:
        catalog.sync([config])
        offered = [m.id for m in catalog.models(config.name)]
        if args.model not in offered:
            raise ConfigError(
                f"server {config.name!r} has no model {args.model!r}; it offers: {', '.join(offered) or 'none'}"
            )
        target = RemoteModel(config.name, args.model)
        warn(f"Chatting with {target.id} on {config.name} ({config.url}); the server applies its own template")
        chat = _TerminalChat(ctx, host.client("cli"), None, args, setup, grammar, remote=target)
        chat.response_format = response_format
        return chat.run()
    finally:
        host.shutdown()
        catalog.close()


def _remote_format(args: argparse.Namespace) -> tuple[dict[str, Any] | None, str | None]:
    """--json / --json-schema as OpenAI's response_format; --grammar as llama.cpp servers' grammar field."""
    import json

    try:
        if args.json:
            return {"type": "json_object"}, None
        if args.json_schema:
            schema = json.loads(args.json_schema.read_text(encoding="utf-8"))
            return {"type": "json_schema", "json_schema": {"name": "reply", "strict": True, "schema": schema}}, None
        if args.grammar:
            return None, args.grammar.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {exc.filename}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"--json-schema: not JSON ({exc})") from None
    return None, None


def _grammar(args: argparse.Namespace, setup: ChatSetup) -> str | None:
    """--grammar FILE as it is, else the reply format's grammar (--json, --json-schema or the assistant's)."""
    if args.grammar:
        try:
            return args.grammar.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read {exc.filename}: {exc.strerror}") from None
    return setup.grammar()


class _TerminalChat:
    """A conversation in the terminal: sent through the engine host and, unless --no-history, saved to the
    history like a chat in the app (the host writes each reply as it streams)."""

    def __init__(
        self,
        ctx: CliContext,
        client: HostClient,
        model: LoadedModel | None,
        args: argparse.Namespace,
        setup: ChatSetup,
        grammar: str | None,
        remote: RemoteModel | None = None,
        tools: ChatTools | None = None,
        documents: AttachedDocuments | None = None,
    ) -> None:
        self.ctx = ctx
        self.tools = tools
        self.documents = documents
        self.client = client
        self.model = model
        self.remote = remote  # a model on a server instead of the loaded one
        self.response_format: dict[str, Any] | None = None
        self.args = args
        self.setup = setup
        self.sampling = setup.sampling
        self.grammar = grammar
        self.history: list[ChatMessage] = setup.system_messages()
        self.store: Store | None = None
        self.conversation_id: int | None = None
        self.session = 0  # a new key after /new, so the engine does not reuse the old conversation's cache

    def run(self) -> int:
        if self.args.message is not None:
            stats = self.send(self.args.message)
            return 0 if stats.finish_reason != "error" else 1
        return self.interactive()

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
                self.history = self.setup.system_messages()
                self.conversation_id = None
                self.session += 1
                continue
            if not line.strip():
                continue
            try:
                self.send(line)
            except HearthError as exc:
                warn(f"hearth: {exc}")

    def send(self, text: str) -> GenerationStats:
        """One exchange: the user's text, the streamed reply. Raises HearthError when no reply could start
        (the message is then left out of the conversation)."""
        from app.core.messages import ChatMessage
        from app.core.reply import ReplyChunk, ReplyDone, ReplyRequest, ReplyStarted

        out = self.ctx.out
        parent_id = self._save_user(text)
        messages = (*self.history, ChatMessage("user", text))
        if self.tools is not None:
            return self._send_with_tools(messages, parent_id)
        request = ReplyRequest(
            messages,
            self.sampling,
            template_override=self.setup.template or None,
            grammar=self.grammar,
            conversation_id=self.conversation_id,
            parent_id=parent_id if parent_id is not None else "leaf",
            key=("cli", self.session),
            backend=self.remote.server if self.remote else None,
            meta={
                "reply_format": self.setup.reply_format.to_dict(),
                **({"model": self.remote.id} if self.remote else {}),
            },
            response_format=self.response_format,
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
                    out.write(for_stream(event.text, out))  # a reply may hold escape sequences
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
        self._report(stats)
        return stats

    def _send_with_tools(self, messages: tuple[ChatMessage, ...], parent_id: int | None) -> GenerationStats:
        """One exchange with tools: rounds of the tool loop through the host, approvals asked on the terminal,
        every turn (calls and results) saved to the history as it ends."""
        assert self.tools is not None
        reply = self.tools.host_reply(
            self.client,
            sampling=self.sampling,
            template_override=self.setup.template or None,
            conversation_id=self.conversation_id,
            parent_id=parent_id if parent_id is not None else "leaf",
            key=("cli", self.session),
            store=self.store if self.conversation_id is not None else None,
        )
        added = self.tools.run(reply, list(messages), out=self.ctx.out, err=sys.stderr)
        if reply.stats is None:
            raise HearthError("the reply could not start")
        self.history += [messages[-1], *added]
        self._report(reply.stats, stop_said=True)  # the loop has said "(stopped)" already
        return reply.stats

    def _report(self, stats: GenerationStats, *, stop_said: bool = False) -> None:
        err = sys.stderr
        if stats.dropped_messages:
            print(
                f"(the {stats.dropped_messages} oldest messages no longer fit the context and were left out)",
                file=err,
            )
        if stats.finish_reason == "cancelled" and not stop_said:
            print("(stopped)", file=err)
        elif stats.finish_reason == "error":
            warn(f"hearth: generation failed: {stats.error}")
        if self.args.stats or stats.finish_reason == "length":
            print(
                f"[{stats.generated_tokens} tokens, {stats.gen_tps:.1f} tok/s, TTFT {stats.ttft_ms:.0f} ms, "
                f"finish: {stats.finish_reason}]",
                file=err,
            )

    def _print_sources(self, meta: dict[str, Any]) -> None:
        """After the answer: the sources it was given (the [n] it cites), and the retrieval's note."""
        from app.core.documents.attached import source_lines
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
        from app.core.reply import create_conversation

        if self.args.no_history:
            return None
        if self.store is None:
            from app.cli.history_cmds import open_history

            self.store = open_history(self.ctx)
        if self.conversation_id is None:
            remote = self.remote
            args = self.setup.create_args()
            args["meta"] = {**args["meta"], **(self._new_meta(remote) or {})}  # this chat's tools, documents
            self.conversation_id = create_conversation(
                self.store,
                model_path=remote.id if remote else str(self.model.path) if self.model else "",
                load_settings=self.model.config.to_dict() if self.model and not remote else {},
                **args,
            )
        return self.store.add_message(self.conversation_id, "user", text).id

    def _new_meta(self, remote: RemoteModel | None) -> dict[str, Any] | None:
        """A new conversation's meta: its server, or its tools; and the documents it answers from."""
        meta: dict[str, Any] = {"remote": remote.to_meta()} if remote else (self._tools_meta() or {})
        if self.documents:
            meta["documents"] = self.documents.to_meta()
        return meta or None

    def _tools_meta(self) -> dict[str, Any] | None:
        from app.core.tool_setup import TOOLS_META

        return {TOOLS_META: self.tools.names()} if self.tools is not None else None
