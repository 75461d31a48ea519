"""The catalogue: 42 papers whose full-text answers are known, and the pages behind them.

Each entry is one situation the literature pipeline meets, placed so that exactly one tier of
the gateway's waterfall should decide it (or none, for the papers without accessible full
text). `GET /_literature/catalogue` serves it with the expected answers; the demo and the
integration tests send the papers and compare.
"""

from __future__ import annotations

from functools import lru_cache

from ..model import Catalogue
from . import early, late, missing, real_pdfs

# A plainly verified answer a test or the demo can script the sandbox's AI with (chaos
# `content`); the catalogue's tier-7 papers expect it.
AI_FULL_TEXT_VERDICT = (
    '{"is_full_text": true, "confidence": 0.92, "content_type": "full_article", '
    '"reasoning": "Body sections, results with tables and a numbered reference list.", '
    '"sections": ["Introduction", "Materials and methods", "Results", "Discussion", '
    '"References"], "recommendation": "accept"}'
)
AI_NOT_FULL_TEXT_VERDICT = (
    '{"is_full_text": false, "confidence": 0.9, "content_type": "abstract_only", '
    '"reasoning": "Only a title, authors and an abstract.", "sections": ["Abstract"], '
    '"recommendation": "retry_pdf"}'
)
HUGE_PAGE_BYTES = 12 * 1024 * 1024


@lru_cache(maxsize=1)
def build() -> Catalogue:
    c = Catalogue()
    early.database(c)
    early.direct(c)
    early.pmc(c)
    early.unpaywall_papers(c)
    late.publishers(c)
    late.secondary(c)
    late.ai(c)
    missing.negatives(c)
    missing.helper_pages(c)
    real_pdfs.routes(c)
    return c


__all__ = ["AI_FULL_TEXT_VERDICT", "AI_NOT_FULL_TEXT_VERDICT", "build"]
