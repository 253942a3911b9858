"""LlamaCppEngine: the Engine over llama.cpp's C API (through llama-cpp-python's ctypes bindings).

Why the low-level API and not llama_cpp.Llama: Llama's per-token Python work (numpy logits copies, Python
sampling) costs ~5 % of generation speed; it compiles every embedded chat template at construction, so one
broken template stops a model from loading; and it sizes its buffers from the requested n_ctx while llama.cpp
rounds the context up to a multiple of 256 (n_ctx=100 with a 150-token prompt gave a numpy broadcast error).
Here sampling runs in llama.cpp's C sampler chain and Python only moves one token id per step.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import threading
import time
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from app.core import llama_log, rpc
from app.core.engine import Event, GenerationStats, LoadedModel, ProgressCallback, PromptRequest, TextChunk
from app.core.errors import (
    ConfigError,
    ContextOverflowError,
    EngineBusyError,
    GenerationError,
    GGUFError,
    LoadCancelledError,
    ModelFileMissingError,
    ModelLoadError,
    ModelOutOfMemoryError,
    UnsupportedArchitectureError,
)
from app.core.gguf_info import inspect
from app.core.load_config import AUTO_LAYERS, KV_CACHE_TYPES, LoadConfig
from app.core.native import backend_name, captured_stderr, llama, release_heap, supports_gpu_offload
from app.core.sampling import SamplingSettings
from app.core.speculative import MAX_DRAFT, Drafter, LookupDrafter, SpecPolicy
from app.core.stops import StopMatcher

log = logging.getLogger("hearth.engine")

_ALL_LAYERS = 999_999  # llama.cpp clamps n_gpu_layers to the model's layer count
_OOM_MARKERS = (
    "out of memory",
    "failed to allocate",
    "unable to allocate",
    "cudamalloc",
    "alloc failed",
    "not enough memory",
    "insufficient memory",
    "vk::outofdevicememory",
    "erroroutofdevicememory",
)


def _oom_advice(stage: str, config: LoadConfig) -> str:
    on_gpu = config.n_gpu_layers != 0
    if stage == "context":
        what = f"the context (n_ctx {config.n_ctx or 'of the model'})"
        return f"{what}; {'offload fewer GPU layers or ' if on_gpu else ''}use a smaller context"
    if on_gpu:
        return "the model; offload fewer GPU layers"
    return "the model; close other programs or choose a smaller quantization of it"


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class LlamaCppEngine:
    """One model and one context, used from one worker thread at a time; cancel() from anywhere."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._model_p: Any = None
        self._ctx: Any = None
        self._vocab: Any = None
        self._loaded: LoadedModel | None = None
        self._slots: list[Slot] = []  # one per sequence of the context (LoadConfig.n_parallel)
        self._batch: Any = None  # one llama_batch, reused by every step
        self._interleave_chunk = 32  # prompt tokens per step while other runs stream (adapts to speed)
        self._spec: SpecPolicy | None = None  # speculative decoding (LoadConfig.speculative), per model
        self._step_mark: tuple[float, int, Run] | None = None  # the lone stream's last decode: start, tokens
        self._token_data: Any = None  # candidates array for grammar-constrained sampling (numpy, reused)
        self._draft_model: Any = None  # a ModelDrafter when LoadConfig.draft_model names one
        self._abort_runs: list[Run] = []  # runs whose cancel aborts the decode in flight
        self._space_prefix = False
        self._add_bos = False
        self._bos_text = ""
        self._piece = ctypes.create_string_buffer(256)
        self._progress_cb: Any = None
        self._flash_type = 0
        self._abort_cb: Any = None
        self._no_abort: Any = None
        self._embed_ctx: Any = None  # a second context for embeddings, made on first use (see embed())
        self._embed_limit = 0

    # ---- state -----------------------------------------------------------------------------------
    @property
    def model(self) -> LoadedModel | None:
        return self._loaded

    @property
    def busy(self) -> bool:
        return self._lock.locked() or self.active_runs > 0

    def cancel(self) -> None:
        """Stop every generation and any load in progress as soon as possible (any thread)."""
        self._cancel.set()
        for slot in self._slots:
            run = slot.run
            if run is not None:
                run.cancel.set()

    def _acquire(self, action: str) -> None:
        """Take the engine for load/unload/generate; refused while anything generates."""
        message = f"cannot {action} while a reply is being generated; stop it first"
        if not self._lock.acquire(blocking=False):
            raise EngineBusyError(message)
        if self.active_runs:
            self._lock.release()
            raise EngineBusyError(message)

    # ---- load / unload -----------------------------------------------------------------------------
    def load(
        self, path: Path, config: LoadConfig, progress: ProgressCallback | None = None, *, retry_on_oom: bool = True
    ) -> LoadedModel:
        """Load as the load policy says (app/core/load_policy.py): "auto" GPU layers from the fit estimate,
        and an out-of-memory load retried with fewer layers (retry_on_oom=False: the error carries the
        suggestion). The host resolves the plan itself; this is for direct users (scripts, benchmarks)."""
        from app.core.hardware import detect_hardware
        from app.core.load_policy import load_planned, plan_load

        config.validate()  # before "auto"/"all" are resolved: a bad value must not be silently replaced
        wants_gpu = config.n_gpu_layers != 0 and supports_gpu_offload()
        hardware = detect_hardware(probe_gpus=wants_gpu)
        plan = plan_load(Path(path), config, hardware)
        return load_planned(self, plan, hardware, progress, retry=retry_on_oom).model

    def load_exact(self, path: Path, config: LoadConfig, progress: ProgressCallback | None = None) -> LoadedModel:
        """Load with exactly this config (GPU layers already a number, or -1 for all)."""
        self._acquire("load a model")
        try:
            config.validate()
            if config.n_gpu_layers == AUTO_LAYERS:
                raise ConfigError("resolve auto GPU layers first (app.core.load_policy.plan_load)")
            if config.n_gpu_layers < 0 and not supports_gpu_offload():
                config = replace(config, n_gpu_layers=0)
            return self._load(Path(path), config, progress)
        finally:
            self._lock.release()

    def _load(self, path: Path, config: LoadConfig, progress: ProgressCallback | None) -> LoadedModel:
        if not path.is_file():
            raise ModelFileMissingError(f"{path.name}: file not found ({path})")
        try:
            info = inspect(path)
        except GGUFError as exc:
            raise ModelLoadError(str(exc)) from None
        config.validate(info)
        self._free()
        lib = llama()
        self._cancel.clear()
        llama_log.recent_problems(clear=True)
        started = time.perf_counter()

        def on_progress(fraction: float, _data: Any) -> bool:
            if progress is not None:
                try:
                    progress(float(fraction))
                except Exception:  # a UI callback must never abort a load by accident
                    log.exception("load progress callback failed")
            return not self._cancel.is_set()

        self._progress_cb = lib.llama_progress_callback(on_progress)
        params = lib.llama_model_default_params()
        params.n_gpu_layers = _ALL_LAYERS if config.n_gpu_layers < 0 else config.n_gpu_layers
        params.load_mode = self._load_mode(lib, config)
        params.progress_callback = self._progress_cb
        placement = rpc.place_model(lib, params, config, info)  # RPC workers: devices + layer split, else None
        model = lib.llama_model_load_from_file(str(path).encode("utf-8"), params)
        del placement  # its arrays only had to outlive the load: llama.cpp copied the devices and split
        if not model:
            raise self._load_failure(info.display_name, info.architecture, "model", config)
        try:
            ctx = self._new_context(lib, model, config, path.name)
            self._model_p, self._ctx = model, ctx
            self._apply_loras(lib, config)
        except BaseException:
            if self._ctx is not None:
                lib.llama_free(self._ctx)
            lib.llama_model_free(model)
            self._model_p = self._ctx = None
            raise
        self._vocab = lib.llama_model_get_vocab(model)
        self._add_bos = bool(lib.llama_vocab_get_add_bos(self._vocab))
        bos = lib.llama_vocab_bos(self._vocab)
        self._bos_text = self._token_text(bos, special=True) if bos >= 0 else ""
        probe = self.tokenize("a", add_bos=False)
        self._space_prefix = bool(probe) and self._token_text(probe[0], special=False).startswith(" ")
        self._slots = [Slot(seq) for seq in range(config.n_parallel)]
        self._spec = SpecPolicy() if self._speculation_exact(lib, config) else None
        if config.draft_model:
            self._load_draft_model(lib, info, config)
        self._batch = lib.llama_batch_init(max(config.n_batch, config.n_parallel), 0, config.n_parallel)
        self._abort_cb = lib.ggml_abort_callback(lambda _data: any(r.cancel.is_set() for r in self._abort_runs))
        self._no_abort = lib.ggml_abort_callback(0)
        n_layer = lib.llama_model_n_layer(model)
        wanted = n_layer + 1 if config.n_gpu_layers < 0 else config.n_gpu_layers
        offloaded = min(wanted, n_layer + 1) if supports_gpu_offload() else 0
        self._loaded = LoadedModel(
            path=path,
            info=info,
            config=config,
            n_ctx=lib.llama_n_ctx(self._ctx),
            n_gpu_layers=offloaded,
            backend=backend_name(),
            load_ms=(time.perf_counter() - started) * 1000,
        )
        log.info(
            "loaded %s (n_ctx %d, %d GPU layers) in %.0f ms",
            path.name,
            self._loaded.n_ctx,
            offloaded,
            self._loaded.load_ms,
        )
        return self._loaded

    @staticmethod
    def _load_mode(lib: Any, config: LoadConfig) -> int:
        if config.use_mmap and config.use_mlock:
            return lib.LLAMA_LOAD_MODE_MMAP_MLOCK
        if config.use_mlock:
            return lib.LLAMA_LOAD_MODE_MLOCK
        return lib.LLAMA_LOAD_MODE_MMAP if config.use_mmap else lib.LLAMA_LOAD_MODE_NONE

    def _new_context(self, lib: Any, model: Any, config: LoadConfig, name: str) -> Any:
        params = lib.llama_context_default_params()
        params.n_ctx = config.n_ctx  # 0 = the model's training length
        params.n_batch = config.n_batch
        params.n_ubatch = min(config.n_batch, 512)
        # Several sequences (a chat, API clients, cached conversations) share one KV cache of n_ctx cells, so
        # a lone chat can use the whole context; idle sequences' caches are evicted when cells run out.
        params.n_seq_max = config.n_parallel
        params.kv_unified = True
        params.n_threads = config.threads
        params.n_threads_batch = config.threads_batch
        params.flash_attn_type = self._flash_type = self._flash_attention(lib, config)
        params.type_k = params.type_v = KV_CACHE_TYPES[config.kv_cache_type]
        params.no_perf = True  # Hearth times generations itself
        ctx = lib.llama_init_from_model(model, params)
        if not ctx:
            raise self._load_failure(name, "", "context", config)
        return ctx

    @staticmethod
    def _flash_attention(lib: Any, config: LoadConfig) -> int:
        """Auto means llama.cpp's auto on a GPU, but off on the CPU: there (llama-bench, 2 cores, 1.1B
        Q4_K_M) it roughly halves prompt speed deep into a chat (pp49 @ depth 1325: 37.7 vs 66.8 t/s) and
        slows generation at depth (19.6 vs 24.5 t/s), for a small gain only in a short context."""
        if config.flash_attention is None:
            on_gpu = config.n_gpu_layers != 0 and supports_gpu_offload()
            return lib.LLAMA_FLASH_ATTN_TYPE_AUTO if on_gpu else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        return lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if config.flash_attention else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED

    def _load_draft_model(self, lib: Any, info: Any, config: LoadConfig) -> None:
        """Load the draft model beside the target (on the same device), after checking it can draft for it."""
        from app.core.draft_models import ModelDrafter, can_draft_for

        path = Path(config.draft_model).expanduser()
        try:
            problem = can_draft_for(inspect(path), info)
        except (GGUFError, OSError) as exc:
            problem = f"the draft model is unusable: {exc}"
        if problem:
            self._free()
            raise ConfigError(problem)
        if self._spec is None:
            log.info("draft model %s not used: drafts need flash attention to keep the output exact", path.name)
            return
        layers = _ALL_LAYERS if config.n_gpu_layers != 0 and supports_gpu_offload() else 0
        try:
            self._draft_model = ModelDrafter.load(
                path, lib.llama_n_ctx(self._ctx), config.threads, layers, self._flash_type
            )
        except ConfigError:
            self._free()
            raise

    def _speculation_exact(self, lib: Any, config: LoadConfig) -> bool:
        """Whether drafts can be checked without changing a single token of the output: only with flash
        attention (without it, llama.cpp's attention gives a token in a batch other logits than alone) -
        on explicitly, or llama.cpp's auto on a GPU."""
        if config.speculative == "off":
            return False
        if self._flash_type == lib.LLAMA_FLASH_ATTN_TYPE_ENABLED:
            return True
        return self._flash_type == lib.LLAMA_FLASH_ATTN_TYPE_AUTO and bool(supports_gpu_offload())

    def _apply_loras(self, lib: Any, config: LoadConfig) -> None:
        if not config.loras:
            return
        adapters = []
        for adapter in config.loras:
            handle = lib.llama_adapter_lora_init(self._model_p, str(adapter.path).encode("utf-8"))
            if not handle:
                problems = "; ".join(llama_log.recent_problems(clear=True)[-2:])
                raise ModelLoadError(f"LoRA {adapter.path.name} could not be applied: {problems or 'unknown error'}")
            adapters.append(handle)  # freed together with the model (llama.cpp owns them)
        array = (lib.llama_adapter_lora_p_ctypes * len(adapters))(*adapters)
        scales = (ctypes.c_float * len(adapters))(*[a.scale for a in config.loras])
        if lib.llama_set_adapters_lora(self._ctx, array, len(adapters), scales) != 0:
            raise ModelLoadError("llama.cpp refused the LoRA adapters for this model")

    def _load_failure(self, name: str, arch: str, stage: str, config: LoadConfig) -> ModelLoadError:
        """Turn a NULL from llama.cpp into a typed error, from the reason llama.cpp logged just before."""
        problems = llama_log.recent_problems(clear=True)
        text = " ".join(problems).lower()
        if self._cancel.is_set():
            return LoadCancelledError(f"{name}: loading cancelled")
        if "unknown model architecture" in text or "unknown architecture" in text:
            return UnsupportedArchitectureError(
                f"{name}: this llama.cpp build does not support the '{arch}' architecture; update llama-cpp-python",
                arch,
            )
        if any(marker in text for marker in _OOM_MARKERS):
            return ModelOutOfMemoryError(f"{name}: out of memory while allocating {_oom_advice(stage, config)}")
        detail = problems[-1] if problems else "no reason given (see the log)"
        return ModelLoadError(f"{name}: llama.cpp could not create the {stage}: {detail}")

    def unload(self) -> None:
        self._acquire("unload the model")
        try:
            self._free()
        finally:
            self._lock.release()

    def _free(self) -> None:
        # Using a context after llama_free segfaults; callers hold self._lock, so no generation runs.
        if self._ctx is None and self._model_p is None:
            return
        lib = llama()
        if self._draft_model is not None:
            self._draft_model.close()
            self._draft_model = None
        if self._batch is not None:
            lib.llama_batch_free(self._batch)
            self._batch = None
        if self._embed_ctx is not None:
            lib.llama_free(self._embed_ctx)
            self._embed_ctx = None
        if self._ctx is not None:
            lib.llama_free(self._ctx)
        if self._model_p is not None:
            lib.llama_model_free(self._model_p)  # also frees its LoRA adapters
        self._ctx = self._model_p = self._vocab = None
        self._loaded = None
        self._slots = []
        release_heap()
        log.info("model unloaded")

    # ---- tokens --------------------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_bos: bool | None = None) -> list[int]:
        if self._vocab is None:
            raise GenerationError("no model is loaded")
        lib = llama()
        if add_bos is None:  # the double-BOS guard: templates often write the BOS text themselves
            add_bos = self._add_bos and not (self._bos_text and text.startswith(self._bos_text))
        data = text.encode("utf-8")
        size = len(data) + 8
        buffer = (lib.llama_token * size)()
        count = lib.llama_tokenize(self._vocab, data, len(data), buffer, size, add_bos, True)
        if count < 0:
            size = -count
            buffer = (lib.llama_token * size)()
            count = lib.llama_tokenize(self._vocab, data, len(data), buffer, size, add_bos, True)
        return list(buffer[:count])

    def _token_bytes(self, token: int, special: bool) -> bytes:
        lib = llama()
        n = lib.llama_token_to_piece(self._vocab, token, self._piece, len(self._piece), 0, special)
        if n < 0:
            self._piece = ctypes.create_string_buffer(-n)
            n = lib.llama_token_to_piece(self._vocab, token, self._piece, len(self._piece), 0, special)
        return self._piece.raw[:n]

    def _token_text(self, token: int, special: bool) -> str:
        return self._token_bytes(token, special).decode("utf-8", errors="replace")

    # ---- embeddings ------------------------------------------------------------------------------------
    def embed(self, inputs: Sequence[str | Sequence[int]]) -> list[tuple[list[float], int]]:
        """Mean-pooled, unit-length embeddings of the loaded model, one per input (a text or token ids),
        each with its token count. Runs on the thread that owns the engine while nothing generates.

        A second llama.cpp context with embeddings on shares the loaded weights; it is made on first use and
        freed with the model. llama.cpp computes the output head for every token of an embeddings batch
        (a logits buffer of n_vocab floats per token: 1 GiB for 1,024 tokens of a 262k vocabulary), so a
        text goes through in chunks; llama.cpp's mean pooling averages each chunk, and the chunks' means
        weighted by their token counts are the mean over the whole text (the KV cache carries the causal
        context from chunk to chunk)."""
        if self._model_p is None or self._loaded is None:
            raise GenerationError("no model is loaded")
        lib = llama()
        if self._embed_ctx is None:
            self._embed_ctx = self._new_embedding_context(lib)
        token_lists = [self.tokenize(item) if isinstance(item, str) else list(item) for item in inputs]
        n_vocab = lib.llama_vocab_n_tokens(self._vocab)
        for index, tokens in enumerate(token_lists):
            if len(tokens) > self._embed_limit:
                raise ContextOverflowError(
                    f"input {index} is {len(tokens)} tokens but embeddings take at most {self._embed_limit}; shorten it"
                )
            if not tokens:
                raise ConfigError(f"input {index} is empty")
            if any(not 0 <= t < n_vocab for t in tokens):
                raise ConfigError(f"input {index} has a token id outside the vocabulary (0 to {n_vocab - 1})")
        return [(self._embed_one(lib, tokens), len(tokens)) for tokens in token_lists]

    _EMBED_CHUNK = 64  # tokens per decode: bounds the logits buffer llama.cpp fills (see embed())

    def _new_embedding_context(self, lib: Any) -> Any:
        assert self._loaded is not None
        config = self._loaded.config
        params = lib.llama_context_default_params()
        self._embed_limit = min(self._loaded.n_ctx, 8192)
        params.n_ctx = self._embed_limit
        params.n_batch = params.n_ubatch = self._EMBED_CHUNK
        params.n_seq_max = 1
        params.embeddings = True
        params.pooling_type = lib.LLAMA_POOLING_TYPE_MEAN
        params.n_threads = config.threads
        params.n_threads_batch = config.threads_batch
        params.flash_attn_type = self._flash_attention(lib, config)
        params.no_perf = True
        ctx = lib.llama_init_from_model(self._model_p, params)
        if not ctx:
            problems = "; ".join(llama_log.recent_problems(clear=True)[-2:])
            raise GenerationError(f"llama.cpp could not create an embeddings context: {problems or 'see the log'}")
        return ctx

    def _embed_one(self, lib: Any, tokens: list[int]) -> list[float]:
        import numpy as np

        ctx = self._embed_ctx
        lib.llama_memory_clear(lib.llama_get_memory(ctx), True)
        dims = lib.llama_model_n_embd(self._model_p)
        total = np.zeros(dims, dtype=np.float64)
        batch = lib.llama_batch_init(self._EMBED_CHUNK, 0, 1)
        try:
            for start in range(0, len(tokens), self._EMBED_CHUNK):
                chunk = tokens[start : start + self._EMBED_CHUNK]
                for i, token in enumerate(chunk):
                    self._batch_add(batch, i, token, start + i, 0, True)
                batch.n_tokens = len(chunk)
                rc = lib.llama_decode(ctx, batch)
                if rc != 0:
                    raise GenerationError(f"llama.cpp could not compute the embedding ({self._decode_error(rc)})")
                pooled = lib.llama_get_embeddings_seq(ctx, 0)
                if not pooled:
                    raise GenerationError("llama.cpp returned no pooled embedding")
                total += np.ctypeslib.as_array(pooled, shape=(dims,)) * len(chunk)
        finally:
            lib.llama_batch_free(batch)
        norm = float(np.linalg.norm(total)) or 1.0
        return [float(v) for v in total / norm]

    # ---- generation --------------------------------------------------------------------------------
    def generate(self, request: PromptRequest, *, key: Hashable = None) -> Iterator[Event]:
        """Stream one reply (the simple way: the caller is the only user of the engine meanwhile). Closing
        the iterator early stops the reply and frees its sequence."""
        self._acquire("start another reply")
        run: Run | None = None
        try:
            self._cancel.clear()
            run = self.begin(request, key=key, cancel=self._cancel)
            while not run.done:
                self.step([run])
                yield from run.take_events()
            yield from run.take_events()
        finally:
            if run is not None and not run.done:
                self.release(run)
            self._lock.release()

    def begin(self, request: PromptRequest, *, key: Hashable = None, cancel: threading.Event | None = None) -> Run:
        """Start a generation on a free sequence; step() advances it. Raises GenerationError (no model, all
        sequences busy), ContextOverflowError (the prompt does not fit), ConfigError (bad sampling/grammar).

        key names the conversation or client: its own sequence (and its cached tokens) is used again when
        free; otherwise the free sequence whose cache shares the longest prefix with the prompt."""
        if self._ctx is None or self._loaded is None:
            raise GenerationError("no model is loaded")
        request.sampling.validate()
        started = time.perf_counter()
        slot = self._choose_slot(request.text, key)
        tokens = self._prompt_tokens(slot, request.text)
        n_ctx = self._loaded.n_ctx
        if len(tokens) >= n_ctx:
            raise ContextOverflowError(
                f"the prompt is {len(tokens)} tokens but the context holds {n_ctx}; shorten it or load the "
                "model with a larger context"
            )
        seed = self._seed(request.sampling)
        chain, grammar_sampler = self._sampler_chain(request.sampling, request.grammar, seed)
        slot.key, slot.last_used = key, time.monotonic()
        slot.last_text, slot.prompt_ids, slot.reply_ids, slot.reply_pieces, slot.reply_shown = (
            request.text,
            tokens,
            [],
            [],
            0,
        )
        prefix = self._reuse_prefix(slot, tokens)
        budget = min(request.sampling.max_tokens, n_ctx - len(tokens))
        run = Run(request, slot, tokens, prefix, chain, budget, cancel or threading.Event(), started, seed)
        run.grammar = grammar_sampler
        if self._spec is not None:
            run.drafter = self._draft_model if self._draft_model is not None else slot.drafter
        slot.run = run
        if budget <= 0:
            self._finish(run, "length")
        return run

    def step(self, runs: Sequence[Run]) -> None:
        """Advance every unfinished run by one token (and evaluate prompt chunks) in one llama_decode.

        Prompts are evaluated in chunks between the other runs' tokens, so a long prompt never freezes the
        streams beside it. New events land in each run's .events (take them with run.take_events())."""
        lib = llama()
        live = [r for r in runs if not r.done]
        for run in live:
            if run.cancel.is_set():
                self._finish(run, "cancelled")
            elif run.state == "sample":
                self._sample(lib, run)
        live = [r for r in live if not r.done]
        if live:
            try:
                self._decode_step(lib, live)
            except Exception as exc:  # a stream always ends with stats, never with a crash
                log.exception("generation step failed")
                for run in live:
                    if not run.done:
                        self._drop_uncached(lib, run.slot)
                        self._finish(run, "error", f"{type(exc).__name__}: {exc}")

    def release(self, run: Run) -> None:
        """Forget a run that will not be stepped again (finished or abandoned): frees its sampler."""
        if not run.done:
            self._drop_uncached(llama(), run.slot)
            self._finish(run, "cancelled")

    def _seed(self, sampling: SamplingSettings) -> int:
        """The reply's seed: the sampling settings' fixed seed, else the load config's, else a fresh one."""
        fixed = self._loaded.config.seed if self._loaded is not None else None
        if sampling.seed is None and fixed is not None:
            return fixed
        return sampling.request_seed()

    # ---- sequences and their caches ----------------------------------------------------------------------
    @property
    def active_runs(self) -> int:
        return sum(1 for slot in self._slots if slot.run is not None)

    @property
    def free_slots(self) -> int:
        return sum(1 for slot in self._slots if slot.run is None)

    def context_used_by(self, key: Hashable) -> int:
        """Tokens held for this conversation or client (for the status bar's 'context used')."""
        return next((len(s.tokens) for s in self._slots if s.key == key and key is not None), 0)

    @property
    def spec(self) -> SpecPolicy | None:
        """The speculative-decoding policy of the loaded model (None: speculation off)."""
        return self._spec

    @spec.setter
    def spec(self, policy: SpecPolicy | None) -> None:
        self._spec = policy

    @property
    def context_used(self) -> int:
        """Tokens held for the most recently used sequence."""
        recent = max(self._slots, key=lambda s: s.last_used, default=None)
        return len(recent.tokens) if recent is not None else 0

    def forget(self, key: Hashable) -> None:
        """Drop a conversation's cached tokens (it was deleted, or its cache would only be in the way)."""
        lib = llama()
        for slot in self._slots:
            if slot.key == key and slot.run is None:
                self._clear_slot(lib, slot)

    def _choose_slot(self, text: str, key: Hashable) -> Slot:
        free = [s for s in self._slots if s.run is None]
        if not free:
            raise EngineBusyError(f"all {len(self._slots)} sequences are generating; wait for one to finish")
        if key is not None:
            own = next((s for s in free if s.key == key), None)
            if own is not None:
                return own
        if len(free) == 1:
            return free[0]
        tokens = self.tokenize(text)

        def score(slot: Slot) -> tuple[int, bool, bool, float]:
            # Another conversation's cache is taken over only when most of it is this prompt's start (an
            # edited copy, a shared system prompt); else empty sequences, then the one used longest ago.
            prefix = common_prefix(slot.tokens, tokens)
            someone_elses = slot.key is not None and slot.key != key and prefix * 2 < len(slot.tokens)
            return (0 if someone_elses else prefix, not someone_elses, not slot.tokens, -slot.last_used)

        return max(free, key=score)

    def _reuse_prefix(self, slot: Slot, tokens: list[int]) -> int:
        """Keep the cached tokens the prompt starts with; returns where evaluation resumes."""
        lib = llama()
        prefix = common_prefix(slot.tokens, tokens)
        if prefix == len(tokens):
            prefix -= 1  # the last prompt token must be decoded again to get fresh logits
        if prefix < len(slot.tokens):
            memory = lib.llama_get_memory(self._ctx)
            if not lib.llama_memory_seq_rm(memory, slot.seq, prefix, -1):  # e.g. recurrent models: start over
                lib.llama_memory_seq_rm(memory, slot.seq, 0, -1)
                prefix = 0
            del slot.tokens[prefix:]
            slot.drafter.rewind(prefix)
        return prefix

    def _clear_slot(self, lib: Any, slot: Slot) -> None:
        lib.llama_memory_seq_rm(lib.llama_get_memory(self._ctx), slot.seq, 0, -1)
        slot.tokens = []
        slot.drafter = LookupDrafter()
        slot.key = None
        slot.last_text, slot.prompt_ids, slot.reply_ids, slot.reply_pieces, slot.reply_shown = "", [], [], [], 0

    def _make_room(self, lib: Any, needed: int, keep: set[int]) -> bool:
        """Evict idle sequences' caches (least recently used first) until `needed` more cells fit in the
        shared KV cache; False when only the sequences of running generations are left."""
        n_ctx = self._loaded.n_ctx if self._loaded else 0
        used = sum(len(s.tokens) for s in self._slots)
        if used + needed <= n_ctx:
            return True  # every step asks: keep the common case to one sum
        for slot in sorted(self._slots, key=lambda s: s.last_used):
            if used + needed <= n_ctx:
                return True
            if slot.run is None and slot.seq not in keep and slot.tokens:
                log.debug("evicting the cache of sequence %d (%d tokens)", slot.seq, len(slot.tokens))
                used -= len(slot.tokens)
                self._clear_slot(lib, slot)
        return used + needed <= n_ctx

    def count_tokens(self, text: str, *, key: Hashable = None) -> int:
        return len(self.prompt_tokens(text, key=key))

    def prompt_tokens(self, text: str, *, key: Hashable = None) -> list[int]:
        """The tokens a generation with this key would put in the context for this prompt text."""
        if self._vocab is None:
            raise GenerationError("no model is loaded")
        slot = next((s for s in self._slots if key is not None and s.key == key), None)
        if slot is None and key is None:
            slot = max(self._slots, key=lambda s: s.last_used, default=None)
        return self._prompt_tokens(slot, text) if slot is not None else self.tokenize(text)

    def _prompt_tokens(self, slot: Slot, text: str) -> list[int]:
        """The tokens for this prompt text on this sequence.

        A chat's next turn continues the previous prompt and the model's own reply: those tokens are
        reused as they are (a fresh tokenization may split the reply differently, which would throw the
        KV cache away from the reply onwards). Only the reply text that was shown is reused, so a token
        that began a stop string never stands in for the template's own turn marker. Otherwise (a new
        conversation, an edited message) it is a plain tokenization.
        """
        last = slot.last_text
        if not last or not text.startswith(last):
            return self.tokenize(text)
        rest = text[len(last) :]
        kept, used = 0, 0
        for piece in slot.reply_pieces:  # whole characters (the incremental decoder's output per token)
            if piece is None or used + len(piece) > slot.reply_shown or not rest.startswith(piece, used):
                break
            used += len(piece)
            kept += 1
        remainder = rest[used:]
        tail = self.tokenize(remainder, add_bos=False) if remainder else []
        if tail and self._space_prefix and not llama().llama_vocab_is_control(self._vocab, tail[0]):
            # SentencePiece would prefix a space to text tokenized on its own: only split before a
            # special token (the template's turn markers), where both ways tokenize the same.
            return self.tokenize(text)
        return slot.prompt_ids + slot.reply_ids[:kept] + tail

    # ---- sequence state (conversations that reopen instantly) --------------------------------------------
    def cache_identity(self) -> dict[str, Any]:
        """What a saved sequence state depends on: the model file and the settings that shape its KV cache.
        A state saved under another identity is never restored (llama.cpp might accept it and answer wrong)."""
        loaded = self._loaded
        if loaded is None:
            raise GenerationError("no model is loaded")
        stat = loaded.path.stat()
        config = loaded.config
        return {
            "model": str(loaded.path.resolve()),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "n_ctx": loaded.n_ctx,
            "kv_cache_type": config.kv_cache_type,
            "flash_attention": self._flash_type,
            "loras": [[str(a.path.resolve()), a.scale] for a in config.loras],
        }

    def export_sequence(self, key: Hashable) -> SequenceState | None:
        """The KV cache of key's idle sequence and the tokens it holds; None when it holds nothing."""
        slot = next((s for s in self._slots if key is not None and s.key == key and s.run is None), None)
        if slot is None or not slot.tokens or self._ctx is None:
            return None
        lib = llama()
        size = lib.llama_state_seq_get_size(self._ctx, slot.seq)
        buffer = (ctypes.c_uint8 * size)()
        written = lib.llama_state_seq_get_data(self._ctx, buffer, size, slot.seq)
        if written == 0:
            return None
        return SequenceState(
            tokens=list(slot.tokens),
            data=bytes(buffer)[:written],
            last_text=slot.last_text,
            prompt_ids=list(slot.prompt_ids),
            reply_ids=list(slot.reply_ids),
            reply_pieces=list(slot.reply_pieces),
            reply_shown=slot.reply_shown,
        )

    def import_sequence(self, key: Hashable, state: SequenceState) -> bool:
        """Put a saved sequence back into a free sequence for key; False when llama.cpp refuses it (the
        sequence is then left empty, as if nothing had been saved)."""
        if self._ctx is None or not state.tokens:
            return False
        free = [s for s in self._slots if s.run is None]
        if not free:
            return False
        slot = next((s for s in free if s.key == key), None) or min(free, key=lambda s: (bool(s.tokens), s.last_used))
        lib = llama()
        if not self._make_room(lib, len(state.tokens), {slot.seq}):
            return False
        self._clear_slot(lib, slot)
        buffer = (ctypes.c_uint8 * len(state.data)).from_buffer_copy(state.data)
        if lib.llama_state_seq_set_data(self._ctx, buffer, len(state.data), slot.seq) == 0:
            self._clear_slot(lib, slot)
            return False
        slot.tokens = list(state.tokens)
        slot.drafter = LookupDrafter()
        slot.key, slot.last_used = key, time.monotonic()
        slot.last_text, slot.prompt_ids, slot.reply_ids = state.last_text, list(state.prompt_ids), list(state.reply_ids)
        slot.reply_pieces, slot.reply_shown = list(state.reply_pieces), state.reply_shown
        return True

    def cached_keys(self) -> list[Hashable]:
        """The conversations and clients whose tokens are cached now."""
        return [s.key for s in self._slots if s.key is not None and s.tokens]

    # ---- one step -----------------------------------------------------------------------------------------
    def _sample(self, lib: Any, run: Run) -> None:
        """Choose the next token of a run whose logits are ready; finish it at a stop or the budget. After a
        speculative decode, check the drafts in order: each kept while it is what the model samples."""
        drafts, run.drafts = run.drafts, []
        base = len(run.slot.tokens) - len(drafts)  # the position of the first draft
        accepted = 0
        for index in range(len(drafts) + 1):
            token = self._sample_token(lib, run, run.logits_index + index)
            if not self._take(lib, run, token):
                break
            if index < len(drafts) and token == drafts[index]:
                accepted += 1
                continue
            run.pending, run.state = token, "decode"
            break
        if drafts:
            run.drafted += len(drafts)
            run.accepted += accepted
            if self._spec is not None:
                self._spec.observe_drafts(run.slot.key, len(drafts), accepted)
            kept = base + accepted
            if kept < len(run.slot.tokens):  # the rejected drafts leave the KV cache
                lib.llama_memory_seq_rm(lib.llama_get_memory(self._ctx), run.slot.seq, kept, -1)
                del run.slot.tokens[kept:]
            if run.drafter is not None:
                run.drafter.rewind(len(run.slot.tokens))

    def _sample_token(self, lib: Any, run: Run, index: int) -> int:
        """Sample at a batch position. With a grammar, as llama.cpp's own sampler does: sample without it,
        and only if the grammar refuses that token, constrain every token and sample again. Checking one
        token instead of the whole vocabulary each step makes JSON and tool calls several times faster on
        a 262k-token vocabulary (the grammar is the slow part), and a greedy pick is the same either way."""
        if run.grammar is None:
            return int(lib.llama_sampler_sample(run.chain, self._ctx, index))
        array = self._candidates(lib, index)
        lib.llama_sampler_apply(run.chain, ctypes.byref(array))
        token = int(array.data[array.selected].id)
        single = (lib.llama_token_data * 1)(lib.llama_token_data(token, 1.0, 0.0))
        check = lib.llama_token_data_array(single, 1, -1, False)
        lib.llama_sampler_apply(run.grammar, ctypes.byref(check))
        if single[0].logit == float("-inf"):
            array = self._candidates(lib, index)
            lib.llama_sampler_apply(run.grammar, ctypes.byref(array))
            lib.llama_sampler_apply(run.chain, ctypes.byref(array))
            token = int(array.data[array.selected].id)
        lib.llama_sampler_accept(run.grammar, token)
        lib.llama_sampler_accept(run.chain, token)
        return token

    def _candidates(self, lib: Any, index: int) -> Any:
        """Every token with its logit at a batch position, as llama.cpp's samplers take them (numpy fills
        the array, kept in self._token_data: a Python loop over a 262k vocabulary would cost more than the
        grammar saves)."""
        import numpy as np

        n_vocab = lib.llama_vocab_n_tokens(self._vocab)
        if self._token_data is None or len(self._token_data) != n_vocab:
            dtype = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
            self._token_data = np.zeros(n_vocab, dtype=dtype)
        data = self._token_data
        data["id"] = np.arange(n_vocab, dtype=np.int32)  # samplers reorder the array in place
        data["logit"] = np.ctypeslib.as_array(lib.llama_get_logits_ith(self._ctx, index), shape=(n_vocab,))
        data["p"] = 0.0
        pointer = data.ctypes.data_as(ctypes.POINTER(lib.llama_token_data))
        return lib.llama_token_data_array(pointer, n_vocab, -1, False)

    def _take(self, lib: Any, run: Run, token: int) -> bool:
        """Account for one sampled token: show its text, end the run at a stop or the budget. True when the
        run goes on (the token is to be decoded next)."""
        run.generated += 1
        if run.first_token is None:
            run.first_token = time.perf_counter()
        vocab = self._vocab
        if lib.llama_vocab_is_eog(vocab, token):
            self._finish(run, "stop")
            return False
        text: str | None
        if lib.llama_vocab_is_control(vocab, token):  # never shown; a stop only if it spells one
            if self._token_text(token, special=True) in run.request.stop:
                self._finish(run, "stop")
                return False
            text = None
        else:
            text = run.decoder.decode(self._token_bytes(token, special=False))
        run.slot.reply_ids.append(token)
        run.slot.reply_pieces.append(text)
        if text:
            safe, hit = run.matcher.feed(text)
            if safe:
                run.slot.reply_shown += len(safe)
                run.events.append(TextChunk(safe))
            if hit:
                self._finish(run, "stop")
                return False
        if run.generated >= run.budget:  # the last token is not decoded: nothing would read its logits
            self._finish(run, "length")
            return False
        return True

    def _draft(self, run: Run, capacity: int) -> list[int]:
        """Draft tokens to verify with this run's pending token, as many as the policy expects to pay."""
        if run.drafter is None or self._spec is None:
            return []
        room = min(
            capacity - 1,
            run.budget - run.generated,
            (self._loaded.n_ctx if self._loaded else 0) - len(run.slot.tokens) - 2,
        )
        started = time.perf_counter()
        proposal = run.drafter.propose(run.slot.tokens, run.pending, max(0, min(room, MAX_DRAFT)))
        if proposal and run.drafter is self._draft_model:
            self._spec.observe_draft((time.perf_counter() - started) * 1000 / len(proposal))
        length = self._spec.best_length(run.slot.key, len(proposal))
        return proposal[:length]

    def _decode_step(self, lib: Any, live: list[Run]) -> None:
        batch = self._batch
        n = 0
        streaming = [r for r in live if r.state == "decode"]
        capacity = self._loaded.config.n_batch if self._loaded else 512
        alone = len(live) == 1 and len(streaming) == 1  # speculation only for a lone stream
        self._time_last_step(streaming[0] if alone else None)
        for run in streaming:
            self._batch_add(batch, n, run.pending, len(run.slot.tokens), run.slot.seq, True)
            run.logits_index = n
            n += 1
            if alone:
                run.drafts = self._draft(run, capacity)
                for i, token in enumerate(run.drafts, 1):
                    self._batch_add(batch, n, token, len(run.slot.tokens) + i, run.slot.seq, True)
                    n += 1
        # While others stream, a prompt gets small chunks so no stream waits long for its next token.
        chunk = max(8, self._interleave_chunk) if streaming else capacity
        prompting: list[tuple[Run, int]] = []
        for run in live:
            if run.state != "prompt" or n >= capacity:
                continue
            take = min(chunk, capacity - n, len(run.tokens) - run.next_prompt)
            base = run.next_prompt
            for i in range(take):
                last = base + i == len(run.tokens) - 1
                self._batch_add(batch, n, run.tokens[base + i], base + i, run.slot.seq, last)
                if last:
                    run.logits_index = n
                n += 1
            prompting.append((run, take))
        if n == 0:
            return
        batch.n_tokens = n
        keep = {r.slot.seq for r in live}
        if not self._make_room(lib, n, keep):
            victim = max(live, key=lambda r: len(r.slot.tokens))
            self._finish(
                victim, "error", "the context is full; start a new chat or load the model with a larger context"
            )
            return
        abortable = any(take > 8 for _, take in prompting)
        if abortable:  # called per graph node: only while a prompt chunk makes the decode long
            self._abort_runs = [r for r, _ in prompting]
            lib.llama_set_abort_callback(self._ctx, self._abort_cb, None)
        started = time.perf_counter()
        try:
            rc = lib.llama_decode(self._ctx, batch)
        finally:
            if abortable:
                lib.llama_set_abort_callback(self._ctx, self._no_abort, None)
                self._abort_runs = []
        elapsed = time.perf_counter() - started
        if rc != 0:
            for run in streaming:
                run.drafts = []
            self._decode_failed(lib, live, rc)
            return
        if alone and self._spec is not None:
            self._step_mark = (started, n, streaming[0])
        if prompting and streaming:  # aim at ~0.2 s per step while others stream
            per_token = elapsed / n
            self._interleave_chunk = int(min(capacity, max(8, 0.2 / max(per_token, 1e-6))))
        now = time.perf_counter()
        for run in streaming:
            run.slot.tokens.append(run.pending)
            run.slot.tokens.extend(run.drafts)  # tentatively: _sample keeps the accepted ones
            run.state = "sample"
        for run, take in prompting:
            run.slot.tokens.extend(run.tokens[run.next_prompt : run.next_prompt + take])
            run.next_prompt += take
            run.evaluated += take
            if run.next_prompt >= len(run.tokens):
                run.prompt_done = now
                run.state = "sample"

    def _time_last_step(self, run: Run | None) -> None:
        """Tell the speculation policy what the lone stream's last step cost: from its decode to this next
        step, so sampling each checked position (a 262k-token vocabulary makes that a real share), the
        events and the host's own work count too. Timing llama_decode alone made a batch of 3 look cheaper
        than it is, and drafting ran where it slowed replies down."""
        mark, self._step_mark = self._step_mark, None
        if mark is not None and run is mark[2] and self._spec is not None:
            started, n, _ = mark
            self._spec.observe_step(n, (time.perf_counter() - started) * 1000)

    def _decode_failed(self, lib: Any, live: list[Run], rc: int) -> None:
        """After a failed or aborted decode: the caches hold exactly what was decoded before, the cancelled
        runs end, and the others are tried again on the next step (or end with the error)."""
        for run in live:
            self._drop_uncached(lib, run.slot)
        for run in live:
            if run.cancel.is_set():
                self._finish(run, "cancelled")
            elif rc == 2:
                continue  # aborted for another run's sake: this one goes on next step
            elif rc == 1 and self._make_room(lib, len(self._slots) * 8, {r.slot.seq for r in live}):
                continue  # freed cells from idle sequences: try again
            else:
                self._finish(run, "error", self._decode_error(rc))

    @staticmethod
    def _batch_add(batch: Any, i: int, token: int, pos: int, seq: int, logits: bool) -> None:
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = logits

    def _drop_uncached(self, lib: Any, slot: Slot) -> None:
        """Make the KV cache hold exactly slot.tokens for its sequence again."""
        memory = lib.llama_get_memory(self._ctx)
        if not lib.llama_memory_seq_rm(memory, slot.seq, len(slot.tokens), -1):
            lib.llama_memory_seq_rm(memory, slot.seq, 0, -1)
            slot.tokens = []
        slot.drafter.rewind(len(slot.tokens))

    @staticmethod
    def _decode_error(rc: int) -> str:
        if rc == 1:
            return "the context is full (no KV cache slot left)"
        return f"llama_decode failed with status {rc}"

    def _finish(self, run: Run, reason: str, error: str | None = None) -> None:
        """End a run: release the text held back, free its sampler and sequence, append its stats."""
        if run.done:
            return
        run.finished = time.perf_counter()
        run.finish, run.error = reason, error
        if reason != "stop":  # text held back as a possible stop prefix was real output after all
            unfinished = run.decoder.decode(b"", final=True)  # a last token that ended mid-character
            if unfinished and run.slot.reply_pieces:
                run.slot.reply_pieces[-1] = (run.slot.reply_pieces[-1] or "") + unfinished
            tail = run.matcher.flush() + unfinished
            if tail:
                run.slot.reply_shown += len(tail)
                run.events.append(TextChunk(tail))
        lib = llama()
        lib.llama_sampler_free(run.chain)
        run.chain = None
        if run.grammar is not None:
            lib.llama_sampler_free(run.grammar)
            run.grammar = None
        run.slot.run = None
        run.slot.last_used = time.monotonic()
        run.done = True
        run.events.append(run.stats())

    def _sampler_chain(self, sampling: SamplingSettings, grammar: str | None, seed: int) -> tuple[Any, Any]:
        """The sampler chain for these settings, and the grammar sampler (None without a grammar)."""
        lib = llama()
        grammar_sampler = None
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        add = lib.llama_sampler_chain_add
        n_vocab = lib.llama_vocab_n_tokens(self._vocab)
        if grammar:
            # llama.cpp's grammar parser prints its reason straight to stderr: catch it for the message.
            with captured_stderr() as reason:
                sampler = lib.llama_sampler_init_grammar(self._vocab, grammar.encode("utf-8"), b"root")
            if not sampler:
                lib.llama_sampler_free(chain)
                detail = next((line for line in reason.text.splitlines() if "error" in line), "").strip()
                raise ConfigError(f"invalid grammar: {detail or 'llama.cpp could not parse it'}")
            grammar_sampler = sampler  # kept out of the chain: see _sample_token
        penalize = sampling.repeat_penalty != 1.0 or sampling.presence_penalty or sampling.frequency_penalty
        if penalize:
            last_n = self._loaded.n_ctx if self._loaded and sampling.repeat_last_n < 0 else sampling.repeat_last_n
            add(
                chain,
                lib.llama_sampler_init_penalties(
                    n_vocab,
                    last_n,
                    sampling.repeat_penalty,
                    sampling.frequency_penalty,
                    sampling.presence_penalty,
                ),
            )
        if sampling.logit_bias:
            biases = (lib.llama_logit_bias * len(sampling.logit_bias))(
                *[lib.llama_logit_bias(token, bias) for token, bias in sampling.logit_bias]
            )
            add(chain, lib.llama_sampler_init_logit_bias(n_vocab, len(sampling.logit_bias), biases))
        if sampling.temperature <= 0:
            add(chain, lib.llama_sampler_init_greedy())
            return chain, grammar_sampler
        if sampling.mirostat == 1:
            add(chain, lib.llama_sampler_init_temp(sampling.temperature))
            add(
                chain,
                lib.llama_sampler_init_mirostat(n_vocab, seed, sampling.mirostat_tau, sampling.mirostat_eta, 100),
            )
            return chain, grammar_sampler
        if sampling.mirostat == 2:
            add(chain, lib.llama_sampler_init_temp(sampling.temperature))
            add(chain, lib.llama_sampler_init_mirostat_v2(seed, sampling.mirostat_tau, sampling.mirostat_eta))
            return chain, grammar_sampler
        if sampling.top_k > 0:
            add(chain, lib.llama_sampler_init_top_k(sampling.top_k))
        if sampling.typical_p < 1.0:
            add(chain, lib.llama_sampler_init_typical(sampling.typical_p, 1))
        if sampling.top_p < 1.0:
            add(chain, lib.llama_sampler_init_top_p(sampling.top_p, 1))
        if sampling.min_p > 0.0:
            add(chain, lib.llama_sampler_init_min_p(sampling.min_p, 1))
        add(chain, lib.llama_sampler_init_temp(sampling.temperature))
        add(chain, lib.llama_sampler_init_dist(seed))
        return chain, grammar_sampler

    def __del__(self) -> None:  # a dropped engine must not leak a multi-GB model
        try:
            if not self._lock.locked():
                self._free()
        except Exception:
            pass


@dataclass(eq=False)
class Slot:
    """One sequence of the context: the tokens its KV cache holds and what produced them."""

    seq: int
    tokens: list[int] = field(default_factory=list)
    key: Hashable = None  # the conversation or client it belongs to
    last_used: float = 0.0
    run: Run | None = None
    drafter: LookupDrafter = field(default_factory=LookupDrafter)  # drafts from this sequence's own tokens
    # The last request's text and tokens, and the tokens generated after it with the text each added: lets
    # the next turn reuse the model's own reply tokens (see LlamaCppEngine._prompt_tokens).
    last_text: str = ""
    prompt_ids: list[int] = field(default_factory=list)
    reply_ids: list[int] = field(default_factory=list)
    reply_pieces: list[str | None] = field(default_factory=list)  # None: a control token
    reply_shown: int = 0  # characters of the reply actually streamed (a stop's start is held back)


@dataclass(frozen=True)
class SequenceState:
    """A sequence's KV cache as llama.cpp exports it, with the tokens it holds and what lets the next turn
    reuse the model's own reply tokens (app/core/kv_state.py writes these to files)."""

    tokens: list[int]
    data: bytes
    last_text: str = ""
    prompt_ids: list[int] = field(default_factory=list)
    reply_ids: list[int] = field(default_factory=list)
    reply_pieces: list[str | None] = field(default_factory=list)
    reply_shown: int = 0


class Run:
    """One generation in progress on one sequence: prompt, sampler, stop matcher, counters and the events
    produced so far. Owned by the thread that steps the engine; cancel may be set from anywhere."""

    def __init__(
        self,
        request: PromptRequest,
        slot: Slot,
        tokens: list[int],
        prefix: int,
        chain: Any,
        budget: int,
        cancel: threading.Event,
        started: float,
        seed: int,
    ) -> None:
        self.request = request
        self.slot = slot
        self.tokens = tokens
        self.next_prompt = prefix  # the first prompt token not yet in the KV cache
        self.chain = chain
        self.budget = budget
        self.cancel = cancel
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.matcher = StopMatcher(request.stop)
        self.state = "prompt"  # -> "sample" (logits ready) <-> "decode" (a sampled token to decode)
        self.pending = 0
        self.logits_index = -1
        self.grammar: Any = None  # the grammar sampler, outside the chain (LlamaCppEngine._sample_token)
        self.drafter: Drafter | None = None
        self.drafts: list[int] = []  # drafted tokens decoded with the pending one, to be checked
        self.drafted = 0
        self.accepted = 0
        self.events: list[Event] = []
        self.done = False
        self.started = started
        self.seed = seed
        self.evaluated = 0
        self.generated = 0
        self.prompt_done: float | None = None
        self.first_token: float | None = None
        self.finished: float | None = None
        self.finish: str | None = None
        self.error: str | None = None

    def take_events(self) -> list[Event]:
        events, self.events = self.events, []
        return events

    def stats(self) -> GenerationStats:
        end = self.finished or time.perf_counter()
        prompt_s = ((self.prompt_done or end) - self.started) or 1e-9
        gen_s = end - self.first_token if self.first_token else 0.0
        return GenerationStats(
            finish_reason=self.finish or "error",  # type: ignore[arg-type]
            prompt_tokens=len(self.tokens),
            evaluated_tokens=self.evaluated,
            generated_tokens=self.generated,
            ttft_ms=((self.first_token or end) - self.started) * 1000,
            prompt_tps=self.evaluated / prompt_s,
            gen_tps=(self.generated - 1) / gen_s if self.generated > 1 and gen_s > 0 else 0.0,
            total_ms=(end - self.started) * 1000,
            error=self.error,
            seed=self.seed,
            drafted_tokens=self.drafted,
            accepted_tokens=self.accepted,
        )
