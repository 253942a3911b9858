"""LoadConfig: how a model is loaded (GPU layers, context, threads, KV cache ...), checked early."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.core.errors import ConfigError, GGUFError

if TYPE_CHECKING:
    from app.core.gguf_info import ModelInfo

# KV cache element types as llama.cpp's GGML_TYPE_* ids (stable across releases).
KV_CACHE_TYPES: dict[str, int] = {"f16": 1, "q8_0": 8, "q4_0": 2}
AUTO_LAYERS = -2  # n_gpu_layers: as many as the fit estimate says fit in free VRAM
CTX_GRANULARITY = 256  # llama.cpp pads n_ctx to a multiple of 256; asking for
# another value leaves its token buffers and llama-cpp-python's (sized from the request) out of step
MAX_CTX = 1 << 20
MAX_PARALLEL = 64
MAX_GPU_LAYERS = 10_000  # more than any model has; llama.cpp clamps to the model's layers
MAX_LORA_SCALE = 10.0


def physical_cores() -> int:
    """Generation threads default to physical cores: hyper-threads only fight over the same FPUs."""
    import psutil  # here, not at the top: the declared fields (and so every CLI flag) import this module

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def logical_cores() -> int:
    return os.cpu_count() or physical_cores()


@dataclass(frozen=True)
class LoraAdapter:
    """A LoRA adapter GGUF applied on top of the model, with its strength."""

    path: Path
    scale: float = 1.0

    @classmethod
    def parse(cls, text: str) -> LoraAdapter:
        """ "FILE" or "FILE:SCALE" as typed on the command line."""
        path, sep, scale = text.rpartition(":")
        if sep and path and not scale.startswith(("/", "\\")):
            try:
                return cls(Path(path).expanduser(), float(scale))
            except ValueError:
                pass
        return cls(Path(text).expanduser())

    def check_scale(self) -> LoraAdapter:
        """Return self, or raise ConfigError when the scale is outside -10..10."""
        if not -MAX_LORA_SCALE <= self.scale <= MAX_LORA_SCALE:
            raise ConfigError(f"LoRA scale for {self.path.name} must be between -10 and 10")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "scale": self.scale}

    @classmethod
    def from_dict(cls, data: Any) -> LoraAdapter:
        """From its stored form {"path": "FILE.gguf", "scale": 1.0}; ConfigError for anything else."""
        if not isinstance(data, dict) or not isinstance(data.get("path"), str) or not data["path"].strip():
            raise ConfigError('a LoRA adapter must be stored as {"path": "FILE.gguf", "scale": 1.0}')
        scale = data.get("scale", 1.0)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise ConfigError(f"LoRA scale must be a number; got {scale!r}")
        return cls(Path(data["path"]).expanduser(), float(scale)).check_scale()


@dataclass(frozen=True)
class LoadConfig:
    """Everything that decides how a model is loaded. 0 for threads means 'pick for this machine'."""

    n_gpu_layers: int = 0  # -2 = auto, -1 = every layer; otherwise 0..block_count (+1: the output layer too)
    n_ctx: int = 4096  # 0 = the model's training context; otherwise a multiple of 256
    n_threads: int = 0
    n_threads_batch: int = 0
    n_batch: int = 512
    flash_attention: bool | None = None  # None = llama.cpp decides (on where the backend supports it)
    kv_cache_type: str = "f16"
    use_mmap: bool = True
    use_mlock: bool = False
    loras: tuple[LoraAdapter, ...] = field(default_factory=tuple)
    seed: int | None = None  # default seed for replies whose sampling settings fix none
    # Sequences decoded together (the local server's parallel streams; conversations whose caches stay).
    # They share the n_ctx cells of one KV cache, so more of them costs no memory.
    n_parallel: int = 4
    # Speculative decoding: "auto" drafts from the conversation itself (prompt lookup) where measurements say
    # it pays; "off" never drafts.
    speculative: str = "auto"
    # A small model with the same vocabulary that drafts for this one (a path; "" = none: prompt lookup only).
    draft_model: str = ""
    # llama.cpp RPC workers ("host:port") the layers are split over, with the local device (app/core/rpc.py)
    rpc_workers: tuple[str, ...] = field(default_factory=tuple)

    @property
    def threads(self) -> int:
        return self.n_threads or physical_cores()

    @property
    def threads_batch(self) -> int:
        # Prompt processing is compute-bound and scales with every logical core.
        return self.n_threads_batch or logical_cores()

    def effective_ctx(self, info: ModelInfo | None) -> int:
        if self.n_ctx:
            return self.n_ctx
        return (info.context_length if info and info.context_length else 4096) or 4096

    def validate(self, info: ModelInfo | None = None) -> LoadConfig:
        """Return self, or raise ConfigError with what to change. info enables model-specific checks."""
        if not isinstance(self.n_gpu_layers, int) or not AUTO_LAYERS <= self.n_gpu_layers <= MAX_GPU_LAYERS:
            raise ConfigError(f"GPU layers must be -2 (auto), -1 (all) or 0 or more; got {self.n_gpu_layers!r}")
        if not isinstance(self.n_ctx, int) or not 0 <= self.n_ctx <= MAX_CTX:
            raise ConfigError(f"context size must be 0 (the model's own) to {MAX_CTX}; got {self.n_ctx!r}")
        if self.n_ctx % CTX_GRANULARITY:
            lower = max(CTX_GRANULARITY, self.n_ctx // CTX_GRANULARITY * CTX_GRANULARITY)
            raise ConfigError(
                f"context size {self.n_ctx} is not a multiple of {CTX_GRANULARITY}; use {lower} or "
                f"{lower + CTX_GRANULARITY}"
            )
        for name in ("n_threads", "n_threads_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= 1024:
                raise ConfigError(f"{name.replace('n_', '').replace('_', ' ')} must be 0 (auto) to 1024")
        if not isinstance(self.n_parallel, int) or not 1 <= self.n_parallel <= MAX_PARALLEL:
            raise ConfigError(f"parallel sequences must be 1 to {MAX_PARALLEL}; got {self.n_parallel!r}")
        if self.speculative not in ("auto", "off"):
            raise ConfigError(f"speculative decoding must be auto or off; got {self.speculative!r}")
        if not isinstance(self.n_batch, int) or not 1 <= self.n_batch <= 65536:
            raise ConfigError(f"batch size must be 1 to 65536; got {self.n_batch!r}")
        if self.kv_cache_type not in KV_CACHE_TYPES:
            raise ConfigError(f"KV cache type must be one of {', '.join(KV_CACHE_TYPES)}; got {self.kv_cache_type!r}")
        if self.flash_attention not in (None, True, False):
            raise ConfigError("flash attention must be on, off or auto")
        if self.kv_cache_type != "f16" and self.flash_attention is not True:
            raise ConfigError(
                f"a {self.kv_cache_type} KV cache needs flash attention "
                "(llama.cpp cannot quantize the V cache "
                "without it): turn flash attention on or use f16"
            )
        if self.seed is not None and not 0 <= self.seed < 2**32 - 1:
            raise ConfigError(f"seed must be 0 to {2**32 - 2}; got {self.seed}")
        for adapter in self.loras:
            self._check_lora(adapter, info)
        if self.rpc_workers:
            from app.core.rpc import parse_workers

            if parse_workers(self.rpc_workers) != tuple(self.rpc_workers):
                raise ConfigError(f"RPC workers must be distinct HOST:PORT values; got {', '.join(self.rpc_workers)}")
        if info is not None:
            self._check_model(info)
        return self

    def _check_model(self, info: ModelInfo) -> None:
        if info.is_adapter:
            raise ConfigError(f"{info.path.name} is a LoRA adapter, not a model; load it as an adapter")
        if info.model_type not in ("model", ""):
            raise ConfigError(f"{info.path.name} is a {info.model_type} file, not a chat model")
        head = info.key_length or 0
        if self.kv_cache_type != "f16" and head % 32:
            raise ConfigError(
                f"{info.display_name} has {head}-wide attention heads; "
                f"a {self.kv_cache_type} KV cache needs a "
                "multiple of 32: use f16"
            )
        blocks = info.block_count or 0
        if blocks and self.n_gpu_layers > blocks + 1:
            raise ConfigError(
                f"{info.display_name} has {blocks} layers; GPU layers can be at most {blocks + 1} (or -1 for all)"
            )

    @staticmethod
    def _check_lora(adapter: LoraAdapter, info: ModelInfo | None) -> None:
        adapter.check_scale()
        # The GGUF reader (and the LoRA rules over it) pull in numpy: imported only when checking a LoRA.
        from app.core.gguf_info import inspect
        from app.core.lora import lora_mismatch

        try:
            lora = inspect(adapter.path)
        except GGUFError as exc:
            raise ConfigError(f"LoRA adapter unusable: {exc}") from None
        if not lora.is_adapter:
            raise ConfigError(f"{adapter.path.name} is not a LoRA adapter (general.type is {lora.model_type!r})")
        if info is not None:
            # Architecture and every adapted tensor's shape, as llama.cpp checks them when applying it.
            problem = lora_mismatch(lora, info)
            if problem:
                raise ConfigError(f"LoRA adapter refused: {problem}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["loras"] = [a.to_dict() for a in self.loras]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoadConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["loras"] = tuple(LoraAdapter.from_dict(a) for a in data.get("loras") or ())
        known["rpc_workers"] = tuple(str(worker) for worker in data.get("rpc_workers", ()))
        return cls(**known)

    def with_changes(self, **changes: Any) -> LoadConfig:
        return replace(self, **changes)
