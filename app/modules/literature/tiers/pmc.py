"""Tier 3: PubMed Central. A PMCID (or a PMID that NCBI's ID converter maps to one) gives the
article URL; the page is fetched and judged, since PMC also hosts scanned back issues and
embargoed records whose page holds only the abstract."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from app.core.settings import LiteratureSettings
from app.modules.literature.domain import Finding, TierNumber
from app.modules.literature.fetcher import FetchError, FetchRefused, transient_status
from app.modules.literature.safety import normalize_pmcid
from app.modules.literature.tiers.base import Examiner, ExamKind, Tier, TierContext, settle_page

IDCONV_TOOL = "literature-ai-gateway"


class PmcTier(Tier):
    number = TierNumber.PMC

    def __init__(self, examiner: Examiner, settings: LiteratureSettings) -> None:
        self._examiner = examiner
        self._settings = settings

    def timeout_s(self, settings: LiteratureSettings) -> float:
        return settings.pmc_timeout_s

    def applicable(self, ctx: TierContext) -> bool:
        return bool(ctx.paper.pmcid or ctx.paper.pmid)

    async def run(self, ctx: TierContext) -> Finding | None:
        pmcid = ctx.paper.pmcid or await self._pmcid_for(ctx)
        if pmcid is None:
            return None
        url = f"{self._settings.pmc_article_base_url.rstrip('/')}/{pmcid}/"
        exam = await self._examiner.examine(url, ctx)
        if exam.kind is not ExamKind.HTML:
            return None
        return await settle_page(self._examiner, exam, ctx, self.number, "pmc")

    async def _pmcid_for(self, ctx: TierContext) -> str | None:
        """NCBI's ID converter: PMID -> PMCID (None when the paper is not in PMC)."""
        assert ctx.paper.pmid is not None
        query = {"ids": ctx.paper.pmid, "format": "json", "tool": IDCONV_TOOL}
        if self._settings.unpaywall_email:
            query["email"] = self._settings.unpaywall_email
        fetcher = self._examiner.fetcher
        try:
            result = await fetcher.fetch(
                f"{self._settings.pmc_idconv_url}?{urlencode(query)}",
                deadline=ctx.deadline,
                policy=fetcher.json_policy,
                deadline_is_callers=ctx.deadline_is_callers(self._settings),
            )
        except FetchError as error:
            ctx.refused |= isinstance(error, FetchRefused)
            ctx.evidence.transient |= error.transient
            return None
        ctx.evidence.transient |= transient_status(result.status)
        if not result.ok:
            return None
        try:
            records = json.loads(result.body).get("records", [])
            raw = next((r.get("pmcid") for r in records if isinstance(r, dict)), None)
            return normalize_pmcid(raw) if isinstance(raw, str) else None
        except (ValueError, AttributeError):
            return None
