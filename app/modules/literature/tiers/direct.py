"""Tier 2: the PDF URLs the pipeline already has (`open_access_pdf`, `pdf_url`), verified by a
bounded request: a link that now answers with a login page or a 404 is not full text."""

from __future__ import annotations

from app.core.settings import LiteratureSettings
from app.modules.literature.domain import Finding, TierNumber
from app.modules.literature.tiers.base import (
    Examiner,
    ExamKind,
    Tier,
    TierContext,
    better,
    page_finding,
    pdf_finding,
)


class DirectUrlTier(Tier):
    number = TierNumber.DIRECT_URL

    def __init__(self, examiner: Examiner) -> None:
        self._examiner = examiner

    def timeout_s(self, settings: LiteratureSettings) -> float:
        return settings.direct_timeout_s

    def applicable(self, ctx: TierContext) -> bool:
        return bool(ctx.paper.open_access_pdf or ctx.paper.pdf_url)

    async def run(self, ctx: TierContext) -> Finding | None:
        urls = dict.fromkeys(u for u in (ctx.paper.open_access_pdf, ctx.paper.pdf_url) if u)
        best: Finding | None = None
        for url in urls:
            exam = await self._examiner.examine(url, ctx)
            if exam.kind is ExamKind.PDF:
                best = better(best, pdf_finding(exam, self.number, "direct_pdf"))
                if ctx.satisfied(best):
                    return best
            if exam.kind is ExamKind.HTML:
                # Some "PDF" links are the article's HTML full text, or its viewer page.
                best = better(best, page_finding(exam, ctx, self.number, "direct"))
                if ctx.satisfied(best):
                    return best
        return best
