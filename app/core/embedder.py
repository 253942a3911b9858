"""Embedder: pooled, L2-normalised text embeddings from a GGUF model through llama.cpp's C API.

An embedding model (BERT, nomic-bert, e5, bge ...) carries its pooling type in the GGUF header
(`<arch>.pooling_type`: mean or CLS) and that is what "model" pooling uses. A chat model has none; it gives
embeddings only when the caller asks for a pooling explicitly (pooling="mean"), as an OpenAI-style
/v1/embeddings endpoint over the loaded chat model does.

Many texts go through one llama_decode as separate sequences (one context with n_seq_max sequences and a
unified KV buffer), so indexing pays one graph evaluation per batch, not one per chunk. For a non-causal
model (BERT) llama.cpp needs a whole batch in one micro-batch, hence n_ubatch = n_batch = n_ctx.

One Embedder may be shared between threads (an indexing worker and a search on the engine thread): calls
are serialised by a lock; llama.cpp's context itself is not thread-safe.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from app.core import llama_log
from app.core.errors import (
    GenerationError,
    GGUFError,
    ModelFileMissingError,
    ModelLoadError,
    NotAnEmbeddingModelError,
)
from app.core.gguf_info import inspect
from app.core.native import llama

log = logging.getLogger("hearth.embedder")

Pooling = Literal["model", "mean", "cls", "last"]
Purpose = Literal["query", "document"] | None

DEFAULT_BATCH_TOKENS = 1024
DEFAULT_MAX_SEQUENCES = 32

# Instruction prefixes that model families were trained with (from their model cards). Without them e5 and
# nomic-embed lose a good part of their retrieval quality; models not listed take plain text.
_PREFIXES: tuple[tuple[str, str, str], ...] = (
    # (name fragment, query prefix, document prefix)
    ("nomic-embed", "search_query: ", "search_document: "),
    ("nomic embed", "search_query: ", "search_document: "),
    ("e5-", "query: ", "passage: "),
    ("e5 ", "query: ", "passage: "),
    ("bge-small-en", "Represent this sentence for searching relevant passages: ", ""),
    ("bge-base-en", "Represent this sentence for searching relevant passages: ", ""),
    ("bge-large-en", "Represent this sentence for searching relevant passages: ", ""),
    ("mxbai-embed", "Represent this sentence for searching relevant passages: ", ""),
    ("arctic-embed", "Represent this sentence for searching relevant passages: ", ""),
)


@dataclass(frozen=True)
class Embedded:
    """The result of one embed_detailed() call: vectors in input order, and what each text cost."""

    vectors: np.ndarray  # float32, shape (len(texts), dimensions), each row of unit length
    token_counts: list[int]  # tokens that went into each vector (after truncation)
    truncated: list[int]  # indices of the texts cut to max_tokens


def prefixes_for(model_name: str) -> tuple[str, str]:
    """(query prefix, document prefix) for a model's family, from its name; ("", "") when none is known."""
    name = model_name.lower()
    for fragment, query, document in _PREFIXES:
        if fragment in name:
            return query, document
    return "", ""


class Embedder:
    """One embedding context over one GGUF model. Create with Embedder.open(); close() frees it."""

    def __init__(self) -> None:  # use Embedder.open()
        self._lock = threading.Lock()
        self._model: Any = None
        self._ctx: Any = None
        self._vocab: Any = None
        self._batch: Any = None
        self._capacity = 0
        self._max_sequences = 1
        self._use_encode = False
        self._eos_like: set[int] = set()
        self.path = Path()
        self.name = ""
        self.dimensions = 0
        self.max_tokens = 0
        self.pooling: Pooling = "model"
        self.is_embedding_model = False
        self.query_prefix = ""
        self.document_prefix = ""

    # ---- open / close --------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: Path | str,
        *,
        pooling: Pooling = "model",
        max_tokens: int | None = None,
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        max_sequences: int = DEFAULT_MAX_SEQUENCES,
        threads: int | None = None,
        n_gpu_layers: int = 0,
    ) -> Embedder:
        """Load a model for embeddings.

        pooling "model" takes the GGUF's pooling type and refuses a file that has none (a chat model) with
        NotAnEmbeddingModelError; "mean"/"cls"/"last" force one (any model). max_tokens caps each text (default:
        the model's training context, at most batch_tokens); longer texts are truncated and reported.
        """
        embedder = cls()
        try:
            embedder._open(Path(path), pooling, max_tokens, batch_tokens, max_sequences, threads, n_gpu_layers)
        except BaseException:
            embedder.close()
            raise
        return embedder

    def _open(
        self,
        path: Path,
        pooling: Pooling,
        max_tokens: int | None,
        batch_tokens: int,
        max_sequences: int,
        threads: int | None,
        n_gpu_layers: int,
    ) -> None:
        if pooling not in ("model", "mean", "cls", "last"):
            raise ModelLoadError(f"unknown pooling {pooling!r}; use model, mean, cls or last")
        if not path.is_file():
            raise ModelFileMissingError(f"{path.name}: file not found ({path})")
        try:
            info = inspect(path)
        except GGUFError as exc:
            raise NotAnEmbeddingModelError(f"{path.name} is not a model Hearth can read: {exc}") from None
        if info.model_type not in ("model", ""):
            raise NotAnEmbeddingModelError(f"{path.name} is a {info.model_type}, not an embedding model")
        self.path = path
        self.name = info.display_name
        lib = llama()
        llama_log.recent_problems(clear=True)
        params = lib.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        self._model = lib.llama_model_load_from_file(str(path).encode("utf-8"), params)
        if not self._model:
            detail = "; ".join(llama_log.recent_problems(clear=True)[-2:]) or "see the log"
            raise ModelLoadError(f"{path.name}: llama.cpp could not load it: {detail}")
        self._vocab = lib.llama_model_get_vocab(self._model)
        n_ctx_train = int(lib.llama_model_n_ctx_train(self._model)) or batch_tokens
        self.max_tokens = max(8, min(max_tokens or n_ctx_train, n_ctx_train, batch_tokens))
        self._capacity = max(batch_tokens, self.max_tokens)
        # A power of two: with llama.cpp 0c1e570, n_seq_max of 3, 5, 6, 7 or 12 aborted the process in the
        # pooling step (GGML_ASSERT(ggml_can_mul_mat(a, b)), BERT model, 40 texts); 1, 2, 4 ... 32 work.
        wanted = max(1, min(max_sequences, int(lib.llama_max_parallel_sequences())))
        self._max_sequences = 1 << (wanted.bit_length() - 1)
        self._ctx = self._new_context(lib, pooling, threads)
        actual = int(lib.llama_pooling_type(self._ctx))
        if actual == lib.LLAMA_POOLING_TYPE_NONE:
            raise NotAnEmbeddingModelError(
                f"{path.name} is not an embedding model (its file names no pooling type); choose an embedding "
                "model such as bge-small, nomic-embed or e5"
            )
        if actual == lib.LLAMA_POOLING_TYPE_RANK:
            raise NotAnEmbeddingModelError(f"{path.name} is a reranker, not an embedding model")
        names = {
            lib.LLAMA_POOLING_TYPE_MEAN: "mean",
            lib.LLAMA_POOLING_TYPE_CLS: "cls",
            lib.LLAMA_POOLING_TYPE_LAST: "last",
        }
        self.pooling = names.get(actual, "mean")  # type: ignore[assignment]
        self.is_embedding_model = pooling == "model"
        self.dimensions = int(lib.llama_model_n_embd_out(self._model))
        # An encoder-only graph runs through llama_encode (T5-style encoders); BERT-like models decode.
        self._use_encode = bool(lib.llama_model_has_encoder(self._model)) and not bool(
            lib.llama_model_has_decoder(self._model)
        )
        for token in (lib.llama_vocab_eos(self._vocab), lib.llama_vocab_sep(self._vocab)):
            if token >= 0:
                self._eos_like.add(int(token))
        self._batch = lib.llama_batch_init(self._capacity, 0, 1)
        query, document = prefixes_for(" ".join(filter(None, (info.name, info.basename, path.name))))
        self.query_prefix, self.document_prefix = query, document
        log.info(
            "embedder %s: %d dimensions, %s pooling, %d tokens per text",
            path.name,
            self.dimensions,
            self.pooling,
            self.max_tokens,
        )

    def _new_context(self, lib: Any, pooling: Pooling, threads: int | None) -> Any:
        params = lib.llama_context_default_params()
        params.embeddings = True
        params.pooling_type = {
            "model": lib.LLAMA_POOLING_TYPE_UNSPECIFIED,
            "mean": lib.LLAMA_POOLING_TYPE_MEAN,
            "cls": lib.LLAMA_POOLING_TYPE_CLS,
            "last": lib.LLAMA_POOLING_TYPE_LAST,
        }[pooling]
        params.n_ctx = self._capacity
        params.n_batch = params.n_ubatch = self._capacity  # a non-causal batch must fit one micro-batch
        params.n_seq_max = self._max_sequences
        params.kv_unified = True  # the sequences of a batch share the context, whatever their lengths
        count = threads or max(1, os.cpu_count() or 1)
        params.n_threads = params.n_threads_batch = count
        params.no_perf = True
        ctx = lib.llama_init_from_model(self._model, params)
        if not ctx:
            detail = "; ".join(llama_log.recent_problems(clear=True)[-2:]) or "see the log"
            raise ModelLoadError(f"{self.path.name}: llama.cpp could not create an embedding context: {detail}")
        return ctx

    def close(self) -> None:
        """Free the context and the model (idempotent; the Embedder cannot be used afterwards)."""
        with self._lock:
            lib = llama() if (self._ctx or self._model or self._batch) else None
            if lib is None:
                return
            if self._batch is not None:
                lib.llama_batch_free(self._batch)
                self._batch = None
            if self._ctx:
                lib.llama_free(self._ctx)
            if self._model:
                lib.llama_model_free(self._model)
            self._ctx = self._model = self._vocab = None

    def __enter__(self) -> Embedder:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # ---- tokens --------------------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[int]:
        """The tokens of one text as the model sees it, special tokens ([CLS] ... [SEP], BOS) included."""
        if self._vocab is None:
            raise GenerationError("the embedding model is closed")
        lib = llama()
        data = text.encode("utf-8")
        size = len(data) + 8
        buffer = (lib.llama_token * size)()
        count = lib.llama_tokenize(self._vocab, data, len(data), buffer, size, True, False)
        if count < 0:
            size = -count
            buffer = (lib.llama_token * size)()
            count = lib.llama_tokenize(self._vocab, data, len(data), buffer, size, True, False)
        return list(buffer[:count])

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def _fit(self, tokens: list[int]) -> tuple[list[int], bool]:
        if not tokens:  # a model without BOS gives nothing for "": embed a single space instead
            tokens = self.tokenize(" ") or [0]
        if len(tokens) <= self.max_tokens:
            return tokens, False
        if tokens[-1] in self._eos_like:  # keep the closing [SEP]/EOS the model expects at the end
            return [*tokens[: self.max_tokens - 1], tokens[-1]], True
        return tokens[: self.max_tokens], True

    # ---- embeddings ----------------------------------------------------------------------------------
    def embed(self, texts: Sequence[str], *, purpose: Purpose = None) -> np.ndarray:
        """Unit-length vectors, one row per text (float32, shape (len(texts), dimensions)).

        purpose "query"/"document" adds the instruction prefix the model family was trained with.
        """
        return self.embed_detailed(texts, purpose=purpose).vectors

    def embed_detailed(self, texts: Sequence[str], *, purpose: Purpose = None) -> Embedded:
        prefix = {"query": self.query_prefix, "document": self.document_prefix}.get(purpose or "", "")
        with self._lock:
            if self._ctx is None:
                raise GenerationError("the embedding model is closed")
            fitted = [self._fit(self.tokenize(prefix + text)) for text in texts]
            truncated = [i for i, (_, cut) in enumerate(fitted) if cut]
            if truncated:
                log.info(
                    "%d of %d texts cut to %d tokens for %s",
                    len(truncated),
                    len(texts),
                    self.max_tokens,
                    self.path.name,
                )
            vectors = np.zeros((len(texts), self.dimensions), dtype=np.float32)
            for group in self._batches([tokens for tokens, _ in fitted]):
                self._run(group, [fitted[i][0] for i in group], vectors)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors /= np.where(norms > 0, norms, 1.0)
        return Embedded(vectors=vectors, token_counts=[len(t) for t, _ in fitted], truncated=truncated)

    def _batches(self, token_lists: list[list[int]]) -> list[list[int]]:
        """Indices grouped so each group fits one decode: at most capacity tokens and max_sequences texts."""
        groups: list[list[int]] = []
        current: list[int] = []
        used = 0
        for i, tokens in enumerate(token_lists):
            if current and (used + len(tokens) > self._capacity or len(current) >= self._max_sequences):
                groups.append(current)
                current, used = [], 0
            current.append(i)
            used += len(tokens)
        if current:
            groups.append(current)
        return groups

    def _run(self, indices: list[int], token_lists: list[list[int]], out: np.ndarray) -> None:
        lib = llama()
        batch = self._batch
        n = 0
        for seq, tokens in enumerate(token_lists):
            for pos, token in enumerate(tokens):
                batch.token[n] = token
                batch.pos[n] = pos
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq
                batch.logits[n] = 1  # pooled output needs every token's hidden state
                n += 1
        batch.n_tokens = n
        memory = lib.llama_get_memory(self._ctx)
        if memory:  # earlier batches' cells (a causal model's KV cache) must not leak into this one
            lib.llama_memory_clear(memory, True)
        rc = lib.llama_encode(self._ctx, batch) if self._use_encode else lib.llama_decode(self._ctx, batch)
        if rc != 0:
            raise GenerationError(f"llama.cpp could not compute embeddings (status {rc})")
        for seq, index in enumerate(indices):
            pointer = lib.llama_get_embeddings_seq(self._ctx, seq)
            if not pointer:
                raise GenerationError("llama.cpp returned no pooled embedding (the model has no pooling)")
            out[index] = np.ctypeslib.as_array(
                ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(self.dimensions,)
            )
