"""Tier 7: AI verification of the best candidate the earlier tiers were not sure of.

A bounded sample is fetched (a PDF whole, up to `max_pdf_bytes`; a page's first
`max_html_bytes`), its text extracted (PDF: the first `ai_pdf_pages` pages), sanitised and
shown to the model. Its verdict is parsed strictly. A confident "full text" makes the
candidate `ai_verified`; a "not full text" removes the candidate (the model read what the
heuristics only guessed at); anything else - no sample, no provider, an unparseable answer -
leaves the earlier answer as it was and says so in `ai_verification`.
"""

from __future__ import annotations

import asyncio

from app.core.clock import Clock
from app.core.settings import LiteratureSettings
from app.modules.literature.content import extract_text
from app.modules.literature.domain import (
    AIOutcome,
    AIVerification,
    Confidence,
    Finding,
    Negative,
    TierNumber,
)
from app.modules.literature.fetcher import FetchError, FetchRefused, SafeFetcher
from app.modules.literature.tiers.base import Tier, TierContext
from app.modules.literature.verification import AIVerifier, pdf_text


class AIVerificationTier(Tier):
    number = TierNumber.AI_VERIFICATION

    def __init__(
        self,
        fetcher: SafeFetcher,
        verifier: AIVerifier,
        settings: LiteratureSettings,
        clock: Clock,
    ) -> None:
        self._fetcher = fetcher
        self._verifier = verifier
        self._settings = settings
        self._clock = clock

    def timeout_s(self, settings: LiteratureSettings) -> float:
        return settings.ai_timeout_s

    def applicable(self, ctx: TierContext) -> bool:
        return _target(ctx) is not None

    async def run(self, ctx: TierContext) -> Finding | None:
        target = _target(ctx)
        assert target is not None
        assert target.url is not None
        sample = await self._sample(target.url, ctx)
        if isinstance(sample, AIVerification):
            ctx.evidence.ai = sample
            return None
        text, document = sample
        answer = await self._verifier.verify(
            text,
            document=document,
            title=ctx.paper.title,
            doi=ctx.paper.doi,
            caller=ctx.caller,
            deadline_s=ctx.deadline - self._clock.monotonic(),
            url=target.url,
        )
        ctx.evidence.ai = answer
        ctx.evidence.transient |= answer.outcome is AIOutcome.UNAVAILABLE
        if answer.outcome is AIOutcome.VERIFIED:
            return Finding(
                target.url, target.kind, Confidence.AI_VERIFIED, self.number, "ai_verification"
            )
        if answer.outcome is AIOutcome.REJECTED:
            ctx.evidence.findings = [f for f in ctx.evidence.findings if f.url != target.url]
            ctx.evidence.negatives.append(Negative(self.number, "ai_rejected", True))
        return None

    async def _sample(self, url: str, ctx: TierContext) -> tuple[str, str] | AIVerification:
        """(text, document kind) of the candidate, or the NO_SAMPLE outcome saying why."""
        try:
            result = await self._fetcher.fetch(
                url,
                deadline=ctx.deadline,
                policy=self._fetcher.sample_policy,
                deadline_is_callers=ctx.deadline_is_callers(self._settings),
            )
        except FetchError as error:
            ctx.refused |= isinstance(error, FetchRefused)
            ctx.evidence.transient |= error.transient
            return AIVerification(AIOutcome.NO_SAMPLE, url, detail=f"fetch failed: {error.kind}")
        if not result.ok:
            return AIVerification(AIOutcome.NO_SAMPLE, url, detail=f"HTTP {result.status}")
        limit = self._settings.ai_sample_chars * 2  # the sanitiser keeps head and tail
        if result.is_pdf:
            text = await asyncio.to_thread(
                pdf_text, result.body, max_pages=self._settings.ai_pdf_pages, max_chars=limit
            )
            return text, "pdf"
        if result.is_html:
            html = result.html(self._settings.max_html_bytes)
            return await asyncio.to_thread(extract_text, html, max_chars=limit), "html page"
        return AIVerification(AIOutcome.NO_SAMPLE, url, detail="neither a PDF nor a page")


def _target(ctx: TierContext) -> Finding | None:
    """The most promising finding the earlier tiers were not sure enough of."""
    unsure = [
        f
        for f in ctx.evidence.findings
        if f.url is not None and f.confidence.rank < ctx.wanted.rank
    ]
    if not unsure:
        return None
    return max(unsure, key=lambda f: (f.confidence.rank, -f.tier))
