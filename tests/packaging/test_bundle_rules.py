"""Which Qt plugins and libraries the bundle keeps, on real PyInstaller-style entries and real ELF imports."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "packaging"))

import bundle_rules


@pytest.mark.parametrize(
    ("dest", "kept"),
    [
        ("PySide6/Qt/plugins/platforms/libqxcb.so", True),
        ("PySide6/Qt/plugins/platforms/libqoffscreen.so", True),
        ("PySide6/Qt/plugins/platforms/libqwayland.so", True),
        ("PySide6/Qt/plugins/platforms/libqvnc.so", False),
        ("PySide6/Qt/plugins/platforms/libqeglfs.so", False),
        ("PySide6\\plugins\\platforms\\qwindows.dll", True),
        ("PySide6/Qt/plugins/platforms/libqcocoa.dylib", True),
        ("PySide6/Qt/plugins/imageformats/libqsvg.so", True),
        ("PySide6/Qt/plugins/imageformats/libqpdf.so", False),
        ("PySide6/Qt/plugins/iconengines/libqsvgicon.so", True),
        ("PySide6/Qt/plugins/platformthemes/libqgtk3.so", False),
        ("PySide6/Qt/plugins/platformthemes/libqxdgdesktopportal.so", True),
        ("PySide6/Qt/plugins/egldeviceintegrations/libqeglfs-kms-integration.so", False),
        ("PySide6/Qt/plugins/some-future-type/libqthing.so", False),  # unknown types stay out
        ("PySide6/Qt/lib/libQt6Core.so.6", True),  # not a plugin
        ("llama_cpp/lib/libllama.so", True),
    ],
)
def test_plugin_allow_list(dest: str, kept: bool):
    assert bundle_rules.keep_qt_plugin(dest) is kept


def test_dropped_plugin_takes_only_its_own_libraries_along():
    # A toy dependency graph: the pdf plugin alone needs QtPdf; QtGui is needed by a kept plugin as well.
    imports = {
        "/src/libqpdf.so": ["libQt6Pdf.so.6", "libQt6Gui.so.6"],
        "/src/libqsvg.so": ["libQt6Svg.so.6", "libQt6Gui.so.6"],
        "/src/libQt6Pdf.so.6": ["libQt6Gui.so.6"],
        "/src/libQt6Svg.so.6": ["libQt6Gui.so.6"],
        "/src/libQt6Gui.so.6": [],
    }
    entries = [
        ("PySide6/Qt/plugins/imageformats/libqpdf.so", "/src/libqpdf.so", "BINARY"),
        ("PySide6/Qt/plugins/imageformats/libqsvg.so", "/src/libqsvg.so", "BINARY"),
        ("PySide6/Qt/lib/libQt6Pdf.so.6", "/src/libQt6Pdf.so.6", "BINARY"),
        ("PySide6/Qt/lib/libQt6Svg.so.6", "/src/libQt6Svg.so.6", "BINARY"),
        ("PySide6/Qt/lib/libQt6Gui.so.6", "/src/libQt6Gui.so.6", "BINARY"),
        ("libQt6Pdf.so.6", "PySide6/Qt/lib/libQt6Pdf.so.6", "SYMLINK"),
        ("libQt6Gui.so.6", "PySide6/Qt/lib/libQt6Gui.so.6", "SYMLINK"),
    ]
    kept = bundle_rules.drop_unused_qt_plugins(entries, lambda src: imports[src])
    assert [dest for dest, _, _ in kept] == [
        "PySide6/Qt/plugins/imageformats/libqsvg.so",
        "PySide6/Qt/lib/libQt6Svg.so.6",
        "PySide6/Qt/lib/libQt6Gui.so.6",
        "libQt6Gui.so.6",
    ]


def test_pruning_follows_real_elf_imports():
    # PyInstaller's own reader on the real Qt files installed here: dropping the eglfs platform plugin drops
    # the EglFS library that only it links against, and keeps what the xcb plugin needs.
    from PyInstaller.depend.bindepend import get_imports
    from PySide6 import __file__ as pyside_init

    qt = Path(pyside_init).parent / "Qt"
    files = {
        "PySide6/Qt/plugins/platforms/libqeglfs.so": qt / "plugins/platforms/libqeglfs.so",
        "PySide6/Qt/plugins/platforms/libqxcb.so": qt / "plugins/platforms/libqxcb.so",
        "PySide6/Qt/lib/libQt6EglFSDeviceIntegration.so.6": qt / "lib/libQt6EglFSDeviceIntegration.so.6",
        "PySide6/Qt/lib/libQt6XcbQpa.so.6": qt / "lib/libQt6XcbQpa.so.6",
        "PySide6/Qt/lib/libQt6Gui.so.6": qt / "lib/libQt6Gui.so.6",
    }
    assert all(path.exists() for path in files.values()), "PySide6's file layout changed"
    entries = [(dest, str(src), "BINARY") for dest, src in files.items()]
    kept = bundle_rules.drop_unused_qt_plugins(entries, lambda src: [n for n, _ in get_imports(src)])
    assert [dest for dest, _, _ in kept] == [
        "PySide6/Qt/plugins/platforms/libqxcb.so",
        "PySide6/Qt/lib/libQt6XcbQpa.so.6",
        "PySide6/Qt/lib/libQt6Gui.so.6",
    ]


@pytest.mark.parametrize(
    ("name", "variant"),
    [
        ("libggml-cpu-haswell.so", True),
        ("libggml-cpu-x64.so", True),
        ("ggml-cpu-skylakex.dll", True),
        ("libggml-cpu-armv8.2_1.so", True),
        ("libggml-cpu.so", False),
        ("libggml-cpu.so.0", False),
        ("libggml-base.so", False),
    ],
)
def test_cpu_variants(name: str, variant: bool):
    assert bundle_rules.is_cpu_variant(name) is variant


@pytest.mark.parametrize(
    ("name", "module"),
    [
        ("libggml-rpc.so", True),
        ("ggml-rpc.dll", True),
        ("libggml-cpu-haswell.so", True),
        ("libggml-rpc.so.0", False),  # a linked library's soname copy (builds without GGML_BACKEND_DL)
        ("libggml-rpc.dylib", False),  # macOS builds link their backends
        ("libggml.so", False),
        ("libggml-base.so", False),
    ],
)
def test_backend_modules(name: str, module: bool):
    assert bundle_rules.is_backend_module(name) is module
