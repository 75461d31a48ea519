"""Real PDFs served as they are, at fixed paths on the repository host: routes only, no
catalogue entry (the catalogue's answers stay what they were).

The generated PDFs of the catalogue are all clean multi-page papers; these are what a
repository also serves: a scan without a text layer, a one-page abstract, and a real 8-page
paper larger than the gateway's probe (so its check needs the whole file). Tests send papers
whose `pdf_url` points here (tests/fixtures/pdf/README.md says where each file comes from).
"""

from __future__ import annotations

from pathlib import Path

from .. import hosts as h
from ..model import Catalogue, Pdf, u

FIXTURES = Path(__file__).resolve().parents[4] / "tests" / "fixtures" / "pdf"
# name -> path on the repository host
REAL_PDFS = {
    "article": "/bitstream/handle/1234/9001/article.pdf",
    "one_page_abstract": "/bitstream/handle/1234/9002/one_page_abstract.pdf",
    "scanned": "/bitstream/handle/1234/9003/scanned.pdf",
}
HOST = h.REPOSITORY


def routes(c: Catalogue) -> None:
    for name, path in REAL_PDFS.items():
        source = FIXTURES / f"{name}.pdf"
        if source.is_file():  # the sandbox may run from a copy without the tests
            c.add(u(HOST, path), Pdf(f"real-{name}", name, "", data=source.read_bytes()))
