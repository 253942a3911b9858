"""Screenshots of Hearth's main states for the README, taken from the real app.

Run under Xvfb so Qt draws real window decorations-free frames with the xcb platform:

    xvfb-run -a -s "-screen 0 1400x900x24" python tests/support/screenshots.py resources/screenshots

Everything runs in a temporary HEARTH_HOME: a generated tiny model in the library, a conversation seeded
through the history store (a random-weight model writes gibberish, so the sample reply is written by us and
saved as a normal assistant message), and the stand-in Hub on 127.0.0.1 for the Hub page. The PNGs are
saved as 8-bit palette images to keep the repository small.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from PySide6.QtGui import QImage

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SAMPLE_QUESTION = "How do I read a file line by line in Python, skipping blank lines?"
SAMPLE_REPLY = """Open the file in a `with` block, so it is closed even if something fails, and iterate over it:

```python
from pathlib import Path

def non_blank_lines(path: Path):
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield line.rstrip("\\n")
```

- Iterating over the file object reads **one line at a time**, so large files never sit in memory.
- `line.strip()` is empty for lines made only of spaces or tabs, so those are skipped too.

| approach | memory | notes |
| --- | --- | --- |
| `for line in handle` | constant | the usual choice |
| `handle.readlines()` | whole file | fine for small files |
"""


def to_palette(image: QImage) -> QImage:
    """An 8-bit copy with the 256 most used colours (flat UI colours survive exactly; anti-aliasing snaps to
    the nearest). Qt's own Indexed8 conversion uses a fixed colour cube that merges close dark shades."""
    import numpy as np

    rgb = image.convertToFormat(QImage.Format.Format_RGB32)
    width, height = rgb.width(), rgb.height()
    pixels = np.frombuffer(rgb.constBits(), dtype=np.uint32, count=rgb.bytesPerLine() // 4 * height)
    pixels = pixels.reshape(height, -1)[:, :width].ravel() & 0xFFFFFF
    colors, counts = np.unique(pixels, return_counts=True)
    palette = colors[np.argsort(counts)[::-1][:256]]
    channels = lambda v: np.stack([(v >> 16) & 255, (v >> 8) & 255, v & 255], axis=-1).astype(np.int32)  # noqa: E731
    pal = channels(palette)
    index = np.empty(len(colors), dtype=np.uint8)
    for start in range(0, len(colors), 4096):  # nearest palette entry for every distinct colour
        chunk = channels(colors[start : start + 4096])
        index[start : start + 4096] = ((chunk[:, None, :] - pal[None, :, :]) ** 2).sum(-1).argmin(1)
    indexed = index[np.searchsorted(colors, pixels)].reshape(height, width)
    out = QImage(width, height, QImage.Format.Format_Indexed8)
    out.setColorTable([0xFF000000 | int(c) for c in palette])
    for y in range(height):
        out.scanLine(y)[:width] = indexed[y].tobytes()
    return out


def main(out_dir: Path) -> int:
    home = Path(tempfile.mkdtemp(prefix="hearth-shots-"))
    os.environ["HEARTH_HOME"] = str(home)
    os.environ.setdefault("QT_QPA_PLATFORM", "xcb")

    from app.core.native import preload_llama_libraries

    preload_llama_libraries()
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QWidget

    from app.core.paths import AppPaths
    from app.core.store import Store
    from app.core.tiny_model import TinyModelSpec, write_tiny_model
    from app.ui import theme
    from app.ui.app import HearthApp, make_application
    from tests.support.fake_hub import FakeFile, FakeHub, FakeRepo

    out_dir.mkdir(parents=True, exist_ok=True)
    app = make_application()
    paths = AppPaths.default().ensure()

    def wait(ms: int = 300, until: object = None) -> None:
        loop_deadline = ms
        step = 20
        while loop_deadline > 0:
            if until is not None and until():  # type: ignore[operator]
                return
            loop = QEventLoop()
            QTimer.singleShot(step, loop.quit)
            loop.exec()
            loop_deadline -= step

    def save(widget: QWidget, name: str) -> None:
        wait(250)
        image = to_palette(widget.grab().toImage())
        target = out_dir / f"{name}.png"
        image.save(str(target), "PNG")
        print(f"{target} {target.stat().st_size // 1024} KiB")

    # 1. First run: nothing in the library.
    hearth = HearthApp(paths)
    theme.apply(app, "light")
    hearth.window.resize(1200, 780)
    hearth.window.show()
    hearth.start()
    wait(3000, until=lambda: hearth.library.snapshot is not None)
    save(hearth.window, "first-run")
    hearth.window.close()
    hearth.shutdown()

    # 2. A model in the library and a conversation in the history.
    spec = TinyModelSpec(name="Qwen2.5 0.5B Instruct (tiny stand-in)", context_length=8192)
    model = write_tiny_model(paths.models_dir / "qwen2.5-0.5b-instruct-q4_k_m.gguf", spec)
    store = Store.open(paths.history_db)
    for title in ("Trip to Lisbon: 3-day plan", "Explain KV cache like I'm five", "Regex for ISO dates"):
        conversation = store.create_conversation(title=title, model_path=str(model))
        store.add_message(conversation.id, "user", title)
        store.add_message(conversation.id, "assistant", "…")
    conversation = store.create_conversation(title="Read a file line by line", model_path=str(model))
    store.add_message(conversation.id, "user", SAMPLE_QUESTION)
    store.add_message(conversation.id, "assistant", SAMPLE_REPLY)
    store.close()
    hearth.settings.set("last_conversation", conversation.id)

    with FakeHub(
        [
            FakeRepo(
                "bartowski/Mistral-7B-Instruct-v0.3-GGUF",
                {
                    f"Mistral-7B-Instruct-v0.3-{quant}.gguf": FakeFile(b"", declared_size=size)
                    for quant, size in (
                        ("Q2_K", 2_722_000_000),
                        ("Q3_K_M", 3_522_000_000),
                        ("Q4_K_M", 4_372_000_000),
                        ("Q5_K_M", 5_136_000_000),
                        ("Q6_K", 5_947_000_000),
                        ("Q8_0", 7_702_000_000),
                        ("f16", 14_497_000_000),
                    )
                },
                downloads=48_211,
                likes=312,
            ),
            FakeRepo("TheBloke/Mistral-7B-Instruct-v0.2-GGUF", {"x.Q4_K_M.gguf": FakeFile(b"x")}, downloads=91_000),
            FakeRepo("MaziyarPanahi/Mistral-7B-Instruct-v0.3-GGUF", {"x.Q4_K_M.gguf": FakeFile(b"x")}, downloads=7_400),
        ]
    ) as hub:
        hearth = HearthApp(paths)
        hearth.settings.set("hub_endpoint", hub.url)
        theme.apply(app, "light")
        hearth.window.resize(1200, 780)
        hearth.window.show()
        hearth.start()
        wait(3000, until=lambda: hearth.library.snapshot is not None)
        hearth.window.picker.select(str(model))
        hearth.window.picker.load_button.click()
        wait(15000, until=lambda: hearth.engine.model is not None)
        save(hearth.window, "chat-light")

        hearth.settings.set("theme", "dark")
        hearth.apply_theme()
        save(hearth.window, "chat-dark")
        hearth.settings.set("theme", "light")
        hearth.apply_theme()

        hearth.window.show_page("models")
        save(hearth.window, "models")

        hearth.window.show_page("hub")
        page = hearth.window.hub_page
        page.query.setText("Mistral-7B-Instruct")
        page.search_button.click()
        wait(10000, until=lambda: page.results.count() > 0)
        page.results.setCurrentRow(1)  # the repository with every quant
        wait(10000, until=lambda: page.files_model.rowCount() > 0)
        save(hearth.window, "hub")

        dialog = hearth.open_settings()
        save(dialog, "settings")
        dialog.close()
        hearth.window.close()
        hearth.shutdown()
    app.quit()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "resources" / "screenshots"))
