"""API conversations in the history, when the user turns that on: a client's next turn (its messages are
an earlier request's messages plus the reply) continues the same stored conversation."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.core.messages import ChatMessage, ToolCall
from app.core.reply import create_conversation

if TYPE_CHECKING:
    from app.core.engine import LoadedModel
    from app.core.sampling import SamplingSettings
    from app.core.store import Store

REMEMBERED = 1000  # conversations a client may continue (older ones start a new stored conversation)


def fingerprint(messages: Sequence[ChatMessage]) -> str:
    """The same for a conversation however a client sends it back (a call's id, name and arguments count)."""
    text = json.dumps(
        [[m.role, m.content, [[c.id, c.name, c.arguments] for c in m.tool_calls], m.tool_call_id] for m in messages],
        ensure_ascii=False,
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def reply_message(message: dict[str, Any]) -> ChatMessage:
    """A chat completion's message (content, and tool_calls when the model called tools) as a ChatMessage."""
    calls = tuple(ToolCall.from_openai(call) for call in message.get("tool_calls") or ())
    return ChatMessage("assistant", message.get("content") or "", calls)


def _new_turn(messages: Sequence[ChatMessage]) -> int:
    """Where a request's new messages start: after the last assistant message (the reply it continues)."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == "assistant":
            return index + 1
    return len(messages) - 1


class ApiHistory:
    """Writes the user's side of API conversations on a thread of its own (SQLite connections belong to
    one thread); the replies are written by the engine host as they stream, like the window's."""

    def __init__(self, store_path: Path) -> None:
        self.store_path = store_path
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="hearth-api-history")
        self._store: Store | None = None
        self._known: OrderedDict[str, tuple[int, int]] = OrderedDict()  # fingerprint -> (conversation, reply)

    async def begin(
        self, messages: Sequence[ChatMessage], model: LoadedModel | Path, sampling: SamplingSettings
    ) -> tuple[int, int]:
        """(conversation id, id of the user message to answer): the conversation this request continues,
        or a new one holding its messages."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._begin, tuple(messages), model, sampling)

    async def remember(
        self, messages: Sequence[ChatMessage], reply: dict[str, Any], conversation: int, reply_id: int
    ) -> None:
        """After a reply (the chat completion's message): the client's next request (these messages + the
        reply + new ones) continues it. A reply that called tools is stored as the app stores one: its prose
        as the text, the calls in meta."""
        message = reply_message(reply)
        key = fingerprint((*messages, message))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._remember, key, conversation, reply_id, message)

    def close(self) -> None:
        def close_store() -> None:
            if self._store is not None:
                self._store.close()
                self._store = None

        self._executor.submit(close_store)
        self._executor.shutdown(wait=True)

    # ---- on the history thread -----------------------------------------------------------------------------
    def _open(self) -> Store:
        if self._store is None:
            from app.core.store import Store

            self._store = Store.open(self.store_path)
        return self._store

    def _begin(
        self, messages: tuple[ChatMessage, ...], model: LoadedModel | Path, sampling: SamplingSettings
    ) -> tuple[int, int]:
        from app.core.tool_loop import stored_meta

        store = self._open()
        start = _new_turn(messages)
        known = self._known.get(fingerprint(messages[:start]))
        if known is not None:
            conversation, parent = known
            for message in messages[start:]:
                parent = store.add_message(
                    conversation, message.role, message.content, parent_id=parent, meta=stored_meta(message)
                ).id
            return conversation, parent
        system = messages[0].content if messages[0].role == "system" else ""
        conversation = create_conversation(
            store,
            model_path=str(model if isinstance(model, Path) else model.path),
            load_settings={} if isinstance(model, Path) else model.config.to_dict(),
            system_prompt=system,
            sampling=sampling,
            meta={"source": "api"},
        )
        last = 0
        for message in messages[1 if system else 0 :]:
            last = store.add_message(conversation, message.role, message.content, meta=stored_meta(message)).id
        return conversation, last

    def _remember(self, key: str, conversation: int, reply_id: int, message: ChatMessage) -> None:
        if message.tool_calls:
            from app.core.store import ReplyStats, ReplyWriter
            from app.core.tool_loop import stored_meta

            store = self._open()
            stored = store.message(reply_id)
            stats = ReplyStats(
                stored.finish_reason or "stop",
                stored.prompt_tokens,
                stored.generated_tokens,
                stored.gen_tps,
                stored.ttft_ms,
            )
            ReplyWriter(store, reply_id).finish(stats, stored_meta(message), content=message.content)
        self._known[key] = (conversation, reply_id)
        self._known.move_to_end(key)
        while len(self._known) > REMEMBERED:
            self._known.popitem(last=False)
