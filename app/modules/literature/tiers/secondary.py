"""Tier 6: links found along the way - `citation_pdf_url` meta tags, the publisher's own PDF
links not yet checked, Unpaywall's other locations, repository and preprint links, any other
PDF link - tried in that order of trust, at most `max_secondary_links` per paper and
`max_secondary_depth` pages deep (a repository landing page -> its PDF).

A PDF behind a link the publisher or a repository labels as the article is high confidence;
behind an anonymous PDF link (which may be a supplement) it is medium, and tier 7 may check it.
"""

from __future__ import annotations

from app.core.settings import LiteratureSettings
from app.modules.literature.domain import (
    Candidate,
    Confidence,
    Finding,
    TierNumber,
)
from app.modules.literature.tiers.base import (
    Examiner,
    ExamKind,
    Tier,
    TierContext,
    better,
    page_finding,
    pdf_finding,
    remember_links,
)

SOURCE_ORDER = {
    "citation_pdf_url": 0,
    "publisher_pdf": 1,
    "unpaywall_location": 2,
    "repository_link": 3,
    "pdf_link": 4,
}
TRUSTED_SOURCES = frozenset(
    {"citation_pdf_url", "publisher_pdf", "unpaywall_location", "repository_link"}
)


class SecondaryLinksTier(Tier):
    number = TierNumber.SECONDARY_LINKS

    def __init__(self, examiner: Examiner, settings: LiteratureSettings) -> None:
        self._examiner = examiner
        self._max_links = settings.max_secondary_links
        self._max_depth = settings.max_secondary_depth

    def timeout_s(self, settings: LiteratureSettings) -> float:
        return settings.secondary_timeout_s

    def applicable(self, ctx: TierContext) -> bool:
        return bool(ctx.evidence.candidates)

    async def run(self, ctx: TierContext) -> Finding | None:
        best: Finding | None = None
        for _ in range(self._max_links):
            candidate = _next(ctx)
            if candidate is None:
                break
            url = self._examiner.registry.pdf_from_url(candidate.url) or candidate.url
            if url != candidate.url and url in ctx.evidence.seen:
                continue
            exam = await self._examiner.examine(url, ctx)
            if exam.kind is ExamKind.PDF:
                trusted = candidate.source in TRUSTED_SOURCES
                claimed = Confidence.HIGH if trusted else Confidence.MEDIUM
                best = better(best, pdf_finding(exam, self.number, candidate.source, claimed))
            elif exam.kind is ExamKind.HTML:
                if exam.links is not None and candidate.depth + 1 < self._max_depth:
                    remember_links(ctx.evidence, exam.links, depth=candidate.depth + 1)
                best = better(best, page_finding(exam, ctx, self.number, "secondary", links=False))
            if ctx.satisfied(best):
                break
        return best


def _next(ctx: TierContext) -> Candidate | None:
    """The most trusted, shallowest candidate not yet fetched (insertion order breaks ties)."""
    pending = [c for c in ctx.evidence.candidates.values() if c.url not in ctx.evidence.seen]
    if not pending:
        return None
    chosen = min(pending, key=lambda c: (SOURCE_ORDER.get(c.source, 9), c.depth))
    del ctx.evidence.candidates[chosen.url]
    return chosen
