"""The prompt library: {{variables}} found and filled, built-ins, the user's prompts on disk, the `/` search,
import and export (a bad file refused whole, with the reason, nothing lost)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.core.errors import PromptError
from app.core.paths import AppPaths
from app.core.placeholders import MissingValueError, fill, placeholders, variables
from app.core.prompt_library import Prompt, PromptLibrary


@pytest.fixture
def library(hearth_home: AppPaths) -> PromptLibrary:
    return PromptLibrary.default(hearth_home)


def test_variables_are_found_in_order_and_json_braces_are_text():
    text = 'Translate {{ text }} into {{target language}}; again {{text}}. Example: {{"a": {"b": 1}}} {{1x}}'
    assert variables(text) == ("text", "target language")
    assert [(p.name, text[p.start : p.end]) for p in placeholders(text)][:2] == [
        ("text", "{{ text }}"),
        ("target language", "{{target language}}"),
    ]


def test_fill_uses_values_then_defaults_and_names_every_missing_one():
    text = "{{a}} and {{b}} and {{c}} and {{a}}"
    assert fill(text, {"a": "1", "b": "2"}, {"c": "3"}) == "1 and 2 and 3 and 1"
    assert fill(text, {"a": "1", "b": "2", "c": "  "}, {"c": ""}) == "1 and 2 and  and 1"  # a blank default is a value
    with pytest.raises(MissingValueError, match=r"fill in \{\{b\}\}, \{\{c\}\}: they have no value") as caught:
        fill(text, {"a": "1", "b": " "})
    assert caught.value.names == ("b", "c")
    assert fill("no variables {{ }}", {}) == "no variables {{ }}"


def test_built_ins_cover_translate_summarise_extract(library: PromptLibrary):
    names = [p.name for p in library.all()]
    assert names[:3] == ["Translate", "Summarise", "Extract as JSON"]
    translate = library.get("translate")
    assert translate.variables == ("language", "text")
    assert translate.render({"text": "Bonjour"}).endswith(
        "into English. Keep the meaning, tone and formatting; reply with the translation only.\n\nBonjour"
    )
    with pytest.raises(PromptError, match="built in"):
        library.save(translate)
    with pytest.raises(PromptError, match="built in"):
        library.delete("Translate")


def test_user_prompts_are_saved_listed_and_unique(library: PromptLibrary, hearth_home: AppPaths):
    saved = library.save(Prompt("", "Reply politely", "Write a polite reply to:\n{{message}}", "For email"))
    assert (hearth_home.prompts_dir / f"{saved.id}.json").is_file()
    again = PromptLibrary.default(hearth_home)
    assert again.get("reply politely") == saved and saved in again.all()
    with pytest.raises(PromptError, match="already a prompt named 'Reply politely'"):
        library.save(Prompt("", "REPLY POLITELY", "x"))
    with pytest.raises(PromptError, match="needs text"):
        library.save(Prompt("", "Empty", "   "))
    library.delete(saved.id)
    assert library.find("Reply politely") is None


def test_search_ranks_name_prefix_then_word_then_substring(library: PromptLibrary):
    library.save(Prompt("", "Polish summary", "Polish: {{text}}", "make a summary read well"))
    assert [p.name for p in library.search("sum")] == ["Summarise", "Polish summary"]
    assert [p.name for p in library.search("json")] == ["Extract as JSON"]
    assert len(library.search("")) == len(library.all())
    assert library.search("zzz") == []


def test_export_then_import_round_trip(tmp_path: Path, library: PromptLibrary, hearth_home: AppPaths):
    library.save(Prompt("", "Haiku", "Write a haiku about {{topic}}.", defaults={"topic": "rain"}))
    library.save(Prompt("", "Fix grammar", "Correct the grammar:\n{{text}}"))
    exported = tmp_path / "prompts.json"
    exported.write_text(library.export_text(), encoding="utf-8")
    data = json.loads(exported.read_text())
    assert data["format"] == "hearth-prompts" and [p["name"] for p in data["prompts"]] == ["Fix grammar", "Haiku"]
    assert "id" not in data["prompts"][0]

    other = PromptLibrary(tmp_path / "other")
    imported = other.import_file(exported)
    assert [(p.name, p.text, p.defaults) for p in imported] == [
        ("Fix grammar", "Correct the grammar:\n{{text}}", {}),
        ("Haiku", "Write a haiku about {{topic}}.", {"topic": "rain"}),
    ]
    twice = other.import_file(exported)  # names taken: numbered, nothing overwritten
    assert [p.name for p in twice] == ["Fix grammar (2)", "Haiku (2)"]
    assert len(other.user_prompts()) == 4
    single = tmp_path / "one.json"
    single.write_text(library.export_text(["Translate"]))  # a built-in can be exported by name
    assert [p.name for p in other.import_file(single)] == ["Translate (2)"]


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ('{"prompts": [{"name": "ok", "text": "fine"}, {"name": "bad"}]}', r"bad.json: prompt 2 \(bad\):.*needs text"),
        ('{"prompts": [{"name": "a", "text": "b"}, ', r"not valid JSON \(line 1, column 42"),
        ('{"prompts": []}', "expected"),
        ('{"format": "something-else", "prompts": [{"name": "a", "text": "b"}]}', "not a Hearth prompt file"),
        ('{"version": 9, "prompts": [{"name": "a", "text": "b"}]}', "newer than this Hearth"),
        ('{"prompts": [{"name": 3, "text": "b"}]}', "name must be text, not int"),
        ('{"prompts": [{"name": "a", "text": "b", "defaults": {"x": 1}}]}', "defaults must be an object of text"),
    ],
)
def test_bad_import_is_refused_whole(tmp_path: Path, library: PromptLibrary, content: str, pattern: str):
    bad = tmp_path / "bad.json"
    bad.write_text(content, encoding="utf-8")
    before = library.user_prompts()
    with pytest.raises(PromptError, match=pattern):
        library.import_file(bad)
    assert library.user_prompts() == before
    assert bad.read_text(encoding="utf-8") == content  # the user's file is never touched


def test_missing_import_file(tmp_path: Path, library: PromptLibrary):
    with pytest.raises(PromptError, match="no such file"):
        library.import_file(tmp_path / "nope.json")


def test_unreadable_prompt_files_are_moved_aside_not_lost(library: PromptLibrary, hearth_home: AppPaths):
    good = library.save(Prompt("", "Good", "fine {{x}}"))
    folder = hearth_home.prompts_dir
    (folder / "broken-1.json").write_text("{not json", encoding="utf-8")
    (folder / "invalid-2.json").write_text('{"id": "invalid-2", "name": "", "text": "x"}', encoding="utf-8")
    (folder / "future-3.json").write_text('{"id": "future-3", "version": 7, "name": "F", "text": "x"}')
    assert [p.name for p in library.user_prompts()] == ["Good"]
    problems = library.problems
    assert any("broken-1.json is unusable (not valid JSON (line 1, column 2" in p for p in problems)
    assert any("invalid-2.json is unusable (a prompt needs a one-line name" in p for p in problems)
    assert any("future-3.json: prompt format version 7 is newer" in p for p in problems)
    names = sorted(p.name for p in folder.iterdir())
    assert f"{good.id}.json" in names and "future-3.json" in names  # a newer Hearth's file stays in place
    assert any(n.startswith("broken-1.json.broken-") for n in names)
    assert any(n.startswith("invalid-2.json.broken-") for n in names)
    assert library.user_prompts() and library.problems == [
        "future-3.json: prompt format version 7 is newer than this Hearth's (1); skipped (update Hearth to use it)"
    ]
