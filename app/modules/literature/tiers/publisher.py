"""Tier 5: the publisher's landing page, reached through the DOI resolver (or the paper's own
URL when it has no DOI). The publisher strategy picks where the article body and the PDF link
are; the page is judged by the content heuristics, confirmed by the strategy's article
container, and the publisher's PDF link is checked when the page itself is not the text."""

from __future__ import annotations

from app.core.settings import LiteratureSettings
from app.modules.literature.domain import (
    Finding,
    Negative,
    TierNumber,
)
from app.modules.literature.fetcher import FetchFailure
from app.modules.literature.safety import doi_path
from app.modules.literature.tiers.base import (
    Examination,
    Examiner,
    ExamKind,
    Tier,
    TierContext,
    better,
    pdf_finding,
    settle_page,
)


class PublisherTier(Tier):
    number = TierNumber.PUBLISHER

    def __init__(self, examiner: Examiner, settings: LiteratureSettings) -> None:
        self._examiner = examiner
        self._resolver = settings.doi_resolver_url.rstrip("/")

    def timeout_s(self, settings: LiteratureSettings) -> float:
        return settings.publisher_timeout_s

    def applicable(self, ctx: TierContext) -> bool:
        return bool(ctx.paper.doi or ctx.paper.url)

    async def run(self, ctx: TierContext) -> Finding | None:
        starts: list[str] = []
        if ctx.paper.doi:
            starts.append(f"{self._resolver}/{doi_path(ctx.paper.doi)}")
        if ctx.paper.url:
            starts.append(ctx.paper.url)
        best: Finding | None = None
        for url in dict.fromkeys(starts):
            if url in ctx.evidence.seen:
                continue
            exam = await self._examiner.examine(url, ctx)
            if exam.kind is ExamKind.PDF:
                best = better(best, pdf_finding(exam, self.number, "publisher_pdf"))
                if ctx.satisfied(best):
                    return best
            elif exam.kind is ExamKind.HTML:
                found = await settle_page(self._examiner, exam, ctx, self.number, "publisher")
                best = better(best, found)
                if ctx.satisfied(best):
                    return best
            elif not (exam.error and exam.error.kind is FetchFailure.REFUSED):
                # (a refusal is already on record, with its reason)
                method = self._failure(exam)
                ctx.evidence.negatives.append(Negative(self.number, method, certain=False))
        return best

    def _failure(self, exam: Examination) -> str:
        """Why the landing page gave nothing, as a method name (a closed vocabulary)."""
        if exam.error is not None:
            return f"publisher_{exam.error.kind.value}"
        if exam.status == 404:
            at_resolver = exam.url.startswith(self._resolver)
            return "doi_not_found" if at_resolver else "publisher_http_404"
        return f"publisher_http_{exam.status}" if exam.status else "publisher_unreadable"
