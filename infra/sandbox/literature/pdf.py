"""Small but real PDFs: PDF 1.4, Helvetica, Flate-compressed page streams, a correct xref table
and an /Info dictionary, readable by pypdf and any viewer. Only ASCII text (see text.py)."""

from __future__ import annotations

import textwrap
import zlib

_PAGE_W, _PAGE_H = 595, 842  # A4 in points
_MARGIN = 56
_LINES_PER_PAGE = 58
_WRAP = 100


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _lines(title: str, body: str) -> list[tuple[int, str]]:
    """(font size, line) pairs: the title large, the rest wrapped at the text width."""
    lines: list[tuple[int, str]] = [(16, line) for line in textwrap.wrap(title, 60)]
    lines.append((10, ""))
    for paragraph in body.split("\n\n"):
        wrapped = textwrap.wrap(paragraph, _WRAP) or [""]
        lines.extend((10, line) for line in wrapped)
        lines.append((10, ""))
    return lines


def _page_stream(lines: list[tuple[int, str]]) -> bytes:
    out = ["BT", f"{_MARGIN} {_PAGE_H - _MARGIN} Td", "13 TL"]
    size = 0
    for font_size, line in lines:
        if font_size != size:
            out.append(f"/F1 {font_size} Tf")
            size = font_size
        out.append(f"({_escape(line)}) Tj T*")
    out.append("ET")
    return "\n".join(out).encode("latin-1", "replace")


def make_pdf(title: str, body: str) -> bytes:
    """A multi-page PDF of `title` and `body` (paragraphs separated by blank lines)."""
    lines = _lines(title, body)
    pages = [lines[i : i + _LINES_PER_PAGE] for i in range(0, len(lines), _LINES_PER_PAGE)]
    # Object numbers: 1 catalog, 2 pages, 3 font, 4 info, then (page, contents) pairs.
    objects: dict[int, bytes] = {
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        4: f"<< /Title ({_escape(title)}) /Producer (literature sandbox) >>".encode(
            "latin-1", "replace"
        ),
    }
    kids = []
    for index, page_lines in enumerate(pages):
        page_id, content_id = 5 + 2 * index, 6 + 2 * index
        kids.append(f"{page_id} 0 R")
        stream = zlib.compress(_page_stream(page_lines))
        objects[page_id] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {_PAGE_W} {_PAGE_H}] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {content_id} 0 R >>"
        ).encode()
        objects[content_id] = (
            f"<< /Length {len(stream)} /Filter /FlateDecode >>\nstream\n".encode()
            + stream
            + b"\nendstream"
        )
    objects[1] = b"<< /Type /Catalog /Pages 2 0 R >>"
    objects[2] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(pages)} >>".encode()

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets: dict[int, int] = {}
    for number in sorted(objects):
        offsets[number] = len(out)
        out += f"{number} 0 obj\n".encode() + objects[number] + b"\nendobj\n"
    xref_at = len(out)
    size = max(objects) + 1
    out += f"xref\n0 {size}\n0000000000 65535 f \n".encode()
    for number in range(1, size):
        out += f"{offsets[number]:010d} 00000 n \n".encode()
    out += (
        f"trailer\n<< /Size {size} /Root 1 0 R /Info 4 0 R >>\nstartxref\n{xref_at}\n%%EOF\n"
    ).encode()
    return bytes(out)
