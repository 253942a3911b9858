"""The icon files made from hearth.svg, read back with Qt's own ICO and ICNS readers."""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtGui import QImage, QImageReader

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "packaging"))

import icons


def read_all(path: Path) -> list[QImage]:
    reader = QImageReader(str(path))
    images = []
    for index in range(reader.imageCount()):
        assert reader.jumpToImage(index)
        images.append(reader.read())
    return images


def test_icon_files_hold_every_size(tmp_path: Path, qapp):
    written = icons.write_icons(tmp_path)
    for size in icons.LINUX_SIZES:
        image = QImage(str(written[f"png{size}"]))
        assert (image.width(), image.height()) == (size, size)
        assert image.pixelColor(size // 2, size * 5 // 8).alpha() == 255  # the flame, opaque
        assert image.pixelColor(0, 0).alpha() == 0  # the rounded corner, transparent
    assert [image.width() for image in read_all(written["ico"])] == list(icons.ICO_SIZES)
    assert [image.width() for image in read_all(written["icns"])] == [size for _, size in icons.ICNS_TYPES]


def test_ico_directory_encodes_256_as_zero():
    data = icons.ico_bytes({16: b"a" * 10, 256: b"b" * 20})
    assert data[:6] == b"\0\0\1\0\2\0"
    assert data[6:8] == bytes([16, 16]) and data[22:24] == bytes([0, 0])
    assert data[-20:] == b"b" * 20
