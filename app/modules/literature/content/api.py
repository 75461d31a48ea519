"""The public entry points: assess an HTML page, a plain text or a PDF's bytes.

Each call is pure and synchronous (no I/O; the only shared state is two bounded, thread-safe
memo caches of heading and class-name lookups), takes a few milliseconds on a typical page, and
is bounded in time and memory by the input caps, so callers can run it inline or in a thread pool
on anything they fetched.
"""

from __future__ import annotations

import io
import logging
from dataclasses import replace
from types import MappingProxyType

from pypdf import PdfReader

from app.modules.literature.content.decide import Verdict, decide
from app.modules.literature.content.dom import main_text_lines, read_page
from app.modules.literature.content.features import Features, measure
from app.modules.literature.content.model import (
    ContentAssessment,
    ContentType,
    Recommendation,
    Signal,
)

MAX_TEXT_CHARS = 2_000_000
MAX_TEXT_LINES = 60_000
MAX_PDF_BYTES = 50_000_000
MAX_PDF_PAGE_CHARS = 200_000
# Lines of extracted PDF text are wrapped at the page width, so shorter lines count as prose.
_TEXT_PROSE_LINE_CHARS = 40
_MAX_REASONING_CHARS = 400
# A full-text verdict on a PDF of this many pages or fewer is never certain.
_MIN_CERTAIN_PDF_PAGES = 1
_ONE_PAGE_CONFIDENCE = 0.7
_CANONICAL_ORDER = (
    "abstract",
    "keywords",
    "introduction",
    "methods",
    "results",
    "discussion",
    "conclusion",
    "acknowledgements",
    "references",
)

logger = logging.getLogger(__name__)


def assess_html(
    html: str,
    *,
    base_url: str | None = None,
    title: str | None = None,
    doi: str | None = None,
) -> ContentAssessment:
    """Decide whether an HTML page is the full text of the paper with this title/DOI.

    Relative PDF links are resolved against `base_url` (else the page's own <base>, canonical
    link or og:url); `title` and `doi`, when given, are looked for on the page.
    """
    page = read_page(html, base_url)
    features = measure(page.lines, page.visible_text, page, title=title, doi=doi)
    return _assessment(features, decide(features))


def assess_text(
    text: str, *, title: str | None = None, doi: str | None = None
) -> ContentAssessment:
    """Decide whether a plain text (e.g. extracted from a PDF) is a paper's full text."""
    capped = text[:MAX_TEXT_CHARS]
    raw_lines = capped.splitlines()
    lines = [" ".join(line.split()) for line in raw_lines[:MAX_TEXT_LINES]]
    lines = [line for line in lines if line]
    features = measure(
        lines,
        capped,
        None,
        title=title,
        doi=doi,
        prose_line_chars=_TEXT_PROSE_LINE_CHARS,
        truncated=len(text) > MAX_TEXT_CHARS or len(raw_lines) > MAX_TEXT_LINES,
    )
    return _assessment(features, decide(features))


def assess_pdf_bytes(
    data: bytes,
    *,
    title: str | None = None,
    doi: str | None = None,
    max_pages: int = 30,
) -> ContentAssessment:
    """Extract the text of the first `max_pages` pages with pypdf and assess it.

    A PDF that cannot be read (truncated, encrypted, not a PDF at all) or has no text layer (a
    scan) yields an UNKNOWN assessment instead of an exception: a bad download is an expected
    outcome, not a bug. The page count is a signal (`pdf_pages`), and a one-page PDF is never a
    certain full text: one page holds an abstract, a poster or a letter's first page.
    """
    try:
        text, pages = _pdf_text(data, max_pages)
    except Exception as exc:  # pypdf raises many types on malformed input
        logger.debug("unreadable PDF: %s", exc)
        return unknown(f"The PDF could not be read ({type(exc).__name__}).")
    if not text.strip():
        return unknown(
            f"The PDF has {pages} page{'s' if pages != 1 else ''} but no text layer "
            "(scanned images, or empty): its text cannot be checked.",
            signals={"pdf_pages": pages, "pdf_text_layer": False},
        )
    assessment = assess_text(text, title=title, doi=doi)
    signals = {**assessment.signals, "pdf_pages": pages, "pdf_text_layer": True}
    reasoning = f"{assessment.reasoning} ({pages} PDF page{'s' if pages != 1 else ''})"
    if pages <= _MIN_CERTAIN_PDF_PAGES and assessment.is_full_text:
        return replace(
            assessment,
            confidence=min(assessment.confidence, _ONE_PAGE_CONFIDENCE),
            certain=False,
            reasoning=reasoning + "; but one page is rarely a whole paper",
            signals=MappingProxyType(signals),
        )
    return replace(assessment, reasoning=reasoning, signals=MappingProxyType(signals))


def extract_text(html: str, *, max_chars: int = 20_000) -> str:
    """The page's main text without navigation and other furniture, one block per line.

    Meant as the sample an AI model reads when the heuristics are unsure; cut at a line
    boundary near `max_chars` when possible.
    """
    text = "\n".join(main_text_lines(html))
    if len(text) <= max_chars:
        return text
    cut = text.rfind("\n", 0, max_chars + 1)
    return text[: cut if cut > max_chars // 2 else max_chars]


def unknown(reason: str, *, signals: dict[str, Signal] | None = None) -> ContentAssessment:
    """An assessment for input the heuristics could not read at all."""
    return ContentAssessment(
        is_full_text=False,
        confidence=0.0,
        content_type=ContentType.UNKNOWN,
        reasoning=reason,
        sections=(),
        recommendation=Recommendation.RETRY_HTML,
        certain=False,
        text_length=0,
        reference_count=0,
        pdf_links=(),
        signals=MappingProxyType(signals or {}),
    )


def _pdf_text(data: bytes, max_pages: int) -> tuple[str, int]:
    """The text of the first `max_pages` pages, and the document's page count."""
    if len(data) > MAX_PDF_BYTES:
        raise ValueError(f"PDF larger than {MAX_PDF_BYTES} bytes")
    reader = PdfReader(io.BytesIO(data), strict=False)
    if reader.is_encrypted:
        reader.decrypt("")
    parts: list[str] = []
    for page in reader.pages[: max(0, max_pages)]:
        parts.append((page.extract_text() or "")[:MAX_PDF_PAGE_CHARS])
    return "\n".join(parts), len(reader.pages)


def recommend(content_type: ContentType, has_pdf_link: bool) -> Recommendation:
    """What to fetch next: the PDF when a landing page links one, another HTML source otherwise."""
    if content_type is ContentType.FULL_ARTICLE:
        return Recommendation.ACCEPT
    if content_type in (ContentType.ABSTRACT_ONLY, ContentType.METADATA, ContentType.UNKNOWN):
        return Recommendation.RETRY_PDF if has_pdf_link else Recommendation.RETRY_HTML
    return Recommendation.REJECT


def _assessment(features: Features, verdict: Verdict) -> ContentAssessment:
    signals = features.as_signals()
    signals["full_text_points"] = verdict.points
    reasoning = "; ".join(verdict.reasons)
    if len(reasoning) > _MAX_REASONING_CHARS:
        reasoning = reasoning[: _MAX_REASONING_CHARS - 3] + "..."
    order = {name: index for index, name in enumerate(_CANONICAL_ORDER)}
    sections = tuple(sorted(features.sections, key=lambda name: order.get(name, len(order))))
    return ContentAssessment(
        is_full_text=verdict.content_type is ContentType.FULL_ARTICLE,
        confidence=round(verdict.confidence, 3),
        content_type=verdict.content_type,
        reasoning=reasoning[:1].upper() + reasoning[1:],
        sections=sections,
        recommendation=recommend(verdict.content_type, bool(features.pdf_links)),
        certain=verdict.certain,
        text_length=features.text_length,
        reference_count=features.reference_count,
        pdf_links=features.pdf_links,
        signals=MappingProxyType(signals),
    )
