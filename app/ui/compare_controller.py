"""Connects the Compare page to the engine host (app.ui.compare_runner) and to the history: "Use this answer"
adds the prompt and the chosen answer (with its model's name, statistics and settings) to the open chat."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject

from app.core.chat_setup import ChatSetup
from app.core.errors import HearthError
from app.core.messages import ChatMessage
from app.core.placeholders import fill, variables
from app.core.reply import create_conversation
from app.core.sampling import PRESETS, SamplingSettings
from app.ui.compare_runner import CompareResult, CompareRun, CompareRunner

if TYPE_CHECKING:
    from app.ui.app import HearthApp
    from app.ui.library_controller import LibrarySnapshot

log = logging.getLogger("hearth.ui.compare")


class CompareController(QObject):
    """Owned by HearthApp."""

    def __init__(self, app: HearthApp) -> None:
        super().__init__(app)
        self.app = app
        self.page = app.window.compare_page
        self.runner = CompareRunner(app.host, self)
        self.setup: ChatSetup | None = None  # what the comparison ran with
        self.prompt = ""
        self._assistant_id = ""
        self.page.run_requested.connect(self.start)
        self.page.stop_requested.connect(self.runner.stop)
        self.page.use_requested.connect(self.use_answer)
        self.page.assistant_chosen.connect(self._on_assistant)
        self.runner.changed.connect(self._on_changed)
        self.runner.running_changed.connect(self._on_running)
        app.library.scanned.connect(self._on_scanned)
        self.refresh_assistants()

    @property
    def running(self) -> bool:
        return self.runner.running

    def busy_reason(self) -> str:
        """Why the chat must wait ('' when it need not): the comparison has the engine."""
        return "Models are being compared: the chat waits until that ends (Compare page)." if self.running else ""

    def refresh_assistants(self) -> None:
        workflows = getattr(self.app, "workflows", None)
        if workflows is not None:
            self.page.set_assistants(workflows.assistants.all())

    def _on_scanned(self, snapshot: LibrarySnapshot) -> None:
        self.page.set_models([(str(e.path), e.display_name) for e in snapshot.usable])

    def _on_assistant(self, assistant_id: str) -> None:
        """An assistant's system prompt goes into the editor (defaults filled in; {{names}} without one stay for
        you to fill); its sampling, template and reply format apply to every model."""
        self._assistant_id = assistant_id
        assistant = self.app.workflows.assistants.find(assistant_id) if assistant_id else None
        if assistant is None:
            return
        text = assistant.system_prompt
        defaults = {name: value for name, value in assistant.defaults.items() if name in assistant.variables}
        missing = [name for name in assistant.variables if name not in defaults]
        filled = fill(text, {n: f"{{{{{n}}}}}" for n in missing}, defaults) if assistant.variables else text
        self.page.system_prompt.setPlainText(filled)

    # ---- running ----------------------------------------------------------------------------------------------
    def _setup(self) -> ChatSetup:
        system = self.page.system_prompt.toPlainText()
        assistant = self.app.workflows.assistants.find(self._assistant_id) if self._assistant_id else None
        if assistant is not None:
            return ChatSetup(
                system_prompt=system,
                template=assistant.template,
                preset=assistant.preset,
                sampling=assistant.sampling,
                reply_format=assistant.reply_format,
                assistant=assistant.snapshot(),
            )
        preset = self.app.settings.get("default_sampling_preset")
        return ChatSetup(system_prompt=system, preset=preset, sampling=PRESETS.get(preset, SamplingSettings()))

    def start(self) -> None:
        from app.core.load_policy import configured_load

        page = self.page
        models = page.chosen_models()
        prompt = page.prompt.toPlainText().strip()
        if len(models) < 2 or not prompt:
            page.set_error("Choose at least two models and write a prompt.")
            return
        if self.app.session.generating:
            page.set_error("A chat reply is being written; stop it first.")
            return
        unfilled = variables(page.system_prompt.toPlainText())
        if unfilled:
            page.set_error(f"Fill in {', '.join('{{' + n + '}}' for n in unfilled)} in the system prompt first.")
            return
        setup = self._setup()
        try:
            args: dict[str, Any] = setup.request_args()
        except HearthError as exc:
            page.set_error(str(exc))
            return
        page.set_error("")
        self.setup, self.prompt = setup, prompt
        results = [CompareResult(path, configured_load(self.app.settings, Path(path).name)) for path in models]
        messages = (*setup.system_messages(), ChatMessage("user", prompt))
        page.start_columns(len(results))
        self.runner.start(CompareRun(results, messages, args))

    def _on_changed(self, index: int) -> None:
        run = self.runner.run
        if run is not None:
            json_reply = self.setup is not None and self.setup.reply_format.is_json
            self.page.show_result(index, run.results[index], json_reply)

    def _on_running(self, running: bool) -> None:
        self.page.set_running(running)
        run = self.runner.run
        if not running and run is not None:
            for index in range(len(run.results)):
                self._on_changed(index)
        self.app.session.state_changed.emit()  # the chat may send again (or must wait)

    # ---- "Use this answer" --------------------------------------------------------------------------------------
    def use_answer(self, index: int) -> int | None:
        """Add the prompt and column i's answer to the open chat (a new chat when none is open, set up as the
        comparison was); the reply keeps its model's name. Returns the conversation's id."""
        run, setup = self.runner.run, self.setup
        if run is None or setup is None or self.running or not 0 <= index < len(run.results):
            return None
        result = run.results[index]
        session, store = self.app.session, self.app.store
        if session.generating:
            self.page.set_error("A chat reply is being written; stop it first.")
            return None
        try:
            conversation = session.conversation
            if conversation is None:
                conversation_id = create_conversation(
                    store,
                    model_path=result.path,
                    load_settings=result.loaded.config.to_dict() if result.loaded else {},
                    **setup.create_args(),
                )
            else:
                conversation_id = conversation.id
            store.add_message(conversation_id, "user", self.prompt)
            stats = result.stats
            others = [r.name for r in run.results if r is not result]
            store.add_message(
                conversation_id,
                "assistant",
                result.text,
                model=result.name,
                template=result.template,
                prompt_text=result.prompt_text,
                prompt_tokens=stats.prompt_tokens if stats else None,
                generated_tokens=stats.generated_tokens if stats else None,
                gen_tps=stats.gen_tps if stats else None,
                ttft_ms=stats.ttft_ms if stats else None,
                finish_reason=stats.finish_reason if stats else None,
                meta={
                    "sampling": setup.sampling.to_dict(),
                    "load": result.loaded.config.to_dict() if result.loaded else {},
                    "reply_format": setup.reply_format.to_dict(),
                    "compared_with": others,
                },
            )
        except HearthError as exc:
            self.page.set_error(str(exc))
            return None
        self.page.set_error("")
        self.app.open_conversation(conversation_id)
        self.app.refresh_conversations()
        return conversation_id
