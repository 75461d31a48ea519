"""Tier 1: the pipeline already holds the full text (no network at all)."""

from __future__ import annotations

from app.core.settings import LiteratureSettings
from app.modules.literature.domain import Confidence, DocumentKind, Finding, TierNumber
from app.modules.literature.tiers.base import Tier, TierContext

AVAILABLE = "available"


class DatabaseTier(Tier):
    """Stored text counts when its status says available and it is longer than an abstract;
    the length threshold catches abstracts stored under an optimistic status."""

    number = TierNumber.DATABASE

    def __init__(self, settings: LiteratureSettings) -> None:
        self._min_chars = settings.database_min_chars

    def timeout_s(self, settings: LiteratureSettings) -> float:
        return 1.0

    def applicable(self, ctx: TierContext) -> bool:
        return bool(ctx.paper.full_text) or ctx.paper.full_text_status is not None

    async def run(self, ctx: TierContext) -> Finding | None:
        paper = ctx.paper
        status = (paper.full_text_status or "").strip().lower()
        text = (paper.full_text or "").strip()
        if status != AVAILABLE or len(text) < self._min_chars:
            return None
        url = paper.pdf_url or paper.open_access_pdf or paper.url
        kind = DocumentKind.PDF if url and url in (paper.pdf_url, paper.open_access_pdf) else None
        return Finding(url, kind, Confidence.HIGH, self.number, "stored_full_text")
