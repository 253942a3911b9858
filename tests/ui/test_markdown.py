"""How a reply's Markdown is rendered: what the model wrote, never live HTML, code coloured by Pygments."""

from __future__ import annotations

from PySide6.QtGui import QFont, QTextCursor, QTextTable
from PySide6.QtWidgets import QApplication

from app.ui import theme
from app.ui.markdown_render import RenderedMarkdown, keep_line_breaks, render

REPLY = """Roses are red
Violets are blue

| tool | use |
| --- | --- |
| `grep` | search |

<script>alert(1)</script> and <b>not bold</b>

```python
def add(a: int, b: int) -> int:
    return a + b
```
"""


def rendered(text: str) -> RenderedMarkdown:
    return render(text, width=600, theme=theme.current(), font=QFont(), mono=QFont("monospace"))


def test_single_newlines_are_line_breaks_but_code_and_tables_are_untouched(qapp: QApplication) -> None:
    doc = rendered(REPLY).doc
    assert doc.toPlainText().startswith("Roses are red\nViolets are blue")  # two lines, not one run-on line
    assert any(isinstance(frame, QTextTable) for frame in doc.rootFrame().childFrames())
    assert "    return a + b" in keep_line_breaks(REPLY)  # fenced code is left exactly as written
    assert keep_line_breaks("a\n\nb") == "a\n\nb"


def test_raw_html_from_the_model_is_shown_as_text(qapp: QApplication) -> None:
    doc = rendered(REPLY).doc
    text = doc.toPlainText()
    assert "<script>alert(1)</script>" in text and "<b>not bold</b>" in text
    cursor = QTextCursor(doc)
    cursor.setPosition(text.index("not bold") + 1)
    assert cursor.charFormat().fontWeight() <= QFont.Weight.Normal


def test_code_blocks_keep_their_language_and_get_pygments_colours(qapp: QApplication) -> None:
    result = rendered(REPLY)
    (block,) = result.code_blocks
    assert block.language == "python" and "return a + b" in block.text
    doc = result.doc
    colours = set()
    for number in range(block.first_block, block.last_block + 1):
        it = doc.findBlockByNumber(number).begin()
        while not it.atEnd():
            colours.add(it.fragment().charFormat().foreground().color().name())
            it += 1
    assert len(colours) >= 2, "the keywords were not coloured"
    assert result.copy_rect(block).isValid()
