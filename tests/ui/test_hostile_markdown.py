"""A reply or an imported message never makes Hearth read a file or URL: images are placeholders."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QFont, QImage, QPainter
from PySide6.QtWidgets import QApplication

from app.ui import theme
from app.ui.markdown_render import RenderedMarkdown, render
from tests.support.file_canary import fifo_canary


def rendered(text: str) -> RenderedMarkdown:
    return render(text, width=600, theme=theme.current(), font=QFont(), mono=QFont("monospace"))


def paint(result: RenderedMarkdown) -> None:
    image = QImage(600, max(1, int(result.height) + 1), QImage.Format.Format_ARGB32)
    painter = QPainter(image)
    result.doc.drawContents(painter)
    painter.end()


def test_markdown_images_are_never_loaded_from_files(qapp: QApplication, tmp_path: Path) -> None:
    with fifo_canary(tmp_path) as canary:
        text = (
            f"Look: ![secret plan]({canary.url}) and ![second]({canary.path}) and ![rel](canary.png)\n\n"
            f"| a | b |\n|---|---|\n| ![in a table]({canary.path}) | x |\n"
        )
        result = rendered(text)
        paint(result)
        assert canary.opened == 0, "laying out a reply opened a file it names"
    plain = result.doc.toPlainText()
    # The image becomes its alt text (what the model meant), never a picture.
    assert "secret plan" in plain and "second" in plain and "in a table" in plain
    block = result.doc.begin()
    while block.isValid():
        it = block.begin()
        while not it.atEnd():
            assert not it.fragment().charFormat().isImageFormat()
            it += 1
        block = block.next()


def test_dev_zero_as_an_image_neither_hangs_nor_aborts(qapp: QApplication) -> None:
    # Qt would read /dev/zero until std::bad_alloc aborted the process.
    result = rendered("![x](/dev/zero) ![y](file:///dev/zero)")
    paint(result)
    assert "x" in result.doc.toPlainText()


def test_the_safe_document_loads_no_resource_even_from_html(qapp: QApplication, tmp_path: Path) -> None:
    # The mechanism itself, whatever reaches it: an <img> in HTML asks loadResource for the file.
    from app.ui.markdown_render import SafeTextDocument

    with fifo_canary(tmp_path) as canary:
        doc = SafeTextDocument()
        doc.setHtml(f'<p>a <img src="{canary.path}"> b <img src="{canary.url}"></p>')
        doc.setTextWidth(300)
        assert doc.size().height() > 0
        image = QImage(300, 100, QImage.Format.Format_ARGB32)
        painter = QPainter(image)
        doc.drawContents(painter)
        painter.end()
        assert canary.opened == 0
