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
from collections.abc import Iterator
from dataclasses import replace
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
from app.core.native import backend_name, captured_stderr, llama, release_heap
from app.core.sampling import SamplingSettings
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
        self._cached: list[int] = []  # the tokens the KV cache holds for sequence 0, in order
        # The last request's text and token count, and the text each generated token added after it:
        # lets the next turn reuse the model's own reply tokens instead of a re-tokenization that may
        # split the reply differently (which would throw the KV cache away from the reply onwards).
        self._last_text = ""
        self._last_prompt_len = 0
        self._reply_pieces: list[str | None] = []  # text each reply token added (None: a control token)
        self._reply_shown = 0  # characters of the reply actually streamed (a stop's start is held back)
        self._space_prefix = False
        self._add_bos = False
        self._bos_text = ""
        self._piece = ctypes.create_string_buffer(256)
        self._abort_cb: Any = None
        self._progress_cb: Any = None

    # ---- state -----------------------------------------------------------------------------------
    @property
    def model(self) -> LoadedModel | None:
        return self._loaded

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    @property
    def context_used(self) -> int:
        """Tokens currently held in the KV cache (for the status bar's 'context used')."""
        return len(self._cached)

    def cancel(self) -> None:
        self._cancel.set()

    def _acquire(self, action: str) -> None:
        if not self._lock.acquire(blocking=False):
            raise EngineBusyError(f"cannot {action} while a reply is being generated; stop it first")

    # ---- load / unload -----------------------------------------------------------------------------
    def load(
        self, path: Path, config: LoadConfig, progress: ProgressCallback | None = None, *, retry_on_oom: bool = True
    ) -> LoadedModel:
        """Load; "auto" GPU layers come from the fit estimate, and an out-of-memory load is retried once with
        the layer count the estimator suggests (retry_on_oom=False: the error carries the suggestion)."""
        self._acquire("load a model")
        try:
            path = Path(path)
            config.validate()  # before "auto"/"all" are resolved: a bad value must not be silently replaced
            lib = llama()
            if config.n_gpu_layers == 0 or not lib.llama_supports_gpu_offload():
                return self._load(
                    path, replace(config, n_gpu_layers=0) if config.n_gpu_layers < 0 else config, progress
                )
            return self._load_on_gpu(path, config, progress, retry_on_oom)
        finally:
            self._lock.release()

    def _load_on_gpu(
        self, path: Path, config: LoadConfig, progress: ProgressCallback | None, retry: bool
    ) -> LoadedModel:
        from app.core.fit import auto_gpu_layers, load_with_oom_retry, suggest_layers_after_oom
        from app.core.hardware import detect_hardware

        try:
            info = inspect(path)
        except GGUFError as exc:
            raise ModelLoadError(str(exc)) from None
        hardware = detect_hardware()
        n_ctx = config.effective_ctx(info)
        layers = config.n_gpu_layers
        if layers == AUTO_LAYERS:
            layers = auto_gpu_layers(
                info, hardware, n_ctx, config.kv_cache_type, flash_attention=config.flash_attention
            )
            log.info("auto GPU layers for %s: %d", path.name, layers)
        loaded, _ = load_with_oom_retry(
            lambda k: self._load(path, replace(config, n_gpu_layers=k), progress),
            layers,
            lambda k: suggest_layers_after_oom(info, hardware, k, n_ctx, config.kv_cache_type),
            retry=retry,
        )
        return loaded

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
        self._cached = []
        n_layer = lib.llama_model_n_layer(model)
        wanted = n_layer + 1 if config.n_gpu_layers < 0 else config.n_gpu_layers
        offloaded = min(wanted, n_layer + 1) if lib.llama_supports_gpu_offload() else 0
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
        params.n_seq_max = 1
        params.n_threads = config.threads
        params.n_threads_batch = config.threads_batch
        params.flash_attn_type = self._flash_attention(lib, config)
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
            on_gpu = config.n_gpu_layers != 0 and lib.llama_supports_gpu_offload()
            return lib.LLAMA_FLASH_ATTN_TYPE_AUTO if on_gpu else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        return lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if config.flash_attention else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED

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
        if self._ctx is not None:
            lib.llama_free(self._ctx)
        if self._model_p is not None:
            lib.llama_model_free(self._model_p)  # also frees its LoRA adapters
        self._ctx = self._model_p = self._vocab = None
        self._loaded = None
        self._cached = []
        self._last_text, self._last_prompt_len, self._reply_pieces, self._reply_shown = "", 0, [], 0
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

    # ---- generation --------------------------------------------------------------------------------
    def generate(self, request: PromptRequest) -> Iterator[Event]:
        self._acquire("start another reply")
        try:
            yield from self._generate(request)
        finally:
            self._lock.release()

    def _generate(self, request: PromptRequest) -> Iterator[Event]:
        if self._ctx is None or self._loaded is None:
            raise GenerationError("no model is loaded")
        request.sampling.validate()
        self._cancel.clear()
        started = time.perf_counter()
        tokens = self.prompt_tokens(request.text)
        n_ctx = self._loaded.n_ctx
        if len(tokens) >= n_ctx:
            raise ContextOverflowError(
                f"the prompt is {len(tokens)} tokens but the context holds {n_ctx}; shorten it or load the "
                "model with a larger context"
            )
        self._last_text, self._last_prompt_len, self._reply_pieces, self._reply_shown = request.text, len(tokens), [], 0
        seed = self._seed(request.sampling)
        chain = self._sampler_chain(request.sampling, request.grammar, seed)
        run = _Run(started=started, prompt_tokens=len(tokens), seed=seed)
        try:
            evaluated = self._evaluate_prompt(tokens, run)
            run.evaluated = evaluated
            run.prompt_done = time.perf_counter()
            if run.finish is None:
                budget = min(request.sampling.max_tokens, n_ctx - len(tokens))
                yield from self._sample_loop(chain, request.stop, budget, run)
        except Exception as exc:  # the stream always ends with stats; never with a crash
            log.exception("generation failed")
            run.finish, run.error = "error", f"{type(exc).__name__}: {exc}"
        finally:
            llama().llama_sampler_free(chain)
        yield run.stats()

    def _seed(self, sampling: SamplingSettings) -> int:
        """The reply's seed: the sampling settings' fixed seed, else the load config's, else a fresh one."""
        fixed = self._loaded.config.seed if self._loaded is not None else None
        if sampling.seed is None and fixed is not None:
            return fixed
        return sampling.request_seed()

    def count_tokens(self, text: str) -> int:
        return len(self.prompt_tokens(text))

    def prompt_tokens(self, text: str) -> list[int]:
        """The tokens generate() would put in the context for this prompt text.

        A chat's next turn continues the previous prompt and the model's own reply: those tokens are
        reused as they are (a fresh tokenization may split the reply differently, which would throw the
        KV cache away from the reply onwards). Only the reply text that was shown is reused, so a token
        that began a stop string never stands in for the template's own turn marker. Otherwise (a new
        conversation, an edited message) it is a plain tokenization.
        """
        if self._vocab is None:
            raise GenerationError("no model is loaded")
        last, reply = self._last_text, self._reply_pieces
        cached_reply = self._cached[self._last_prompt_len :]
        intact = len(self._cached) >= self._last_prompt_len and len(cached_reply) == len(reply)
        if not last or not intact or not text.startswith(last):
            return self.tokenize(text)
        rest = text[len(last) :]
        kept, used = 0, 0
        for piece in reply:  # pieces are whole characters (the incremental decoder's output per token)
            if piece is None or used + len(piece) > self._reply_shown or not rest.startswith(piece, used):
                break
            used += len(piece)
            kept += 1
        remainder = rest[used:]
        tail = self.tokenize(remainder, add_bos=False) if remainder else []
        if tail and self._space_prefix and not llama().llama_vocab_is_control(self._vocab, tail[0]):
            # SentencePiece would prefix a space to text tokenized on its own: only split before a
            # special token (the template's turn markers), where both ways tokenize the same.
            return self.tokenize(text)
        return self._cached[: self._last_prompt_len + kept] + tail

    def _evaluate_prompt(self, tokens: list[int], run: _Run) -> int:
        """Decode the tokens the KV cache does not already hold; returns how many were evaluated."""
        lib = llama()
        prefix = common_prefix(self._cached, tokens)
        if prefix == len(tokens):
            prefix -= 1  # the last prompt token must be decoded again to get fresh logits
        if prefix < len(self._cached):
            memory = lib.llama_get_memory(self._ctx)
            if not lib.llama_memory_seq_rm(memory, 0, prefix, -1):  # e.g. recurrent models: start over
                lib.llama_memory_clear(memory, True)
                prefix = 0
            self._cached = self._cached[:prefix]
        n_batch = self._loaded.config.n_batch if self._loaded else 512
        # The abort callback runs per graph node: installed only while evaluating the prompt (where a
        # long batch must be interruptible); between generated tokens the loop checks the flag itself.
        self._abort_cb = lib.ggml_abort_callback(lambda _data: self._cancel.is_set())
        lib.llama_set_abort_callback(self._ctx, self._abort_cb, None)
        try:
            for start in range(prefix, len(tokens), n_batch):
                chunk = tokens[start : start + n_batch]
                array = (lib.llama_token * len(chunk))(*chunk)
                rc = lib.llama_decode(self._ctx, lib.llama_batch_get_one(array, len(chunk)))
                if rc != 0:
                    self._drop_uncached(lib)
                    run.finish = "cancelled" if self._cancel.is_set() or rc == 2 else "error"
                    if run.finish == "error":
                        run.error = self._decode_error(rc)
                    return start - prefix
                self._cached.extend(chunk)
        finally:
            lib.llama_set_abort_callback(self._ctx, lib.ggml_abort_callback(0), None)
        return len(tokens) - prefix

    def _drop_uncached(self, lib: Any) -> None:
        """After a failed or aborted decode, make the KV cache hold exactly self._cached again."""
        memory = lib.llama_get_memory(self._ctx)
        if not lib.llama_memory_seq_rm(memory, 0, len(self._cached), -1):
            lib.llama_memory_clear(memory, True)
            self._cached = []

    @staticmethod
    def _decode_error(rc: int) -> str:
        if rc == 1:
            return "the context is full (no KV cache slot left)"
        return f"llama_decode failed with status {rc}"

    def _sample_loop(self, chain: Any, stops: tuple[str, ...], budget: int, run: _Run) -> Iterator[Event]:
        lib = llama()
        ctx, vocab = self._ctx, self._vocab
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        matcher = StopMatcher(stops)
        one = (lib.llama_token * 1)()
        sample, decode, batch_one = lib.llama_sampler_sample, lib.llama_decode, lib.llama_batch_get_one
        is_eog, is_control = lib.llama_vocab_is_eog, lib.llama_vocab_is_control
        cancel = self._cancel
        run.finish = "length"
        while run.generated < budget:
            if cancel.is_set():
                run.finish = "cancelled"
                break
            token = sample(chain, ctx, -1)
            run.generated += 1
            if run.first_token is None:
                run.first_token = time.perf_counter()
            if is_eog(vocab, token):
                run.finish = "stop"
                break
            if is_control(vocab, token):  # never shown; a stop only if it spells one (e.g. <end_of_turn>)
                if self._token_text(token, special=True) in stops:
                    run.finish = "stop"
                    break
                text = None
            else:
                text = decoder.decode(self._token_bytes(token, special=False))
            if text:
                safe, hit = matcher.feed(text)
                if safe:
                    self._reply_shown += len(safe)
                    yield TextChunk(safe)
                if hit:
                    run.finish = "stop"
                    break
            one[0] = token
            rc = decode(ctx, batch_one(one, 1))
            if rc != 0:
                self._drop_uncached(lib)
                run.finish, run.error = ("cancelled", None) if cancel.is_set() else ("error", self._decode_error(rc))
                break
            self._cached.append(token)
            self._reply_pieces.append(text)
        run.finished = time.perf_counter()
        if run.finish != "stop":  # text held back as a possible stop prefix was real output after all
            unfinished = decoder.decode(b"", final=True)  # a last token that ended mid-character
            if unfinished and self._reply_pieces:
                self._reply_pieces[-1] = (self._reply_pieces[-1] or "") + unfinished
            tail = matcher.flush() + unfinished
            if tail:
                self._reply_shown += len(tail)
                yield TextChunk(tail)

    def _sampler_chain(self, sampling: SamplingSettings, grammar: str | None, seed: int) -> Any:
        lib = llama()
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
            add(chain, sampler)  # first, so every later step only sees tokens the grammar allows
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
            return chain
        if sampling.mirostat == 1:
            add(chain, lib.llama_sampler_init_temp(sampling.temperature))
            add(
                chain,
                lib.llama_sampler_init_mirostat(n_vocab, seed, sampling.mirostat_tau, sampling.mirostat_eta, 100),
            )
            return chain
        if sampling.mirostat == 2:
            add(chain, lib.llama_sampler_init_temp(sampling.temperature))
            add(chain, lib.llama_sampler_init_mirostat_v2(seed, sampling.mirostat_tau, sampling.mirostat_eta))
            return chain
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
        return chain

    def __del__(self) -> None:  # a dropped engine must not leak a multi-GB model
        try:
            if not self._lock.locked():
                self._free()
        except Exception:
            pass


class _Run:
    """Counters and timestamps of one generation, turned into GenerationStats at the end."""

    def __init__(self, started: float, prompt_tokens: int, seed: int) -> None:
        self.started = started
        self.prompt_tokens = prompt_tokens
        self.seed = seed
        self.evaluated = 0
        self.generated = 0
        self.prompt_done: float | None = None
        self.first_token: float | None = None
        self.finished: float | None = None
        self.finish: str | None = None
        self.error: str | None = None

    def stats(self) -> GenerationStats:
        end = self.finished or time.perf_counter()
        prompt_s = ((self.prompt_done or end) - self.started) or 1e-9
        gen_s = end - self.first_token if self.first_token else 0.0
        return GenerationStats(
            finish_reason=self.finish or "error",  # type: ignore[arg-type]
            prompt_tokens=self.prompt_tokens,
            evaluated_tokens=self.evaluated,
            generated_tokens=self.generated,
            ttft_ms=((self.first_token or end) - self.started) * 1000,
            prompt_tps=self.evaluated / prompt_s,
            gen_tps=(self.generated - 1) / gen_s if self.generated > 1 and gen_s > 0 else 0.0,
            total_ms=(end - self.started) * 1000,
            error=self.error,
            seed=self.seed,
        )
