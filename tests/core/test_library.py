"""The model library on real folders: Hearth's own, user folders, other apps' folders, the on-disk index."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest

from app.core.errors import GGUFError, LibraryError
from app.core.gguf_info import inspect
from app.core.library import ImportMode, Library, Source, external_folders
from app.core.paths import AppPaths
from app.core.settings import Settings
from app.core.tiny_model import TinyModelSpec, write_tiny_model


@pytest.fixture
def paths(hearth_home: AppPaths) -> AppPaths:
    return hearth_home.ensure()


@pytest.fixture
def settings(paths: AppPaths) -> Settings:
    return Settings(paths.settings_file)


class CountingInspector:
    """The real inspect(), counted: proves the index spares re-reading unchanged files."""

    def __init__(self) -> None:
        self.calls: list[Path] = []

    def __call__(self, path: Path):
        self.calls.append(path)
        return inspect(path)


def test_scan_finds_models_in_every_source(paths, settings, tiny_model, tmp_path):
    home = Path(os.environ["HOME"])
    shutil.copy(tiny_model, paths.models_dir / "mine.gguf")
    extra = tmp_path / "extra" / "deep" / "er"
    extra.mkdir(parents=True)
    shutil.copy(tiny_model, extra / "extra.gguf")
    settings.set("model_folders", [str(tmp_path / "extra")])
    lm = home / ".lmstudio" / "models" / "pub" / "repo"
    lm.mkdir(parents=True)
    shutil.copy(tiny_model, lm / "lm.gguf")
    # the HF cache layout: snapshots hold symlinks into blobs
    blob = Path(os.environ["HF_HOME"]) / "hub" / "models--org--repo" / "blobs" / "abc123"
    blob.parent.mkdir(parents=True)
    shutil.copy(tiny_model, blob)
    snap = blob.parent.parent / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (snap / "hf.gguf").symlink_to(blob)
    gpt4all = home / ".local" / "share" / "nomic.ai" / "GPT4All"
    os.environ["XDG_DATA_HOME"] = str(home / ".local" / "share")
    gpt4all.mkdir(parents=True)
    shutil.copy(tiny_model, gpt4all / "g4a.gguf")
    (paths.models_dir / "notes.txt").write_text("not a model")

    entries = Library(paths, settings, home=home).scan()
    found = {e.path.name: e.source for e in entries}
    assert found == {
        "mine.gguf": Source.HEARTH,
        "extra.gguf": Source.FOLDER,
        "lm.gguf": Source.LMSTUDIO,
        "hf.gguf": Source.HF_CACHE,
        "g4a.gguf": Source.GPT4ALL,
    }
    assert all(e.ok and e.info.architecture == "llama" for e in entries)

    settings.set("scan_external_libraries", False)
    assert {e.path.name for e in Library(paths, settings, home=home).scan()} == {"mine.gguf", "extra.gguf"}


def test_broken_files_are_listed_with_their_reason(paths, settings, tiny_model):
    (paths.models_dir / "empty.gguf").write_bytes(b"")
    (paths.models_dir / "html.gguf").write_text("<html>404 Not Found</html>")
    shutil.copy(tiny_model, paths.models_dir / "good.gguf")
    with open(tiny_model, "rb") as src:
        (paths.models_dir / "cut.gguf").write_bytes(src.read(300_000))
    entries = {e.path.name: e for e in Library(paths, settings).scan()}
    assert entries["good.gguf"].ok
    assert "too short" in entries["empty.gguf"].error
    assert "not a GGUF file" in entries["html.gguf"].error
    assert "truncated" in entries["cut.gguf"].error
    assert not any(entries[n].ok for n in ("empty.gguf", "html.gguf", "cut.gguf"))


def test_split_models_are_one_entry(paths, settings):
    for number in (1, 2, 3):
        spec = TinyModelSpec(extra_metadata={"split.no": number - 1, "split.count": 3}, seed=number)
        write_tiny_model(paths.models_dir / f"huge-0000{number}-of-00003.gguf", spec)
    entries = Library(paths, settings).scan()
    assert len(entries) == 1
    assert entries[0].path.name == "huge-00001-of-00003.gguf"
    assert len(entries[0].parts) == 3
    assert entries[0].size_bytes == sum(p.stat().st_size for p in entries[0].parts)


def test_partial_downloads_and_hidden_folders_are_ignored(paths, settings, tiny_model):
    hidden = paths.models_dir / ".downloads"
    hidden.mkdir()
    shutil.copy(tiny_model, hidden / "half.gguf")
    shutil.copy(tiny_model, paths.models_dir / "x.gguf.incomplete")
    assert Library(paths, settings).scan() == []


def test_index_spares_unchanged_files_and_notices_changes(paths, settings, tiny_model, make_tiny_model):
    for name in ("a.gguf", "b.gguf"):
        shutil.copy(tiny_model, paths.models_dir / name)
    counter = CountingInspector()
    assert len(Library(paths, settings, inspector=counter).scan()) == 2
    assert len(counter.calls) == 2

    counter.calls.clear()  # a new Library (a restart) reads the on-disk index
    entries = Library(paths, settings, inspector=counter).scan()
    assert counter.calls == [] and len(entries) == 2
    fresh = inspect(paths.models_dir / "a.gguf")
    assert entries[0].info == dataclasses.replace(fresh, tensors=())

    other = make_tiny_model("other-shape.gguf", n_layer=3, name="Changed")
    shutil.copy(other, paths.models_dir / "a.gguf")
    os.utime(paths.models_dir / "a.gguf", ns=(1, 1))
    (paths.models_dir / "b.gguf").unlink()
    entries = Library(paths, settings, inspector=counter).scan()
    assert [c.name for c in counter.calls] == ["a.gguf"]
    assert [(e.path.name, e.info.name) for e in entries] == [("a.gguf", "Changed")]


def test_damaged_index_costs_only_a_rescan(paths, settings, tiny_model):
    shutil.copy(tiny_model, paths.models_dir / "a.gguf")
    Library(paths, settings).scan()
    paths.library_index.write_text("{not json")
    assert [e.path.name for e in Library(paths, settings).scan()] == ["a.gguf"]


@pytest.mark.parametrize("mode", list(ImportMode))
def test_import_modes(paths, settings, tiny_model, tmp_path, mode):
    src = tmp_path / "incoming" / "new-model.gguf"
    src.parent.mkdir()
    shutil.copy(tiny_model, src)
    library = Library(paths, settings)
    entry = library.import_model(src, mode)
    target = paths.models_dir / "new-model.gguf"
    assert entry.path == target and entry.ok and entry.source is Source.HEARTH
    assert src.exists() == (mode is not ImportMode.MOVE)
    assert target.is_symlink() == (mode is ImportMode.LINK)
    assert target.read_bytes() == tiny_model.read_bytes()
    assert not list(paths.models_dir.glob(".*partial"))


def test_import_refuses_bad_files_and_name_clashes(paths, settings, tiny_model, make_tiny_model, tmp_path):
    library = Library(paths, settings)
    bad = tmp_path / "bad.gguf"
    bad.write_text("hello")
    with pytest.raises(GGUFError, match="bad.gguf"):
        library.import_model(bad)
    assert list(paths.models_dir.iterdir()) == []
    with pytest.raises(LibraryError, match="no such file"):
        library.import_model(tmp_path / "missing.gguf")
    library.import_model(tiny_model)
    other = tmp_path / tiny_model.name
    shutil.copy(make_tiny_model("different.gguf", seed=5), other)
    with pytest.raises(LibraryError, match="already in the library"):
        library.import_model(other)


def test_delete_removes_every_part_and_refuses_other_apps_files(paths, settings, tiny_model):
    for number in (1, 2):
        spec = TinyModelSpec(extra_metadata={"split.no": number - 1, "split.count": 2})
        write_tiny_model(paths.models_dir / f"m-0000{number}-of-00002.gguf", spec)
    lm = Path(os.environ["HOME"]) / ".lmstudio" / "models"
    lm.mkdir(parents=True)
    shutil.copy(tiny_model, lm / "theirs.gguf")
    library = Library(paths, settings)
    entries = {e.path.name: e for e in library.scan()}
    library.delete(entries["m-00001-of-00002.gguf"])
    assert list(paths.models_dir.glob("*.gguf")) == []
    with pytest.raises(LibraryError, match="belongs to lmstudio"):
        library.delete(entries["theirs.gguf"])
    assert (lm / "theirs.gguf").exists()


def test_external_folders_follow_the_environment(tmp_path):
    folders = dict((str(p), s) for s, p in external_folders(tmp_path, {"HF_HUB_CACHE": "/x/hub"}))
    assert folders["/x/hub"] is Source.HF_CACHE
    assert folders[str(tmp_path / ".lmstudio" / "models")] is Source.LMSTUDIO
