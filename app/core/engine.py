"""The engine interface the GUI and CLI depend on, and the events a generation streams.

LlamaCppEngine (app/core/llama_engine.py) is the first implementation; a llama.cpp server subprocess or a
remote OpenAI-compatible server can implement the same Protocol without the GUI changing.

Threading contract: one thread at a time calls load/unload/generate (the engine host's thread,
app/core/host.py); cancel() may be called from any thread and takes effect within one token (or aborts a
prompt evaluation). LlamaCppEngine also runs several generations at once (begin/step), which the host uses.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from app.core.sampling import SamplingSettings

if TYPE_CHECKING:  # kept out of the import: the host and the GUI import this module at start-up
    from app.core.gguf_info import ModelInfo
    from app.core.load_config import LoadConfig

FinishReason = Literal["stop", "length", "cancelled", "error"]
ProgressCallback = Callable[[float], None]


@dataclass(frozen=True)
class PromptRequest:
    """One completion: the rendered prompt, what ends it, and how tokens are chosen."""

    text: str
    stop: tuple[str, ...] = ()
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    grammar: str | None = None  # GBNF; see app.core.structured for JSON mode / JSON schema


@dataclass(frozen=True)
class TextChunk:
    """Newly generated text, safe to show (never part of a stop string)."""

    text: str


@dataclass(frozen=True)
class GenerationStats:
    """The final event of every generation."""

    finish_reason: FinishReason
    prompt_tokens: int  # tokens in the prompt
    evaluated_tokens: int  # prompt tokens actually evaluated (the rest came from the KV cache)
    generated_tokens: int
    ttft_ms: float  # request start to first token sampled
    prompt_tps: float  # evaluated prompt tokens per second
    gen_tps: float  # generated tokens per second after the first
    total_ms: float
    error: str | None = None
    dropped_messages: int = 0  # set by the conversation layer when old turns were left out
    seed: int | None = None
    drafted_tokens: int = 0  # speculative decoding: draft tokens checked, and how many of them were kept
    accepted_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Event = TextChunk | GenerationStats


@dataclass(frozen=True)
class LoadedModel:
    """What is loaded and how: shown in the status bar and stored with each reply."""

    path: Path
    info: ModelInfo
    config: LoadConfig
    n_ctx: int  # the context llama.cpp actually allocated
    n_gpu_layers: int  # layers actually offloaded (0 on a CPU-only build)
    backend: str  # "CPU", "CUDA", "Metal", "Vulkan" ...
    load_ms: float


@runtime_checkable
class Engine(Protocol):
    """What Hearth needs from an inference backend."""

    @property
    def model(self) -> LoadedModel | None: ...

    @property
    def busy(self) -> bool: ...

    def load(self, path: Path, config: LoadConfig, progress: ProgressCallback | None = None) -> LoadedModel:
        """Load a model (unloading any other first). Raises ModelLoadError (and subclasses), ConfigError."""
        ...

    def load_exact(self, path: Path, config: LoadConfig, progress: ProgressCallback | None = None) -> LoadedModel:
        """Load with exactly this config (no "auto": app.core.load_policy resolves it and retries on OOM)."""
        ...

    def unload(self) -> None:
        """Free the model. Raises EngineBusyError while a generation runs (stop it first)."""
        ...

    def tokenize(self, text: str, *, add_bos: bool | None = None) -> list[int]:
        """Tokens of text with special tokens parsed; add_bos None = as the model wants, unless present."""
        ...

    def count_tokens(self, text: str, *, key: Hashable = None) -> int:
        """How many tokens generate() would put in the context for this prompt text (for fitting it); key:
        the conversation or client whose cached tokens the prompt continues."""
        ...

    def generate(self, request: PromptRequest, *, key: Hashable = None) -> Iterator[Event]:
        """Stream TextChunk events, then exactly one GenerationStats. Errors end in finish_reason 'error'.
        key: the conversation or client, so its next turn reuses its cached tokens."""
        ...

    def cancel(self) -> None:
        """Stop the current generation or load as soon as possible (any thread)."""
        ...
