"""The verdict the heuristics hand to their callers, and the closed vocabularies it uses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

Signal = float | int | bool | str


class ContentType(StrEnum):
    """What a fetched page or document turned out to be."""

    FULL_ARTICLE = "full_article"
    ABSTRACT_ONLY = "abstract_only"
    PAYWALL = "paywall"
    LOGIN = "login"
    METADATA = "metadata"
    NOT_ARTICLE = "not_article"
    UNKNOWN = "unknown"


class Recommendation(StrEnum):
    """What the fetching pipeline should do next with this source."""

    ACCEPT = "accept"
    RETRY_HTML = "retry_html"
    RETRY_PDF = "retry_pdf"
    REJECT = "reject"
    # Nobody settled the question: the heuristics were unsure and no AI verdict was obtained
    # (skipped, not configured, over budget, failed, unsure or unparseable). Never set by the
    # heuristics themselves; the verification layer decides it (`verification.py`).
    REVIEW = "review"


@dataclass(frozen=True, slots=True)
class ContentAssessment:
    """The heuristics' verdict on one page or document.

    `certain` tells the caller whether the verdict can stand alone: when it is False the signals
    disagreed and an AI model should be asked. `signals` holds every raw feature so a wrong
    verdict can be explained after the fact without re-fetching the page.
    """

    is_full_text: bool
    confidence: float
    content_type: ContentType
    reasoning: str
    sections: tuple[str, ...]
    recommendation: Recommendation
    certain: bool
    text_length: int
    reference_count: int
    pdf_links: tuple[str, ...]
    signals: Mapping[str, Signal]
