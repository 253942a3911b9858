"""What goes into the bundle: which Qt plugins are kept, which engine libraries are shipped, and where.

Plain functions over PyInstaller's (dest_name, src_path, typecode) entries, imported by hearth.spec and
tested without running PyInstaller. Qt plugins are kept by an allow-list (a new, unknown plugin type is
left out rather than silently shipping megabytes); libraries that only the dropped plugins needed are then
pruned by following the remaining binaries' imports.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import PurePosixPath

# Plugin folder -> file-name stems kept (None keeps the whole folder). Stems drop the lib prefix, q prefix
# and extension: libqxcb.so, qwindows.dll and libqcocoa.dylib are "xcb", "windows", "cocoa".
KEPT_QT_PLUGINS: dict[str, frozenset[str] | None] = {
    # offscreen: `--self-test` and headless use; xcb/wayland: Linux desktops; windows/cocoa: the others.
    "platforms": frozenset({"xcb", "wayland", "wayland-egl", "offscreen", "windows", "cocoa"}),
    # Native file dialogs through xdg-desktop-portal (D-Bus). Not gtk3: it would drag in half of the GTK
    # stack (cairo, pango, ...) to run against the system's own libgtk-3, a known source of crashes.
    "platformthemes": frozenset({"xdgdesktopportal"}),
    "platforminputcontexts": None,  # input methods (ibus, compose keys): typing CJK and accents
    "imageformats": frozenset({"svg", "ico", "icns", "jpeg", "gif"}),
    "iconengines": frozenset({"svgicon"}),
    "styles": None,  # Windows 11 style
    "xcbglintegrations": None,
    "wayland-decoration-client": None,
    "wayland-graphics-integration-client": None,
    "wayland-shell-integration": None,
}

_PLUGIN_DIR = re.compile(r"(?:^|/)PySide6/Qt/plugins/([^/]+)/([^/]+)$|(?:^|/)PySide6/plugins/([^/]+)/([^/]+)$")
_PLUGIN_STEM = re.compile(r"^(?:lib)?q?(.+?)(?:\.so|\.dll|\.dylib)$")


def plugin_of(dest_name: str) -> tuple[str, str] | None:
    """(plugin folder, stem) for a Qt plugin's destination path, else None."""
    match = _PLUGIN_DIR.search(dest_name.replace("\\", "/"))
    if match is None:
        return None
    folder, file_name = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
    stem = _PLUGIN_STEM.match(file_name)
    return folder, (stem.group(1) if stem else file_name)


def keep_qt_plugin(dest_name: str) -> bool:
    """False for a Qt plugin Hearth does not use; True for everything that is not a Qt plugin."""
    plugin = plugin_of(dest_name)
    if plugin is None:
        return True
    folder, stem = plugin
    if folder not in KEPT_QT_PLUGINS:
        return False
    kept = KEPT_QT_PLUGINS[folder]
    return kept is None or stem in kept


def drop_unused_qt_plugins(
    entries: list[tuple[str, str, str]], imports_of: Callable[[str], Iterable[str]]
) -> list[tuple[str, str, str]]:
    """Remove the Qt plugins Hearth does not use, then the libraries that only those plugins needed.

    A library is removed only when a dropped plugin reached it and nothing kept does (e.g. QtPdf for the
    pdf image plugin, the GTK drawing stack for the gtk3 theme); symlinks to removed files go too.
    imports_of(src_path) gives the library names a binary links against (DT_NEEDED / PE imports).
    """
    dropped = [entry for entry in entries if entry[2] != "SYMLINK" and not keep_qt_plugin(entry[0])]
    rest = [entry for entry in entries if entry not in dropped]
    by_name: dict[str, list[tuple[str, str, str]]] = {}
    for entry in rest:
        if entry[2] != "SYMLINK":
            by_name.setdefault(_base_name(entry[0]), []).append(entry)

    def reachable(starts: Iterable[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
        seen: set[tuple[str, str, str]] = set()
        todo = list(starts)
        while todo:
            entry = todo.pop()
            for name in imports_of(entry[1]):
                for dep in by_name.get(_base_name(name), []):
                    if dep not in seen:
                        seen.add(dep)
                        todo.append(dep)
        return seen

    candidates = reachable(dropped)
    roots = [entry for entry in rest if entry not in candidates and entry[2] != "SYMLINK"]
    needed = reachable(roots)
    kept = [entry for entry in rest if entry not in candidates or entry in needed]
    return drop_dangling_symlinks(kept, kept)


def drop_dangling_symlinks(
    entries: list[tuple[str, str, str]], present: list[tuple[str, str, str]]
) -> list[tuple[str, str, str]]:
    """Remove SYMLINK entries (PyInstaller keeps them with the data files) whose target is not collected."""
    dests = {entry[0].replace("\\", "/") for entry in present if entry[2] != "SYMLINK"}
    return [entry for entry in entries if entry[2] != "SYMLINK" or entry[1].replace("\\", "/") in dests]


def _base_name(path: str) -> str:
    return PurePosixPath(path.replace("\\", "/")).name.lower()  # Windows names are case-blind


def is_engine_library(dest_name: str) -> bool:
    """A llama.cpp shared library inside the llama_cpp package (llama_cpp/lib/...)."""
    return dest_name.replace("\\", "/").startswith("llama_cpp/lib/")


_CPU_VARIANT = re.compile(r"^(?:lib)?ggml-cpu-[A-Za-z0-9_.]+\.(?:so|dll)$")


def is_cpu_variant(file_name: str) -> bool:
    """One of llama.cpp's CPU backend variants (libggml-cpu-haswell.so), built with GGML_CPU_ALL_VARIANTS.

    ggml loads the best one at run time from the executable's folder, so the bundle puts them there.
    """
    return bool(_CPU_VARIANT.match(file_name))


_RPC_MODULE = re.compile(r"^(?:lib)?ggml-rpc\.(?:so|dll)$")


def is_backend_module(file_name: str) -> bool:
    """A backend that a GGML_BACKEND_DL build of ggml loads at run time from the executable's folder: the CPU
    variants and the RPC backend (libggml-rpc.so, for `hearth rpc-worker` and RPC workers). The bundle puts
    them next to the executable. (Without GGML_BACKEND_DL the RPC backend is an ordinary linked library.)"""
    return is_cpu_variant(file_name) or bool(_RPC_MODULE.match(file_name))
