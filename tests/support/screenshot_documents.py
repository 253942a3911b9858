"""The README's screenshots of a cited answer ("Chat with your documents"), taken from the real app:

    xvfb-run -a -s "-screen 0 1400x900x24" python tests/support/screenshot_documents.py resources/screenshots

A temporary HEARTH_HOME with a small collection written here (a beekeeping guide in Markdown and a season
log as text), indexed by Hearth's own indexer; the sources of the reply are what Hearth's retrieval returns
for the question. The reply's text is written by us (a tiny random-weight model writes gibberish) and cites
those sources as a model is asked to. Saved as 8-bit palette PNGs, like tests/support/screenshots.py.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

GUIDE = """# Beekeeping guide

## Feeding

Feed thick 2:1 sugar syrup in early autumn, while days are still above 15 °C, so the bees can store it
and cap it before the cold. A strong colony needs about 20 kg of stores to see it through to spring.
Fondant on the top bars is the emergency ration for late winter.

## Winter

In winter the bees form a tight cluster around the queen and keep its centre near 35 °C by shivering
their flight muscles. Do not open the hive below 10 °C: every inspection breaks the cluster and chills
the brood. Fit a mouse guard at the entrance in October and tilt the hive slightly forward so that
condensation runs out instead of dripping onto the cluster.

## Swarming

In May and June add supers early so the colony has room; a crowded hive raises queen cells and swarms.
Inspect every seven days in swarming season and look along the bottom bars for queen cups with eggs.

## Varroa

Count the mites that fall onto the tray under the open mesh floor for a week. More than ten a day in
late summer means treating as soon as the honey is off; oxalic acid in December, when the colony has no
brood, reaches the mites that hide in capped cells the rest of the year.

## Harvest

Take only frames that are at least three quarters capped: uncapped honey holds too much water and
ferments in the jar. Leave the brood box untouched; its honey is the colony's own.

## Equipment

A smoker, a hive tool, a veil and gloves are the minimum. Keep a spare brood box and frames ready for
the day a colony needs splitting.
"""

LOG = """Season log, apiary by the orchard

12 September: all four colonies fed 2:1 syrup, about 10 litres each.
3 October: mouse guards fitted on every hive before the first frost; hive 3 still light, fondant added.
20 January: no inspection (4 °C); hives hefted from behind, all still heavy enough.
"""

QUESTION = "How should I get my hives ready for winter?"


def main(out_dir: Path) -> int:
    home = Path(tempfile.mkdtemp(prefix="hearth-shots-docs-"))
    os.environ["HEARTH_HOME"] = str(home)
    os.environ.setdefault("QT_QPA_PLATFORM", "xcb")

    from app.core.native import preload_llama_libraries

    preload_llama_libraries()
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QWidget

    from app.core.documents.index import DocumentIndex
    from app.core.documents.indexer import index_collection
    from app.core.documents.retrieval import build_context
    from app.core.paths import AppPaths
    from app.core.store import Store
    from app.core.tiny_model import TinyModelSpec, write_tiny_model
    from app.ui import theme
    from app.ui.app import HearthApp, make_application
    from tests.support.screenshots import to_palette

    out_dir.mkdir(parents=True, exist_ok=True)
    app = make_application()
    paths = AppPaths.default().ensure()
    folder = home / "Beekeeping"
    folder.mkdir()
    (folder / "beekeeping-guide.md").write_text(GUIDE, encoding="utf-8")
    (folder / "season-log.txt").write_text(LOG, encoding="utf-8")
    index = DocumentIndex(paths.documents_db)
    index.add_collection("Beekeeping", [folder])
    index_collection(index, "Beekeeping")
    context = build_context(
        index, QUESTION, collections=["Beekeeping"], budget_tokens=260, count_tokens=lambda t: len(t.split())
    )
    index.close()
    number = {s.heading.rsplit(" > ", 1)[-1] if s.heading else s.file_name: s.number for s in context.sources}
    feeding, winter = number.get("Feeding", 1), number.get("Winter", 2)
    log = number.get("season-log.txt")
    reply = (
        f"Three things before the cold sets in:\n\n"
        f"1. **Feed early.** Give thick 2:1 syrup in early autumn, while days are still above 15 °C, so the "
        f"colony can store and cap about 20 kg [{feeding}].\n"
        f"2. **Close up.** Fit a mouse guard in October and tilt the hive slightly forward so condensation runs "
        f"out [{winter}].\n"
        f"3. **Leave them be.** Below 10 °C an inspection breaks the cluster and chills the brood [{winter}]"
        + (f"; your log shows you hefted the hives from behind instead [{log}]." if log else ".")
    )
    spec = TinyModelSpec(name="Qwen2.5 0.5B Instruct (tiny stand-in)", context_length=8192)
    model = write_tiny_model(paths.models_dir / "qwen2.5-0.5b-instruct-q4_k_m.gguf", spec)
    store = Store.open(paths.history_db)
    conversation = store.create_conversation(
        title="Hives before winter", model_path=str(model), meta={"documents": {"collections": ["Beekeeping"]}}
    )
    store.add_message(conversation.id, "user", QUESTION)
    store.add_message(conversation.id, "assistant", reply, meta={"sources": context.meta()})
    store.close()

    def wait(ms: int = 300, until: object = None) -> None:
        left = ms
        while left > 0:
            if until is not None and until():  # type: ignore[operator]
                return
            loop = QEventLoop()
            QTimer.singleShot(20, loop.quit)
            loop.exec()
            left -= 20

    def save(widget: QWidget, name: str) -> None:
        wait(300)
        target = out_dir / f"{name}.png"
        to_palette(widget.grab().toImage()).save(str(target), "PNG")
        print(f"{target} {target.stat().st_size // 1024} KiB")

    hearth = HearthApp(paths)
    hearth.settings.set("last_conversation", conversation.id)
    theme.apply(app, "light")
    hearth.window.resize(1200, 720)
    hearth.window.show()
    hearth.start()
    wait(3000, until=lambda: hearth.library.snapshot is not None and hearth.chat_model.rowCount() == 2)
    hearth.window.picker.select(str(model))
    hearth.window.picker.load_button.click()
    wait(15000, until=lambda: hearth.engine.model is not None)
    wait(1500, until=lambda: bool(hearth.documents.views))
    save(hearth.window, "documents-cited")
    hearth._on_source_requested(1, winter)
    dialog = hearth.source_dialog
    wait(2000, until=lambda: dialog is not None and dialog.open_button.isEnabled())
    save(dialog, "documents-source")
    hearth.window.close()
    hearth.shutdown()
    app.quit()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "resources/screenshots")))
