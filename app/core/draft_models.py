"""Draft models for speculative decoding: which small model can draft for a big one, and the drafter itself.

A draft model must tokenize exactly like the target (its tokens are checked as the target's own). The
vocabulary fingerprint hashes the raw bytes of the GGUF's token list with the tokenizer type and special
token ids, read from the header without decoding the strings (milliseconds, even for 262k tokens), so the
library can be searched for a compatible draft at once.
"""

from __future__ import annotations

import hashlib
import mmap
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from app.core.errors import ConfigError, GGUFError
from app.core.gguf_info import ModelInfo, inspect
from app.core.gguf_reader import ArraySummary, read_header

MAX_DRAFT_SHARE = 0.25  # a draft is worth it when it has at most a quarter of the target's parameters


def vocab_fingerprint(path: Path) -> str:
    """A hash of a model's vocabulary (tokens, tokenizer type, BOS/EOS). Raises GGUFError."""
    header = read_header(path)
    kv = header.kv
    tokens = kv.get("tokenizer.ggml.tokens")
    digest = hashlib.sha256()
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"):
        digest.update(f"{key}={kv.get(key)!r};".encode())
    if isinstance(tokens, ArraySummary) and tokens.end > tokens.offset:
        with Path(path).open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            digest.update(data[tokens.offset : tokens.end])
    elif isinstance(tokens, list):
        digest.update("\x00".join(map(str, tokens)).encode("utf-8", "surrogatepass"))
    else:
        raise GGUFError(f"{Path(path).name} has no vocabulary")
    return digest.hexdigest()


def can_draft_for(draft: ModelInfo, target: ModelInfo) -> str | None:
    """None when draft can draft for target, else why not (one line)."""
    if draft.is_adapter or draft.model_type not in ("model", ""):
        return f"{draft.path.name} is not a model"
    try:
        same = vocab_fingerprint(draft.path) == vocab_fingerprint(target.path)
    except GGUFError as exc:
        return str(exc)
    if not same:
        return f"{draft.display_name} tokenizes differently from {target.display_name}"
    if draft.parameters and target.parameters and draft.parameters > target.parameters * MAX_DRAFT_SHARE:
        return f"{draft.display_name} is not much smaller than {target.display_name}: no gain to expect"
    return None


def find_draft_model(target: Path, candidates: Iterable[Path]) -> Path | None:
    """The smallest model among candidates that can draft for target (None if there is none)."""
    target_info = inspect(target)
    best: tuple[int, Path] | None = None
    for path in candidates:
        if Path(path).resolve() == Path(target).resolve():
            continue
        try:
            info = inspect(path)
        except GGUFError:
            continue
        if can_draft_for(info, target_info) is None:
            size = info.parameters or info.size_bytes
            if best is None or size < best[0]:
                best = (size, Path(path))
    return best[1] if best else None


class ModelDrafter:
    """Drafts with a small model on its own llama.cpp context: it keeps that context's tokens in step with
    the conversation (only what differs is evaluated again) and proposes its greedy continuation."""

    def __init__(self, lib: Any, model: Any, ctx: Any, vocab: Any) -> None:
        self._lib, self._model, self._ctx, self._vocab = lib, model, ctx, vocab
        self._tokens: list[int] = []
        self._batch = lib.llama_batch_init(512, 0, 1)
        self._sampler = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        lib.llama_sampler_chain_add(self._sampler, lib.llama_sampler_init_greedy())
        self.n_ctx = lib.llama_n_ctx(ctx)

    @classmethod
    def load(cls, path: Path, n_ctx: int, threads: int, n_gpu_layers: int, flash: int) -> ModelDrafter:
        """Load a draft model (raises ConfigError when llama.cpp cannot)."""
        from app.core.native import llama

        lib = llama()
        params = lib.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        model = lib.llama_model_load_from_file(str(path).encode("utf-8"), params)
        if not model:
            raise ConfigError(f"the draft model {Path(path).name} could not be loaded")
        context = lib.llama_context_default_params()
        context.n_ctx = n_ctx
        context.n_batch = context.n_ubatch = 512
        context.n_seq_max = 1
        context.n_threads = context.n_threads_batch = threads
        context.flash_attn_type = flash
        context.no_perf = True
        ctx = lib.llama_init_from_model(model, context)
        if not ctx:
            lib.llama_model_free(model)
            raise ConfigError(f"no context for the draft model {Path(path).name}")
        return cls(lib, model, ctx, lib.llama_model_get_vocab(model))

    def _sync(self, history: Sequence[int]) -> bool:
        """Make the draft context hold exactly history; False when it cannot (too long, a failed decode)."""
        lib = self._lib
        if len(history) + 8 >= self.n_ctx:
            return False
        known = len(self._tokens)
        tail = max(0, known - 64)
        if known <= len(history) and self._tokens[tail:] == list(history[tail:known]):
            same = known  # the usual case: the same conversation, grown (drafts are checked anyway)
        else:
            same, limit = 0, min(known, len(history))
            while same < limit and self._tokens[same] == history[same]:
                same += 1
        if same == len(history):
            same -= 1  # the last token is decoded again for its logits
        memory = lib.llama_get_memory(self._ctx)
        if same < len(self._tokens) and not lib.llama_memory_seq_rm(memory, 0, same, -1):
            lib.llama_memory_seq_rm(memory, 0, 0, -1)
            same = 0
        del self._tokens[same:]
        for start in range(same, len(history), 512):
            chunk = history[start : start + 512]
            for i, token in enumerate(chunk):
                self._add(i, token, start + i, i == len(chunk) - 1)
            self._batch.n_tokens = len(chunk)
            if lib.llama_decode(self._ctx, self._batch) != 0:
                lib.llama_memory_seq_rm(memory, 0, 0, -1)
                self._tokens = []
                return False
            self._tokens.extend(chunk)
        return True

    def _add(self, i: int, token: int, pos: int, logits: bool) -> None:
        batch = self._batch
        batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, pos, 1, logits
        batch.seq_id[i][0] = 0

    def propose(self, tokens: Sequence[int], pending: int, limit: int) -> list[int]:
        if limit <= 0 or not self._sync([*tokens, pending]):
            return []
        lib = self._lib
        drafts: list[int] = []
        for _ in range(limit):
            token = int(lib.llama_sampler_sample(self._sampler, self._ctx, -1))
            if lib.llama_vocab_is_eog(self._vocab, token):
                break
            drafts.append(token)
            if len(drafts) == limit:
                break
            self._add(0, token, len(self._tokens), True)
            self._batch.n_tokens = 1
            if lib.llama_decode(self._ctx, self._batch) != 0:
                break
            self._tokens.append(token)
        return drafts

    def rewind(self, kept: int) -> None:
        """Nothing to do now: the next proposal re-synchronises on what stands."""

    def close(self) -> None:
        lib = self._lib
        if self._ctx is not None:
            lib.llama_batch_free(self._batch)
            lib.llama_sampler_free(self._sampler)
            lib.llama_free(self._ctx)
            lib.llama_model_free(self._model)
            self._ctx = self._model = None
