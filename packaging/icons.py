"""Render resources/icons/hearth.svg to the icon files each platform wants: PNG sizes, .ico and .icns.

Qt rasterizes the SVG (QSvgRenderer, offscreen); the .ico and .icns containers are written here, both as
lists of PNG images (Windows Vista+ and macOS 10.7+ read PNG entries), so no image library is needed.
Run as a script: `python packaging/icons.py OUT_DIR`.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SVG = REPO / "resources" / "icons" / "hearth.svg"

LINUX_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)  # hicolor theme folders
ICO_SIZES = (16, 20, 24, 32, 40, 48, 64, 256)  # Explorer, taskbar and title bar at 100–250 % scaling
# macOS icon types holding PNG data, by pixel size (the @2x types reuse the larger pixel sizes).
ICNS_TYPES = (
    (b"icp4", 16),
    (b"icp5", 32),
    (b"icp6", 64),
    (b"ic07", 128),
    (b"ic08", 256),
    (b"ic09", 512),
    (b"ic10", 1024),
    (b"ic11", 32),
    (b"ic12", 64),
    (b"ic13", 256),
    (b"ic14", 512),
)


def render_pngs(sizes: set[int] | tuple[int, ...], svg: Path = SVG) -> dict[int, bytes]:
    """PNG bytes of the SVG at each square pixel size, with a transparent background."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    _app = QGuiApplication.instance() or QGuiApplication([sys.argv[0]])
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise ValueError(f"{svg} is not an SVG image Qt can render")
    pngs: dict[int, bytes] = {}
    for size in sorted(set(sizes)):
        image = QImage(size, size, QImage.Format.Format_ARGB32)
        image.fill(0)
        painter = QPainter(image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        renderer.render(painter)
        painter.end()
        data = QByteArray()
        buffer = QBuffer(data)
        buffer.open(QIODevice.OpenModeFlag.WriteOnly)
        image.save(buffer, "PNG")
        buffer.close()
        pngs[size] = bytes(data.data())
    return pngs


def ico_bytes(pngs: dict[int, bytes]) -> bytes:
    """A Windows .ico: ICONDIR, one ICONDIRENTRY per image, then the PNG data."""
    sizes = sorted(pngs)
    header = struct.pack("<HHH", 0, 1, len(sizes))
    offset = len(header) + 16 * len(sizes)
    entries, blobs = b"", b""
    for size in sizes:
        data = pngs[size]
        dim = 0 if size >= 256 else size  # 0 means 256 in the one-byte width/height fields
        entries += struct.pack("<BBBBHHII", dim, dim, 0, 0, 1, 32, len(data), offset + len(blobs))
        blobs += data
    return header + entries + blobs


def icns_bytes(pngs: dict[int, bytes]) -> bytes:
    """A macOS .icns: 'icns' + total length, then (type, length, PNG) chunks; lengths include headers."""
    chunks = b"".join(
        kind + struct.pack(">I", 8 + len(pngs[size])) + pngs[size] for kind, size in ICNS_TYPES if size in pngs
    )
    return b"icns" + struct.pack(">I", 8 + len(chunks)) + chunks


def write_icons(out_dir: Path, svg: Path = SVG) -> dict[str, Path]:
    """Write hearth-<size>.png for the Linux sizes, hearth.ico and hearth.icns into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pngs = render_pngs(set(LINUX_SIZES) | set(ICO_SIZES) | {size for _, size in ICNS_TYPES}, svg)
    written: dict[str, Path] = {}
    for size in LINUX_SIZES:
        path = out_dir / f"hearth-{size}.png"
        path.write_bytes(pngs[size])
        written[f"png{size}"] = path
    written["ico"] = out_dir / "hearth.ico"
    written["ico"].write_bytes(ico_bytes({size: pngs[size] for size in ICO_SIZES}))
    written["icns"] = out_dir / "hearth.icns"
    written["icns"].write_bytes(icns_bytes(pngs))
    return written


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python packaging/icons.py OUT_DIR")
    for path in write_icons(Path(sys.argv[1])).values():
        print(path)
