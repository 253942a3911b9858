"""The model library: every GGUF in Hearth's folder, the user's folders and other apps' model folders.

Scanning is cheap when nothing changed: headers are parsed once and cached on disk keyed by
path + size + mtime, so a warm rescan is a directory walk plus a stat per file. Broken files stay in the
list with their reason; one bad file never hides the others or stops a scan.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from app.core.errors import GGUFError, LibraryError
from app.core.gguf_info import SPLIT_RE, ModelInfo, inspect, split_parts
from app.core.lora import PeftAdapter, find_peft_adapters, peft_adapter
from app.core.paths import AppPaths
from app.core.settings import Settings

log = logging.getLogger("hearth.library")

INDEX_VERSION = 2  # 2: infos carry matrix_shapes (to match LoRA adapters with their bases)
PARTIAL_SUFFIXES = (".incomplete", ".part", ".partial", ".download")


class Source(StrEnum):
    """Where a model was found; decides what Hearth may do with it (it never deletes other apps' files)."""

    HEARTH = "hearth"
    FOLDER = "folder"
    HF_CACHE = "huggingface"
    LMSTUDIO = "lmstudio"
    GPT4ALL = "gpt4all"


class ImportMode(StrEnum):
    COPY = "copy"
    MOVE = "move"
    LINK = "link"


@dataclass(frozen=True)
class LibraryEntry:
    """One model in the library: a single file or all parts of a split model."""

    path: Path
    source: Source
    size_bytes: int
    mtime_ns: int
    info: ModelInfo | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.info is not None

    @property
    def parts(self) -> tuple[Path, ...]:
        return self.info.parts if self.info else (split_parts(self.path) or (self.path,))

    @property
    def display_name(self) -> str:
        return self.info.display_name if self.info else self.path.name

    @property
    def key(self) -> str:
        """The name per-model settings are stored under: the file name, stable across moves."""
        return self.path.name

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "source": str(self.source),
            "size_bytes": self.size_bytes,
            "error": self.error,
            "info": self.info.to_dict(with_tensors=False) if self.info else None,
        }


def external_folders(home: Path | None = None, environ: dict[str, str] | None = None) -> list[tuple[Source, Path]]:
    """Other apps' model folders on this platform (whether or not they exist)."""
    env = os.environ if environ is None else environ
    home = Path(home) if home is not None else Path.home()
    folders: list[tuple[Source, Path]] = []
    hf_cache = env.get("HF_HUB_CACHE") or (
        str(Path(env["HF_HOME"]) / "hub") if env.get("HF_HOME") else str(home / ".cache" / "huggingface" / "hub")
    )
    folders.append((Source.HF_CACHE, Path(hf_cache)))
    folders.append((Source.LMSTUDIO, home / ".lmstudio" / "models"))
    folders.append((Source.LMSTUDIO, home / ".cache" / "lm-studio" / "models"))
    if sys.platform == "darwin":
        folders.append((Source.GPT4ALL, home / "Library" / "Application Support" / "nomic.ai" / "GPT4All"))
    elif sys.platform == "win32":
        local = Path(env.get("LOCALAPPDATA", str(home / "AppData" / "Local")))
        folders.append((Source.GPT4ALL, local / "nomic.ai" / "GPT4All"))
    else:
        data_home = Path(env.get("XDG_DATA_HOME") or home / ".local" / "share")
        folders.append((Source.GPT4ALL, data_home / "nomic.ai" / "GPT4All"))
    return folders


def _walk_gguf(root: Path) -> Iterator[os.DirEntry[str]]:
    """Every *.gguf below root, depth first, skipping hidden folders (partial downloads live there)."""
    try:
        with os.scandir(root) as it:
            entries = list(it)
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if name.startswith("."):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                yield from _walk_gguf(Path(entry.path))
            elif name.lower().endswith(".gguf") and entry.is_file():
                yield entry
        except OSError:
            continue


class Library:
    """Scans folders into LibraryEntry objects, caches headers, imports and deletes model files."""

    def __init__(
        self,
        paths: AppPaths,
        settings: Settings | None = None,
        *,
        home: Path | None = None,
        inspector: Callable[[Path], ModelInfo] = inspect,
    ) -> None:
        self.paths = paths
        self.settings = settings
        self.home = home
        self._inspect = inspector
        self._index: dict[str, dict[str, Any]] | None = None
        self._entries: dict[str, LibraryEntry] = {}  # built entries by path, reused while unchanged

    # ---- folders -------------------------------------------------------------------------------
    def folders(self) -> list[tuple[Source, Path]]:
        folders: list[tuple[Source, Path]] = [(Source.HEARTH, self.paths.models_dir)]
        if self.settings is not None:
            folders += [(Source.FOLDER, Path(p).expanduser()) for p in self.settings.get("model_folders")]
            if self.settings.get("scan_external_libraries"):
                folders += external_folders(self.home)
        return folders

    # ---- scanning ------------------------------------------------------------------------------
    def scan(self) -> list[LibraryEntry]:
        """All models, sorted by name; broken files included with their reason. Never raises for a file."""
        index = self._load_index()
        seen_real: set[str] = set()
        fresh: dict[str, dict[str, Any]] = {}
        entries: list[LibraryEntry] = []
        for source, folder in self.folders():
            for dir_entry in _walk_gguf(folder):
                path = Path(dir_entry.path)
                match = SPLIT_RE.match(path.name)
                if match and int(match.group("no")) != 1:
                    continue  # later parts are listed under their first part
                try:
                    real = os.path.realpath(path)
                    stat = os.stat(path)
                except OSError:
                    continue
                if real in seen_real:
                    continue  # the same file reached twice (a link into another folder)
                seen_real.add(real)
                entry, record = self._entry(path, source, stat, index.get(real))
                fresh[real] = record
                entries.append(entry)
        if fresh != index:
            self._save_index(fresh)
        entries.sort(key=lambda e: (e.display_name.lower(), str(e.path)))
        return entries

    def _entry(
        self, path: Path, source: Source, stat: os.stat_result, cached: dict[str, Any] | None
    ) -> tuple[LibraryEntry, dict[str, Any]]:
        parts = split_parts(path)
        size, mtime = stat.st_size, stat.st_mtime_ns
        if parts:  # a split model changes when any of its parts does
            for part in parts[1:]:
                try:
                    part_stat = os.stat(part)
                except OSError:
                    continue
                size += part_stat.st_size
                mtime = max(mtime, part_stat.st_mtime_ns)
        if isinstance(cached, dict) and cached.get("size") == size and cached.get("mtime_ns") == mtime:
            known = self._entries.get(str(path))
            if known is not None and known.size_bytes == size and known.mtime_ns == mtime:
                return known, cached  # the same library rescanning: nothing to rebuild
            try:
                info = ModelInfo.from_dict(cached["info"]) if cached.get("info") else None
                entry = LibraryEntry(path, source, size, mtime, info, cached.get("error"))
            except (TypeError, KeyError, ValueError, AttributeError):
                log.warning("library index entry for %s is damaged; reading the file again", path)
            else:
                self._entries[str(path)] = entry
                return entry, cached
        info = None
        error: str | None = None
        try:
            info = self._inspect(path)
        except GGUFError as exc:
            error = str(exc)
        except Exception as exc:  # a reader bug must not hide the rest of the library
            log.exception("unexpected error inspecting %s", path)
            error = f"{path.name}: unexpected error ({type(exc).__name__}: {exc})"
        record = {
            "size": size,
            "mtime_ns": mtime,
            "info": info.to_dict(with_tensors=False) if info else None,
            "error": error,
        }
        entry = LibraryEntry(path, source, size, mtime, info, error)
        self._entries[str(path)] = entry
        return entry, record

    def _load_index(self) -> dict[str, dict[str, Any]]:
        if self._index is not None:
            return self._index
        try:
            data = json.loads(self.paths.library_index.read_text(encoding="utf-8"))
            index = data["entries"] if data.get("version") == INDEX_VERSION else {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            index = {}  # a missing or damaged cache only costs one cold scan
        self._index = index if isinstance(index, dict) else {}
        return self._index

    def _save_index(self, index: dict[str, dict[str, Any]]) -> None:
        self._index = index
        target = self.paths.library_index
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".index-", dir=target.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"version": INDEX_VERSION, "entries": index}, handle, separators=(",", ":"))
            os.replace(tmp, target)
        except OSError as exc:  # a read-only cache folder slows scans down, nothing more
            log.warning("cannot write library index %s: %s", target, exc)

    # ---- import / delete ----------------------------------------------------------------------
    def import_model(
        self,
        source: str | os.PathLike[str],
        mode: ImportMode | str = ImportMode.COPY,
        progress: Callable[[int, int], None] | None = None,
    ) -> LibraryEntry:
        """Bring a GGUF (all parts of a split model) into Hearth's models folder by copy, move or link.

        The file is validated first, so nothing that is not a readable GGUF is ever copied. Copies go to a
        temporary name and are renamed when complete: an interrupted import leaves no half file behind.
        """
        mode = ImportMode(mode)
        src = Path(source).expanduser()
        peft = peft_adapter(src) if src.exists() else None
        if peft is not None and not src.name.lower().endswith(".gguf"):
            raise LibraryError(peft.advice(self.paths.models_dir))
        if not src.is_file():
            raise LibraryError(f"{src}: no such file" if not src.exists() else f"{src} is a folder, not a GGUF file")
        info = inspect(src)  # GGUFError explains what is wrong with the file
        dest_dir = self.paths.models_dir
        dest_dir.mkdir(parents=True, exist_ok=True)
        targets = [(part, dest_dir / part.name) for part in info.parts]
        for part, target in targets:
            if target.exists() or target.is_symlink():
                if os.path.realpath(part) == os.path.realpath(target):
                    continue
                raise LibraryError(f"{target.name} is already in the library ({target}); rename or delete it first")
        total = sum(part.stat().st_size for part, _ in targets)
        free = shutil.disk_usage(dest_dir).free
        if mode is ImportMode.COPY and total > free:
            raise LibraryError(f"not enough space to copy {src.name}: needs {total} bytes, {free} free")
        done = 0
        for part, target in targets:
            if os.path.realpath(part) == os.path.realpath(target):
                continue
            done = self._place(part, target, mode, done, total, progress)
        return self._entry_for(dest_dir / info.parts[0].name)

    def _place(
        self,
        part: Path,
        target: Path,
        mode: ImportMode,
        done: int,
        total: int,
        progress: Callable[[int, int], None] | None,
    ) -> int:
        size = part.stat().st_size
        try:
            if mode is ImportMode.LINK:
                os.symlink(part.resolve(), target)
                return done + size
            if mode is ImportMode.MOVE:
                try:
                    os.replace(part, target)  # same filesystem: instant and atomic
                    return done + size
                except OSError:
                    pass  # another filesystem: copy, then remove the original
            self._copy(part, target, done, total, progress)
            if mode is ImportMode.MOVE:
                part.unlink()
            return done + size
        except OSError as exc:
            raise LibraryError(f"cannot {mode.value} {part.name} into the library: {exc.strerror or exc}") from exc

    @staticmethod
    def _copy(src: Path, target: Path, done: int, total: int, progress: Callable[[int, int], None] | None) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
        try:
            with open(src, "rb") as reader, os.fdopen(fd, "wb") as writer:
                while chunk := reader.read(8 * 1024 * 1024):
                    writer.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
            shutil.copystat(src, tmp)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _entry_for(self, path: Path) -> LibraryEntry:
        self._index = None
        for entry in self.scan():
            if Path(entry.path) == path:
                return entry
        raise LibraryError(f"{path} was imported but is not visible in the library")

    def can_delete(self, entry: LibraryEntry) -> str | None:
        """None when Hearth may delete the entry's files, else the reason it will not."""
        if entry.source in (Source.HF_CACHE, Source.LMSTUDIO, Source.GPT4ALL):
            return f"{entry.path.name} belongs to {entry.source.value}; remove it there"
        return None

    def delete(self, entry: LibraryEntry) -> None:
        """Delete every part of a model (a linked import loses only the link). The UI confirms first."""
        reason = self.can_delete(entry)
        if reason:
            raise LibraryError(reason)
        roots = [folder.resolve() for source, folder in self.folders() if source in (Source.HEARTH, Source.FOLDER)]
        for part in entry.parts:
            parent = part.parent.resolve()
            if not any(parent == root or root in parent.parents for root in roots):
                raise LibraryError(f"{part} is outside the library folders; not deleting")
        for part in entry.parts:
            try:
                part.unlink(missing_ok=True)
            except OSError as exc:
                raise LibraryError(f"cannot delete {part.name}: {exc.strerror or exc}") from exc
        self._index = None

    def peft_adapters(self) -> list[PeftAdapter]:
        """PEFT LoRA adapter folders (Hugging Face format) in the library's folders: llama.cpp cannot load them,
        so the Models page lists them with the command that converts each to GGUF (PeftAdapter.advice)."""
        return find_peft_adapters(folder for _, folder in self.folders())

    def find(self, path: str | os.PathLike[str], entries: Iterable[LibraryEntry] | None = None) -> LibraryEntry | None:
        """The entry for a path (any part of a split model), or None."""
        wanted = os.path.realpath(path)
        for entry in entries if entries is not None else self.scan():
            if any(os.path.realpath(p) == wanted for p in entry.parts):
                return entry
        return None
