"""Real documents written at test time (PDF, DOCX, HTML, Markdown, code, text), with known sentences at
known places, so extraction, chunk positions and retrieval can be checked against the truth."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Known:
    """A sentence written into a file, and where: page (PDF) and 1-based line (DOCX: paragraph)."""

    path: Path
    sentence: str
    line: int
    page: int | None = None


FILLER = (
    "This paragraph is filler about the history of the lighthouse keepers on the northern coast. "
    "It mentions storms, lamps, ships and the long winter nights that the keepers wrote about."
)


def write_pdf(path: Path, pages: int = 4, lines_per_page: int = 30) -> list[Known]:
    """A multi-page PDF, one text line per row; page p, line 12 holds a sentence unique to that page."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_font("helvetica", size=10)
    known = []
    for page in range(1, pages + 1):
        pdf.add_page()
        for line in range(1, lines_per_page + 1):
            if line == 12:
                text = f"The secret code word for page {page} is {_WORDS[page]} and it opens the vault."
                known.append(Known(path, text, line, page))
            elif line == 1:
                text = f"Chapter {page}: the {_WORDS[page + 10]} report"
            else:
                text = f"Line {line} of page {page} describes {_WORDS[(page * 7 + line) % len(_WORDS)]} routine work."
            pdf.cell(0, 6, text, new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))
    return known


def write_docx(path: Path) -> list[Known]:
    import docx

    document = docx.Document()
    document.add_heading("Field manual", level=1)
    document.add_paragraph("The manual explains how to care for beehives through the year.")
    document.add_heading("Winter", level=2)
    sentence = "In winter the bees form a tight cluster and keep the queen at thirty degrees."
    document.add_paragraph(sentence)
    document.add_heading("Summer", level=2)
    document.add_paragraph("Summer brings swarming; add supers early so the colony has room.")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Month", "Task"
    table.cell(1, 0).text, table.cell(1, 1).text = "June", "Harvest the first honey"
    document.save(str(path))
    # body order: heading(1) para(2) heading(3) para(4) heading(5) para(6) table rows(7, 8)
    return [Known(path, sentence, 4)]


def write_html(path: Path) -> list[Known]:
    sentence = "Sourdough needs a starter fed with flour and water every day."
    path.write_text(
        "<!doctype html>\n<html>\n<head><title>Bread</title><style>p { color: red }</style></head>\n<body>\n"
        "<h1>Baking bread</h1>\n<p>Bread is flour, water, salt and time.</p>\n<h2>Sourdough</h2>\n"
        f"<p>\n{sentence}\n</p>\n<script>var secret = 'never indexed';</script>\n"
        "<pre>mix 500 g flour\nwith 350 g water</pre>\n</body>\n</html>\n",
        encoding="utf-8",
    )
    return [Known(path, sentence, 9)]


def write_markdown(path: Path) -> list[Known]:
    sentence = "The glacier retreated four kilometres between 1900 and 2000."
    lines = [
        "# Climate notes",
        "",
        "Intro text about measurements.",
        "",
        "## Glaciers",
        "",
        sentence,
        "",
        "```python",
        "def melt(rate):",
        "    return rate * 2",
        "```",
        "",
        "## Oceans",
        "",
        "Sea level rises.",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [Known(path, sentence, 7)]


def write_code(path: Path) -> list[Known]:
    lines = [
        "import math",
        "",
        "",
        "def circle_area(radius):",
        '    """Area of a circle."""',
        "    return math.pi * radius ** 2",
        "",
        "",
        "class Parser:",
        "    def parse(self, text):",
        "        return text.split()",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return [Known(path, "    return math.pi * radius ** 2", 6)]


def write_text(path: Path, topic: str, paragraphs: int = 3) -> None:
    path.write_text("\n\n".join(f"{topic} note {i}: {FILLER}" for i in range(paragraphs)) + "\n", encoding="utf-8")


_WORDS = [
    "amber",
    "basalt",
    "cobalt",
    "dahlia",
    "ember",
    "falcon",
    "garnet",
    "harbor",
    "indigo",
    "juniper",
    "kestrel",
    "lantern",
    "marble",
    "nectar",
    "obsidian",
    "pepper",
    "quartz",
    "raven",
    "saffron",
    "thistle",
    "umber",
    "velvet",
    "willow",
    "xenon",
    "yarrow",
    "zephyr",
]
