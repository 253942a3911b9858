"""When a chat's load settings (an assistant's context, GPU layers, LoRA adapters) meet the loaded model.

The policy, as LM Studio users know it from presets with load parameters: the model is loaded the way the
open chat needs it. A chat whose assistant asks for another context, other GPU layers or LoRA adapters than
the model was loaded with says so above the composer, and sending reloads the model with them first (the
reply waits in the engine host's queue behind the load). Going back to a chat without such settings reloads
the model as its own load settings say. A LoRA adapter that does not fit the loaded model is refused before
anything is sent, with the reason.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from app.core.chat_setup import LoadOverrides
from app.core.load_config import AUTO_LAYERS, LoadConfig

if TYPE_CHECKING:
    from app.core.chat_setup import ChatSetup
    from app.core.gguf_info import ModelInfo
    from app.core.settings import Settings
    from app.ui.workers import EngineBridge

log = logging.getLogger("hearth.ui.loads")


def _effect(config: LoadConfig) -> tuple[object, ...]:
    """What a chat's load settings can change in a loaded model."""
    return (config.n_ctx, config.n_gpu_layers, tuple((str(a.path), a.scale) for a in config.loras))


class ChatLoads:
    """The window's loads as chats need them. `applied` is what the loaded model was loaded with on top of
    the model's own load settings (the overrides of the chat that loaded it; empty for a load from the picker
    without any)."""

    def __init__(self, settings: Settings, engine: EngineBridge) -> None:
        self.settings = settings
        self.engine = engine
        self.applied = LoadOverrides()

    def _base(self, path: Path | str) -> LoadConfig:
        from app.core.load_policy import configured_load

        return configured_load(self.settings, Path(path).name)

    def config_for(self, path: str, setup: ChatSetup | None, info: ModelInfo | None = None) -> LoadConfig:
        """The config for a load the user asked for (the picker, Reload): the model's own settings, with the open
        chat's load settings on top when it has some and they fit this model (else without them: sending in
        that chat then says why)."""
        overrides = setup.load if setup is not None else LoadOverrides()
        if not overrides.empty and overrides.loras and (info is None or self._lora_problem(overrides, info)):
            overrides = LoadOverrides(overrides.n_ctx, overrides.n_gpu_layers)
        self.applied = overrides
        return overrides.apply(self._base(path))

    def needs_reload(self, setup: ChatSetup) -> bool:
        """Whether replies in a chat with this setup need the loaded model loaded otherwise."""
        model = self.engine.model
        if model is None or self.engine.loading:
            return False
        base = self._base(model.path)
        return _effect(setup.load.apply(base)) != _effect(self.applied.apply(base))

    def describe(self, setup: ChatSetup) -> str:
        """What sending will do, for the notice above the composer ('' when nothing needs reloading)."""
        if not self.needs_reload(setup):
            return ""
        model = self.engine.model
        assert model is not None
        wanted = setup.load.apply(self._base(model.path))
        parts = [f"context {wanted.n_ctx:,}" if wanted.n_ctx else "the model's own context"]
        if setup.load.n_gpu_layers is not None:
            layers = wanted.n_gpu_layers
            parts.append(
                "auto GPU layers"
                if layers == AUTO_LAYERS
                else "all GPU layers"
                if layers == -1
                else f"{layers} GPU layers"
            )
        parts += [f"LoRA {a.path.name} × {a.scale:g}" for a in wanted.loras] or ["no LoRA adapter"]
        who = setup.assistant_name or "this chat"
        return (
            f"{who} loads {model.info.display_name} with {', '.join(parts)}: sending reloads the model first "
            "(a few seconds)."
        )

    def problem(self, setup: ChatSetup) -> str | None:
        """Why replies with this setup cannot run on the loaded model: a LoRA adapter that does not fit it."""
        model = self.engine.model
        if model is None or not setup.load.loras:
            return None
        return self._lora_problem(setup.load, model.info)

    def prepare(self, setup: ChatSetup) -> None:
        """Queue a reload with this chat's load settings when the loaded model was loaded otherwise."""
        if not self.needs_reload(setup):
            return
        model = self.engine.model
        assert model is not None
        config = setup.load.apply(self._base(model.path))
        log.info("reloading %s for a chat's load settings", model.path.name)
        self.applied = setup.load
        self.engine.load(model.path, config)

    @staticmethod
    def _lora_problem(overrides: LoadOverrides, base: ModelInfo) -> str | None:
        # Reading an adapter's GGUF header takes milliseconds (numpy is loaded already with the model).
        from app.core.errors import GGUFError
        from app.core.gguf_info import inspect
        from app.core.lora import lora_mismatch

        for adapter in overrides.loras:
            try:
                info = inspect(adapter.path)
            except (GGUFError, OSError) as exc:
                return f"the LoRA adapter {adapter.path} cannot be read: {getattr(exc, 'strerror', None) or exc}"
            reason = lora_mismatch(info, base)
            if reason:
                return f"the LoRA adapter does not fit {base.display_name}: {reason}"
        return None
