"""The workflows around a chat, wired into the window: assistants ("New chat with …", the chat's assistant in
the settings panel, the Assistants dialog), the `/` prompt picker, the reply format, LoRA adapters per model
(and PEFT folders on the Models page), and reloads for a chat's load settings (app.ui.chat_loads)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject

from app.core.assistants import Assistant, AssistantLibrary
from app.core.chat_setup import LoadOverrides
from app.core.errors import HearthError
from app.core.prompt_library import PromptLibrary
from app.core.structured import ReplyFormat
from app.ui.assistant_dialog import AssistantDialog
from app.ui.assistant_values import AssistantValuesDialog
from app.ui.chat_loads import ChatLoads
from app.ui.prompt_picker import install_prompt_picker

if TYPE_CHECKING:
    from app.core.chat_setup import ChatSetup
    from app.core.gguf_info import ModelInfo
    from app.core.load_config import LoadConfig, LoraAdapter
    from app.core.lora import PeftAdapter
    from app.ui.app import HearthApp
    from app.ui.library_controller import LibrarySnapshot

log = logging.getLogger("hearth.ui.workflows")


class ChatWorkflows(QObject):
    """Owned by HearthApp; everything here runs on the GUI thread (file checks go to the app's task pool)."""

    def __init__(self, app: HearthApp) -> None:
        super().__init__(app)
        self.app = app
        window, session = app.window, app.session
        self.panel = window.settings_panel
        self.assistants = AssistantLibrary.default(app.paths)
        self.prompts = PromptLibrary.default(app.paths)
        self.picker = install_prompt_picker(window.composer, self.prompts)
        self.loads = ChatLoads(app.settings, app.engine)
        session.loads = self.loads
        self.dialog: AssistantDialog | None = None
        self.values_dialog: AssistantValuesDialog | None = None
        window.assistants_menu.aboutToShow.connect(self.fill_menu)
        self.panel.assistant.assistant_chosen.connect(self._on_assistant_chosen)
        self.panel.assistant.manage_requested.connect(self.open_assistants)
        self.panel.reply_format.format_changed.connect(self._on_reply_format)
        self.panel.loras.adapters_changed.connect(self._on_loras_changed)
        self.panel.loras.file_chosen.connect(self._on_lora_file)
        window.picker.combo.currentIndexChanged.connect(self.show_loras)
        session.conversation_changed.connect(self._on_conversation_changed)
        app.engine.loaded.connect(self._on_model_loaded)
        app.library.scanned.connect(self._on_scanned)

    # ---- assistants ---------------------------------------------------------------------------------------------
    def fill_menu(self) -> None:
        """The Assistants menu: a new chat with each assistant, then the dialog."""
        menu = self.app.window.assistants_menu
        menu.clear()
        for assistant in self.assistants.all():
            action = menu.addAction(f"New chat with {assistant.name}")
            action.setToolTip(assistant.description)
            action.triggered.connect(lambda _checked=False, a=assistant.id: self.new_chat_with(a))
        menu.addSeparator()
        menu.addAction("Manage assistants…", self.open_assistants)

    def open_assistants(self) -> AssistantDialog:
        if self.dialog is not None:  # the one opened before (closed by now: it is window-modal)
            self.dialog.deleteLater()
        dialog = AssistantDialog(self.assistants, self.app.window, tasks=self.app.tasks)
        dialog.chat_requested.connect(self._on_dialog_chat)
        dialog.assistants_changed.connect(self.refresh_assistants)
        current = self.app.session.setup.assistant_id
        if current and self.assistants.find(current) is not None:
            dialog.select(current)
        self.dialog = dialog
        dialog.open()
        return dialog

    def _on_dialog_chat(self, assistant_id: str) -> None:
        if self.dialog is not None:
            self.dialog.close()
        self.new_chat_with(assistant_id)

    def refresh_assistants(self) -> None:
        setup = self.app.session.setup
        self.panel.assistant.set_assistants(
            self.assistants.all(), setup.assistant_id or "", _summary(setup), setup.assistant_name or ""
        )
        compare = getattr(self.app, "compare", None)
        if compare is not None:
            compare.refresh_assistants()

    def new_chat_with(self, assistant_id: str) -> None:
        """A new chat set up by the assistant (its variables asked first when it has any)."""
        assistant = self.assistants.find(assistant_id)
        if assistant is None:
            self.app.session.error.emit(f"The assistant {assistant_id!r} no longer exists.")
            return

        def start(values: dict[str, str]) -> None:
            setup = assistant.setup(values)
            self.app.window.show_page("chat")
            self.app.session.new_chat(setup)
            self.app.window.composer.focus()

        self.with_values(assistant, start)

    def with_values(
        self,
        assistant: Assistant,
        then: Callable[[dict[str, str]], None],
        cancelled: Callable[[], None] | None = None,
    ) -> None:
        """Ask the values of the assistant's {{variables}} in a small form (none: go on at once), then call
        then(values). Nothing happens when the form is cancelled."""

        def go(values: dict[str, str]) -> None:
            try:
                then(values)
            except HearthError as exc:  # a variable left blank on purpose with no default
                self.app.session.error.emit(str(exc))
                self.app.window.composer.set_notice(f"{assistant.name}: {exc}")

        if not assistant.variables:
            go({})
            return
        current = self.app.session.setup
        values = current.values if current.assistant_id == assistant.id else None
        if self.values_dialog is not None:
            self.values_dialog.deleteLater()
        dialog = AssistantValuesDialog(assistant, self.app.window, values)
        dialog.accepted.connect(lambda: go(dialog.values()))
        if cancelled is not None:
            dialog.rejected.connect(cancelled)
        self.values_dialog = dialog
        dialog.open()

    def _on_assistant_chosen(self, assistant_id: str) -> None:
        """The chat settings panel: this chat now runs with another assistant (or none)."""
        session = self.app.session
        if not assistant_id:
            current = session.current_setup()
            session.apply_setup(
                replace(current, assistant=None, template="", reply_format=ReplyFormat(), load=LoadOverrides())
            )
            return
        assistant = self.assistants.find(assistant_id)
        if assistant is None:
            self.refresh_assistants()
            return
        self.with_values(
            assistant, lambda values: session.apply_setup(assistant.setup(values)), self.refresh_assistants
        )

    # ---- the open chat --------------------------------------------------------------------------------------------
    def _on_conversation_changed(self, _conversation_id: int) -> None:
        setup = self.app.session.setup
        self.refresh_assistants()
        self.panel.reply_format.set_value(setup.reply_format)
        name = setup.assistant_name
        self.app.window.composer.editor.setPlaceholderText(f"Message {name}…" if name else "Message Hearth…")
        self.show_load_notice()

    def _on_model_loaded(self, _model: object) -> None:
        self.show_loras()
        self.show_load_notice()

    def show_load_notice(self) -> None:
        """Tell the user, above the composer, when sending will reload the model or cannot run at all."""
        session = self.app.session
        if session.remote is not None:
            return
        setup = session.current_setup()
        problem = self.loads.problem(setup)
        text = f"This chat cannot run on the loaded model: {problem}" if problem else self.loads.describe(setup)
        if text:
            self.app.window.composer.set_notice(text)

    def send_problem(self) -> str:
        """Why the message must not be sent ('' when it may): the reply schema is unusable."""
        editor = self.panel.reply_format
        value = editor.value()  # an edit not checked yet is checked now
        if value is None:
            return (
                f"Not sent: the reply schema is unusable: {editor.problem()}. Fix it under Chat settings → "
                "Reply format, or choose Text."
            )
        if value != self.app.session.setup.reply_format:
            self.app.session.set_reply_format(value)
        return ""

    def _on_reply_format(self, reply_format: ReplyFormat) -> None:
        self.app.session.set_reply_format(reply_format)

    def load_config(self, path: str) -> LoadConfig:
        """The config for a load the user asked for: the model's settings with the open chat's on top."""
        snapshot = self.app.library.snapshot
        entry = snapshot.find(path) if snapshot is not None else None
        return self.loads.config_for(path, self.app.session.current_setup(), entry.info if entry else None)

    # ---- LoRA adapters per model ------------------------------------------------------------------------------------
    def _lora_target(self) -> str:
        model = self.app.engine.model
        return self.app.window.picker.selected_path() or (str(model.path) if model is not None else "")

    def _base_info(self, path: str) -> ModelInfo | None:
        snapshot = self.app.library.snapshot
        entry = snapshot.find(path) if snapshot is not None else None
        if entry is not None and entry.info is not None:
            return entry.info
        model = self.app.engine.model
        return model.info if model is not None and str(model.path) == path else None

    def show_loras(self) -> None:
        """The adapters attached to the model selected in the picker, and the library's adapters that fit it."""
        from app.core.load_policy import model_loras

        path = self._lora_target()
        section = self.panel.loras
        base = self._base_info(path) if path else None
        section.set_model(bool(path), base.display_name if base is not None else Path(path).name)
        section.set_adapters(model_loras(self.app.settings, Path(path).name) if path else ())
        snapshot = self.app.library.snapshot
        if base is None or snapshot is None:
            section.set_offered([])
            return
        from app.core.lora import lora_mismatch  # loaded already by the library scan (a pool thread)

        offered = []
        for entry in snapshot.entries:
            if entry.ok and entry.info is not None and entry.info.is_adapter:
                reason = lora_mismatch(entry.info, base) or ""
                offered.append((str(entry.path), entry.display_name, reason))
        section.set_offered(offered)

    def _on_loras_changed(self, adapters: tuple[LoraAdapter, ...]) -> None:
        from app.core.load_policy import save_model_load

        path = self._lora_target()
        if path:
            save_model_load(self.app.settings, Path(path).name, loras=adapters)
        self.app.update_reload_button()

    def _on_lora_file(self, file: str) -> None:
        """A file picked by hand: attached only if it is a LoRA adapter that fits the model (checked off the
        GUI thread), else refused with the reason."""
        path = self._lora_target()
        base = self._base_info(path)

        def check() -> tuple[str, str]:  # pool thread: reads two GGUF headers
            from app.core.errors import GGUFError
            from app.core.gguf_info import inspect
            from app.core.lora import lora_mismatch

            try:
                info = inspect(Path(file))
                target = base if base is not None else inspect(Path(path))
            except (GGUFError, OSError) as exc:
                return file, f"{Path(file).name} cannot be read: {getattr(exc, 'strerror', None) or exc}"
            return file, lora_mismatch(info, target) or ""

        self.app.tasks.run(check, self._on_lora_checked, self._on_lora_failed)

    def _on_lora_checked(self, result: tuple[str, str]) -> None:
        file, reason = result
        if reason:
            self.panel.loras.show_error(f"Not attached: {reason}")
        else:
            self.panel.loras.add(file)

    def _on_lora_failed(self, error: BaseException) -> None:
        self.panel.loras.show_error(f"Not attached: {error}")

    # ---- the library ------------------------------------------------------------------------------------------------
    def _on_scanned(self, _snapshot: LibrarySnapshot) -> None:
        self.show_loras()
        paths, settings = self.app.paths, self.app.settings

        def find_peft() -> list[PeftAdapter]:  # pool thread: walks the model folders
            from app.core.library import Library

            return Library(paths, settings).peft_adapters()

        self.app.tasks.run(find_peft, self._on_peft, self._on_peft_failed)

    def _on_peft(self, adapters: list[PeftAdapter]) -> None:
        self.app.window.models_page.set_peft_adapters(adapters, self.app.paths.models_dir)

    def _on_peft_failed(self, error: BaseException) -> None:
        log.warning("looking for PEFT adapter folders failed: %s", error)


def _summary(setup: ChatSetup) -> str:
    """'target language: French' for the panel (the values the assistant's system prompt was filled with)."""
    return " · ".join(f"{name}: {value}" for name, value in setup.values.items())
