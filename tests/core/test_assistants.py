"""Assistants: built-ins, the user's saved on disk (bad files moved aside), import/export, variables, and a
conversation that keeps its setup in the real history database and gets it back after reopening."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from app.core.assistants import BUILTINS, EXTRACTION_SCHEMA, Assistant, AssistantLibrary, load_assistant
from app.core.chat_setup import ChatSetup, LoadOverrides
from app.core.conversation import ChatRunner
from app.core.engine import GenerationStats, TextChunk
from app.core.errors import AssistantError, ConfigError, PromptError
from app.core.llama_engine import LlamaCppEngine
from app.core.load_config import LoadConfig, LoraAdapter
from app.core.messages import ChatMessage
from app.core.paths import AppPaths
from app.core.sampling import PRESETS, SamplingSettings
from app.core.store import ReplyStats, Store
from app.core.structured import JSON_ANY, JSON_SCHEMA, ReplyFormat, reply_problem


@pytest.fixture
def library(hearth_home: AppPaths) -> AssistantLibrary:
    return AssistantLibrary.default(hearth_home)


def full_assistant() -> Assistant:
    """An assistant with every field away from its default."""
    return Assistant(
        id="",
        name="Legal French",
        description="Formal French for contracts",
        system_prompt="Translate into {{language}} for {{audience}}.",
        defaults={"audience": "lawyers"},
        template="chatml",
        preset="custom",
        sampling=SamplingSettings(temperature=0.3, top_k=12, top_p=0.5, min_p=0.01, repeat_penalty=1.3, seed=42),
        reply_format=ReplyFormat(JSON_SCHEMA, {"type": "object", "properties": {"text": {"type": "string"}}}),
        load=LoadOverrides(n_ctx=8192, n_gpu_layers=-1, loras=(LoraAdapter(Path("/models/legal-lora.gguf"), 0.7),)),
        tools=("time", "filesystem"),
        documents=("contracts",),
    )


def test_built_ins_are_there_read_only_and_copyable(library: AssistantLibrary):
    assert [a.name for a in library.all()] == ["Translator", "Summariser", "Text to JSON", "Classifier"]
    translator = library.get("translator")
    assert translator.builtin and translator.variables == ("target language",)
    with pytest.raises(AssistantError, match="built in and cannot be changed; duplicate it first"):
        library.save(replace(translator, name="Mine"))
    with pytest.raises(AssistantError, match="built in and cannot be deleted"):
        library.delete("Translator")
    copy = library.duplicate("Translator")
    assert copy.name == "Translator (copy)" and not copy.builtin and copy.id != translator.id
    assert replace(copy, id=translator.id, name=translator.name, builtin=True) == translator
    assert library.duplicate("Translator").name == "Translator (copy) (2)"
    for builtin in BUILTINS:
        assert builtin.validate() is builtin


def test_every_field_survives_save_and_load(library: AssistantLibrary, hearth_home: AppPaths):
    saved = library.save(full_assistant())
    path = hearth_home.assistants_dir / f"{saved.id}.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["format"] == "hearth-assistant" and data["version"] == 1 and data["name"] == "Legal French"
    reloaded = AssistantLibrary.default(hearth_home).get("legal french")
    assert reloaded == saved
    assert load_assistant("Legal French", hearth_home) == saved
    with pytest.raises(AssistantError, match="already an assistant named 'Legal French'"):
        library.save(replace(full_assistant(), name="legal FRENCH"))
    edited = library.save(replace(saved, description="changed"))
    assert edited.id == saved.id and library.get(saved.id).description == "changed"
    library.delete("Legal French")
    assert not path.exists()
    with pytest.raises(AssistantError, match="no assistant named 'Legal French'; there are: Translator"):
        library.get("Legal French")


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"name": "  "}, "needs a one-line name"),
        ({"template": "llama-9"}, "unknown chat template 'llama-9'"),
        ({"preset": "fast"}, "unknown sampling preset 'fast'"),
        ({"sampling": SamplingSettings(temperature=9.0)}, "temperature must be between 0 and 5"),
        ({"reply_format": ReplyFormat(JSON_SCHEMA, {"type": "objekt"})}, "reply schema is unusable"),
        ({"load": LoadOverrides(n_ctx=1000)}, "not a multiple of 256"),
        ({"load": LoadOverrides(loras=(LoraAdapter(Path("x.gguf"), 20.0),))}, "LoRA scale for x.gguf"),
        ({"defaults": {"language": 3}}, "variable defaults must be an object of text values"),
    ],
)
def test_invalid_assistants_are_refused(library: AssistantLibrary, change: dict, pattern: str):
    with pytest.raises((AssistantError, ConfigError), match=pattern):
        library.save(replace(full_assistant(), **change))
    assert library.user_assistants() == []


def test_export_import_round_trip_and_bad_files(tmp_path: Path, library: AssistantLibrary, hearth_home: AppPaths):
    saved = library.save(full_assistant())
    exported = tmp_path / "legal.json"
    exported.write_text(library.export_text("Legal French"), encoding="utf-8")
    assert "id" not in json.loads(exported.read_text())
    elsewhere = AssistantLibrary(tmp_path / "elsewhere")
    imported = elsewhere.import_file(exported)
    assert replace(imported, id=saved.id) == saved
    assert elsewhere.import_file(exported).name == "Legal French (2)"  # nothing overwritten
    builtin_export = tmp_path / "translator.json"
    builtin_export.write_text(library.export_text("Translator"))
    assert elsewhere.import_file(builtin_export).name == "Translator (2)"

    for content, pattern in (
        ("{oops", r"bad.json is not valid JSON \(line 1, column 2"),
        ('{"name": "X", "sampling": {"temperature": -1}}', "bad.json: temperature must be between 0 and 5"),
        ('{"name": "X", "format": "hearth-prompts"}', "not a Hearth assistant"),
        ('{"name": "X", "version": 5}', "newer than this Hearth's .*update Hearth to import it"),
        ('{"name": "X", "reply_format": {"kind": "yaml"}}', "reply format must be one of"),
        ('{"name": "X", "load": {"loras": ["a.gguf"]}}', "LoRA adapters must be a list of"),
        ('{"name": "X", "tools": "time"}', "tools must be a list of names"),
        ("[]", "not a JSON object"),
    ):
        bad = tmp_path / "bad.json"
        bad.write_text(content, encoding="utf-8")
        with pytest.raises(AssistantError, match=pattern):
            elsewhere.import_file(bad)
    assert len(elsewhere.user_assistants()) == 3


def test_unreadable_files_are_moved_aside(library: AssistantLibrary, hearth_home: AppPaths):
    good = library.save(full_assistant())
    folder = hearth_home.assistants_dir
    (folder / "torn-1234.json").write_text('{"id": "torn-1234", "name": "Torn", "system_pr', encoding="utf-8")
    (folder / "translator.json").write_text('{"id": "translator", "name": "Fake"}', encoding="utf-8")
    (folder / "new-5.json").write_text('{"id": "new-5", "name": "New", "version": 2}', encoding="utf-8")
    assert [a.name for a in library.user_assistants()] == [good.name]
    assert len(library.problems) == 3
    assert any(
        "torn-1234.json is unusable (not valid JSON" in p and "moved to torn-1234.json.broken-" in p
        for p in library.problems
    )
    assert any("belongs to a built-in" in p for p in library.problems)
    names = {p.name for p in folder.iterdir()}
    assert "new-5.json" in names and any(n.startswith("torn-1234.json.broken-") for n in names)


def test_setup_fills_variables_and_names_missing_ones(library: AssistantLibrary):
    legal = library.save(full_assistant())
    setup = legal.setup({"language": "French", "unrelated": "x"})
    assert setup.system_prompt == "Translate into French for lawyers."
    assert setup.values == {"language": "French"}
    assert setup.assistant_id == legal.id and setup.assistant_name == "Legal French"
    with pytest.raises(PromptError, match=r"fill in \{\{language\}\}"):
        legal.setup({})
    assert (
        library.get("Translator")
        .setup()
        .system_prompt.startswith("You are a translator. Translate the text the user sends into English.")
    )
    config = setup.load_config(LoadConfig(n_ctx=4096, n_threads=3))
    assert (config.n_ctx, config.n_gpu_layers, config.n_threads) == (8192, -1, 3)
    assert config.loras == (LoraAdapter(Path("/models/legal-lora.gguf"), 0.7),)
    assert LoadOverrides().apply(config) is config


def test_conversation_keeps_and_restores_its_setup(tmp_path: Path, library: AssistantLibrary):
    legal = library.save(full_assistant())
    setup = legal.setup({"language": "French"})
    with Store.open(tmp_path / "history.sqlite3") as store:
        conversation = store.create_conversation(title="contract", **setup.conversation_fields())
        other = {"pinned_tools_state": {"x": 1}}
        store.update_conversation(conversation.id, meta={**conversation.meta, **other})
    library.delete(legal.id)  # the conversation does not depend on the assistant still existing
    with Store.open(tmp_path / "history.sqlite3") as store:
        restored = ChatSetup.from_conversation(store.conversation(conversation.id))
        assert restored == setup
        assert store.conversation(conversation.id).meta["pinned_tools_state"] == {"x": 1}
        # Fields merge into the meta a conversation already has.
        switched = library.get("Summariser").setup()
        fields = switched.conversation_fields(store.conversation(conversation.id).meta)
        updated = store.update_conversation(conversation.id, **fields)
        assert updated.meta["pinned_tools_state"] == {"x": 1}
        assert ChatSetup.from_conversation(updated) == switched


def test_damaged_conversation_meta_falls_back_and_old_preset_names_load(tmp_path: Path):
    with Store.open(tmp_path / "history.sqlite3") as store:
        conversation = store.create_conversation(
            system_prompt="hi",
            sampling={"preset": "mistral-tutorial"},
            meta={"reply_format": {"kind": "xml"}, "load": {"n_ctx": "big"}, "tools": ["a", 3, "a"], "assistant": 7},
        )
        setup = ChatSetup.from_conversation(conversation)
    assert setup.reply_format == ReplyFormat() and setup.load == LoadOverrides()
    assert setup.tools == ("a",) and setup.assistant is None and setup.system_prompt == "hi"
    assert setup.preset == "mistral-7b-instruct-community"
    assert setup.sampling == PRESETS["mistral-7b-instruct-community"]


def bounded(schema: dict) -> dict:
    """The schema with every string and list kept short: a random-weight model never ends a string by itself,
    and the grammar then guarantees the reply ends."""
    if schema.get("type") == "string" or schema.get("type") == ["string", "null"]:
        return {**schema, "maxLength": 8}
    if schema.get("type") == "array":
        return {**schema, "maxItems": 2, "items": bounded(schema["items"])}
    if schema.get("type") == "object":
        return {**schema, "properties": {k: bounded(v) for k, v in schema["properties"].items()}}
    return schema


def reply(runner: ChatRunner, setup: ChatSetup, history: list[ChatMessage]) -> tuple[str, GenerationStats]:
    text, stats = "", None
    for event in runner.stream(history, setup.sampling, override=setup.template or None, grammar=setup.grammar()):
        if isinstance(event, TextChunk):
            text += event.text
        elif isinstance(event, GenerationStats):
            stats = event
    assert stats is not None and stats.error is None
    return text, stats


def test_json_assistant_used_with_the_real_engine_and_stored(
    tmp_path: Path, tiny_model: Path, library: AssistantLibrary
):
    """A text-to-JSON assistant: its system prompt reaches the model, its grammar makes the reply parse and
    match the schema, and the conversation reopens with the same setup and the reply as sent."""
    builtin = library.get("Text to JSON")
    assert builtin.reply_format == ReplyFormat(JSON_SCHEMA, EXTRACTION_SCHEMA)
    extractor = library.duplicate("Text to JSON", "Short extractor")
    extractor = library.save(replace(extractor, reply_format=ReplyFormat(JSON_SCHEMA, bounded(EXTRACTION_SCHEMA))))
    setup = library.get("Short extractor").setup()
    history = [*setup.system_messages(), ChatMessage("user", "Ada Lovelace met Babbage in London in 1833.")]
    engine = LlamaCppEngine()
    engine.load(tiny_model, setup.load_config(LoadConfig(n_ctx=2048, n_threads=1)))
    try:
        runner = ChatRunner(engine)
        assert setup.system_prompt in runner.prepare(history, setup.sampling).rendered.text
        text, stats = reply(runner, setup, history)
        assert stats.finish_reason == "stop", stats
        assert reply_problem(text, setup.reply_format) is None, text
        assert set(json.loads(text)) == set(EXTRACTION_SCHEMA["properties"])
        # The built-in's own (unbounded) grammar is accepted by llama.cpp's sampler too.
        short = replace(builtin.setup(), sampling=replace(builtin.sampling, max_tokens=16))
        start, _ = reply(runner, short, history)
        assert start.startswith("{")
    finally:
        engine.unload()
    with Store.open(tmp_path / "history.sqlite3") as store:
        conversation = store.create_conversation(**setup.conversation_fields())
        store.add_message(conversation.id, "user", history[-1].content)
        writer = store.start_reply(conversation.id, model=tiny_model.name)
        writer.append(text)
        writer.finish(ReplyStats("stop"), meta={"sampling": setup.sampling.to_dict()})
    with Store.open(tmp_path / "history.sqlite3") as store:
        reopened = ChatSetup.from_conversation(store.conversation(conversation.id))
        assert reopened == setup and reopened.assistant_name == "Short extractor"
        assert store.messages(conversation.id)[-1].content == text  # stored exactly as sent


def test_json_any_reply_format_with_the_real_engine(tiny_model: Path):
    """JSON mode through the real grammar sampler. A random-weight model rarely closes a JSON value by itself, so
    biases make "{", "}" and end-of-text its favourites: the grammar must still pick a valid order and stop."""
    engine = LlamaCppEngine()
    engine.load(tiny_model, LoadConfig(n_ctx=1024, n_threads=1))
    try:
        (opening,) = engine.tokenize("{", add_bos=False)[-1:]
        (closing,) = engine.tokenize("}", add_bos=False)[-1:]
        eos = engine.model.info.eos_token_id
        bias = ((closing, 30.0), (opening, 20.0), (eos, 10.0))
        setup = ChatSetup(
            reply_format=ReplyFormat(JSON_ANY),
            sampling=SamplingSettings(temperature=0.0, top_k=1, max_tokens=50, logit_bias=bias),
        )
        text, stats = reply(ChatRunner(engine), setup, [ChatMessage("user", "json please")])
        free, _ = reply(ChatRunner(engine), replace(setup, reply_format=ReplyFormat()), [ChatMessage("user", "x")])
    finally:
        engine.unload()
    assert free.startswith("}")  # without the grammar the favourite comes first
    assert stats.finish_reason == "stop" and reply_problem(text, setup.reply_format) is None, text
    assert json.loads(text) == {}


def test_setup_plugs_into_the_reply_pipeline(tmp_path: Path, library: AssistantLibrary):
    from app.core.remote_backend import reply_format_to_response_format
    from app.core.reply import ReplyRequest, create_conversation

    setup = library.get("Classifier").setup({"categories": "bug, question"})
    with Store.open(tmp_path / "history.sqlite3") as store:
        conversation_id = create_conversation(store, model_path="m.gguf", load_settings={}, **setup.create_args())
        assert ChatSetup.from_conversation(store.conversation(conversation_id)) == setup
    args = setup.request_args()
    request = ReplyRequest(messages=(*setup.system_messages(), ChatMessage("user", "It crashes")), **args)
    assert request.grammar and request.sampling == setup.sampling and request.template_override is None
    assert reply_format_to_response_format(request.meta["reply_format"]) == {
        "type": "json_schema",
        "json_schema": {"name": "reply", "strict": True, "schema": setup.reply_format.schema},
    }
    assert "bug, question" in request.messages[0].content
