"""Tier 4: Unpaywall v2 by DOI. Its best open-access location and the others are checked
(PDFs with a bounded request, the best landing page judged like a publisher page); what is
left over becomes candidates for tier 6. Unpaywall is one upstream behind one breaker (its
host's) and one rate limit (`unpaywall_rpm`)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from app.core.settings import LiteratureSettings
from app.modules.literature.domain import (
    DocumentKind,
    Finding,
    Negative,
    TierNumber,
)
from app.modules.literature.fetcher import FetchError, FetchRefused, transient_status
from app.modules.literature.safety import doi_path
from app.modules.literature.tiers.base import (
    Examiner,
    ExamKind,
    Tier,
    TierContext,
    better,
    page_finding,
    pdf_finding,
    settle_page,
)

# Locations read from one answer, and PDFs checked from them.
MAX_LOCATIONS = 8
MAX_PDF_CHECKS = 2
UNPAYWALL_CLOSED = "unpaywall_closed"


class UnpaywallTier(Tier):
    number = TierNumber.UNPAYWALL

    def __init__(self, examiner: Examiner, settings: LiteratureSettings) -> None:
        self._examiner = examiner
        self._settings = settings

    def timeout_s(self, settings: LiteratureSettings) -> float:
        return settings.unpaywall_timeout_s

    def applicable(self, ctx: TierContext) -> bool:
        return bool(ctx.paper.doi and self._settings.unpaywall_email)

    async def run(self, ctx: TierContext) -> Finding | None:
        record = await self._lookup(ctx)
        if record is None:
            return None
        if record.get("is_oa") is not True:
            ctx.evidence.negatives.append(Negative(self.number, UNPAYWALL_CLOSED, False))
            return None
        pdfs, landings = _locations(record)
        best: Finding | None = None
        for url in [u for u in pdfs if u not in ctx.evidence.seen][:MAX_PDF_CHECKS]:
            exam = await self._examiner.examine(url, ctx)
            if exam.kind is ExamKind.PDF:
                best = better(best, pdf_finding(exam, self.number, "unpaywall_pdf"))
            if exam.kind is ExamKind.HTML:
                best = better(best, page_finding(exam, ctx, self.number, "unpaywall"))
            if ctx.satisfied(best):
                return best
        for url in pdfs:
            ctx.evidence.add_candidate(url, "unpaywall_location", kind=DocumentKind.PDF)
        for url in landings:
            if url in ctx.evidence.seen:
                continue
            exam = await self._examiner.examine(url, ctx)
            if exam.kind is ExamKind.PDF:
                best = better(best, pdf_finding(exam, self.number, "unpaywall_pdf"))
            if exam.kind is ExamKind.HTML:
                found = await settle_page(self._examiner, exam, ctx, self.number, "unpaywall")
                best = better(best, found)
            break  # one landing page; the others are tier 6's
        for url in landings:
            ctx.evidence.add_candidate(url, "unpaywall_location")
        return best

    async def _lookup(self, ctx: TierContext) -> dict[str, Any] | None:
        assert ctx.paper.doi is not None
        base = self._settings.unpaywall_base_url.rstrip("/")
        email = quote(self._settings.unpaywall_email, safe="@.")
        fetcher = self._examiner.fetcher
        try:
            result = await fetcher.fetch(
                f"{base}/{doi_path(ctx.paper.doi)}?email={email}",
                deadline=ctx.deadline,
                policy=fetcher.json_policy,
                deadline_is_callers=ctx.deadline_is_callers(self._settings),
            )
        except FetchError as error:
            ctx.refused |= isinstance(error, FetchRefused)
            ctx.evidence.transient |= error.transient
            return None
        ctx.evidence.transient |= transient_status(result.status)
        if result.status == 404:
            ctx.evidence.negatives.append(Negative(self.number, "unpaywall_unknown_doi", False))
            return None
        if not result.ok:
            return None
        try:
            record = json.loads(result.body)
        except ValueError:
            return None
        return record if isinstance(record, dict) else None


def _locations(record: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(PDF URLs, landing-page URLs), best location first, each list without duplicates."""
    raw = [record.get("best_oa_location")]
    others = record.get("oa_locations")
    if isinstance(others, list):
        raw += others[:MAX_LOCATIONS]
    pdfs: dict[str, None] = {}
    landings: dict[str, None] = {}
    for location in raw:
        if not isinstance(location, dict):
            continue
        pdf = location.get("url_for_pdf")
        landing = location.get("url_for_landing_page") or location.get("url")
        if isinstance(pdf, str) and pdf:
            pdfs.setdefault(pdf, None)
        if isinstance(landing, str) and landing and landing != pdf:
            landings.setdefault(landing, None)
    return list(pdfs), list(landings)
