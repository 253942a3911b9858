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
from typing import TYPE_CHECKING

from app.core.messages import ChatMessage
from app.core.reply import create_conversation

if TYPE_CHECKING:
    from app.core.engine import LoadedModel
    from app.core.sampling import SamplingSettings
    from app.core.store import Store

REMEMBERED = 1000  # conversations a client may continue (older ones start a new stored conversation)


def fingerprint(messages: Sequence[ChatMessage]) -> str:
    text = json.dumps([[m.role, m.content] for m in messages], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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

    async def remember(self, messages: Sequence[ChatMessage], reply: str, conversation: int, reply_id: int) -> None:
        """After a reply: the client's next request (these messages + the reply + a new one) continues it."""
        key = fingerprint((*messages, ChatMessage("assistant", reply)))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._remember, key, conversation, reply_id)

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
        store = self._open()
        last = messages[-1]
        known = self._known.get(fingerprint(messages[:-1]))
        if known is not None:
            conversation, parent = known
            return conversation, store.add_message(conversation, "user", last.content, parent_id=parent).id
        system = messages[0].content if messages[0].role == "system" else ""
        conversation = create_conversation(
            store,
            model_path=str(model if isinstance(model, Path) else model.path),
            load_settings={} if isinstance(model, Path) else model.config.to_dict(),
            system_prompt=system,
            sampling=sampling,
            meta={"source": "api"},
        )
        for message in messages[1 if system else 0 : -1]:
            store.add_message(conversation, message.role, message.content)
        return conversation, store.add_message(conversation, "user", last.content).id

    def _remember(self, key: str, conversation: int, reply_id: int) -> None:
        self._known[key] = (conversation, reply_id)
        self._known.move_to_end(key)
        while len(self._known) > REMEMBERED:
            self._known.popitem(last=False)
