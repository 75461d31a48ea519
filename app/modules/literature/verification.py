"""Is this content the paper's full text? Heuristics first, the AI only when they are unsure.

`AIVerifier` is the one place that asks `UnifiedAIService` about page content (tier 7 and the
`/verify` route both use it): sanitised sample, strict prompt, strict parse, an honest outcome
when no provider can answer. `ContentVerifier` is the `/verify` route's logic.

One rule for an answer nobody settled: when the heuristics are unsure and no AI verdict that
clears LITERATURE_AI_MIN_CONFIDENCE was obtained - the AI skipped (`skip_ai`), not configured,
over budget, failed, unsure, or answered outside the schema - the answer keeps the heuristics'
verdict and confidence, is `certain: false, needs_review: true` with the recommendation
`review`, and its reasoning says which of those happened.
"""

from __future__ import annotations

import asyncio
import io
import logging
from dataclasses import replace

from pypdf import PdfReader

from app.core.errors import GatewayError
from app.core.settings import LiteratureSettings
from app.modules.ai.domain import CallContext, CompletionRequest, Intent
from app.modules.ai.errors import AllProvidersFailed, BudgetExceeded, DeadlineExceeded
from app.modules.ai.service import UnifiedAIService
from app.modules.literature.content import (
    ContentAssessment,
    Recommendation,
    assess_html,
    assess_pdf_bytes,
    assess_text,
    extract_text,
)
from app.modules.literature.domain import AIOutcome, AIVerification, Verification
from app.modules.literature.metrics import LiteratureMetrics
from app.modules.literature.prompts import VerdictError, build_messages, parse_verdict
from app.modules.literature.safety import sanitize_for_prompt

log = logging.getLogger("app.literature.verify")

SERVICE_NAME = "fulltext-verify"
# A verdict is a few hundred tokens; more means the model is not answering the question.
MAX_VERDICT_TOKENS = 600
# Skipping the AI (`skip_ai`) is the caller's choice; the reasoning says so in these words.
AI_SKIPPED = "AI verification was skipped (skip_ai)"


class AIVerifier:
    def __init__(
        self, ai: UnifiedAIService, settings: LiteratureSettings, metrics: LiteratureMetrics
    ) -> None:
        self._ai = ai
        self._settings = settings
        self._metrics = metrics

    async def verify(
        self,
        text: str,
        *,
        document: str,
        title: str | None,
        doi: str | None,
        caller: str,
        deadline_s: float,
        url: str | None = None,
    ) -> AIVerification:
        """Ask the model; never raises for an upstream problem (that is an outcome)."""
        sample = sanitize_for_prompt(text, max_chars=self._settings.ai_sample_chars)
        if sample.removed:
            self._metrics.injection_removed.add(sample.removed)
        if len(sample.text) < 50:
            return self._done(AIVerification(AIOutcome.NO_SAMPLE, url, detail="no text to read"))
        if deadline_s <= 0:
            return self._done(
                AIVerification(AIOutcome.UNAVAILABLE, url, detail="no time left for the AI")
            )
        if not self._ai.guards:
            return self._done(
                AIVerification(AIOutcome.UNAVAILABLE, url, detail="no AI provider is configured")
            )
        request = CompletionRequest(
            messages=build_messages(sample, document=document, title=title, doi=doi),
            model="fast",
            temperature=0.1,
            max_tokens=MAX_VERDICT_TOKENS,
            json_mode=True,
            intent=Intent.VALIDATION,
            cache=True,
        )
        try:
            response = await self._ai.complete(
                request,
                context=CallContext(caller=caller, service_name=SERVICE_NAME),
                deadline_s=deadline_s,
            )
        except GatewayError as error:
            log.info("ai verification unavailable reason=%s", error.slug)
            return self._done(AIVerification(AIOutcome.UNAVAILABLE, url, detail=_why(error)))
        provider, model = response.provider.value, response.model
        try:
            verdict = parse_verdict(response.content)
        except VerdictError as error:
            log.info("ai verification unparseable provider=%s model=%s", provider, model)
            return self._done(
                AIVerification(
                    AIOutcome.UNPARSEABLE, url, provider=provider, model=model, detail=str(error)
                )
            )
        sure = verdict.confidence >= self._settings.ai_min_confidence
        if not verdict.is_full_text:
            outcome = AIOutcome.REJECTED
        elif sure:
            outcome = AIOutcome.VERIFIED
        else:
            outcome = AIOutcome.UNSURE
        # A rejection is acted on at any confidence (tier 7 drops the candidate: precision
        # first), so it stands; a "full text" below the accepted confidence does not.
        settled = outcome is not AIOutcome.UNSURE
        verdict = replace(verdict, certain=settled and sure, needs_review=not settled)
        if not settled:
            verdict = replace(verdict, recommendation=Recommendation.REVIEW.value)
        return self._done(AIVerification(outcome, url, verdict, provider, model))

    def _done(self, result: AIVerification) -> AIVerification:
        self._metrics.ai_verifications.add(1, {"outcome": result.outcome.value})
        return result


def _why(error: GatewayError) -> str:
    """Why no provider answered, in the words the reasoning and `detail` show."""
    if isinstance(error, BudgetExceeded):
        return "the AI budget is spent (every provider is over its budget)"
    if isinstance(error, DeadlineExceeded):
        return "no AI provider answered in time"
    if isinstance(error, AllProvidersFailed):
        return "all AI providers failed"
    return error.title.lower()


def heuristic_verification(assessment: ContentAssessment) -> Verification:
    """The heuristics' verdict as an answer: settled when they are certain."""
    return Verification(
        is_full_text=assessment.is_full_text,
        confidence=assessment.confidence,
        content_type=assessment.content_type.value,
        reasoning=assessment.reasoning,
        sections=assessment.sections,
        recommendation=assessment.recommendation.value,
        decided_by="heuristic",
        certain=assessment.certain,
        needs_review=not assessment.certain,
    )


def unsettled(heuristic: Verification, why: str) -> Verification:
    """The heuristics' unsure verdict when no AI verdict settled it: same verdict and
    confidence, recommendation `review`, and the reason no AI verdict was obtained."""
    return replace(
        heuristic,
        reasoning=f"{heuristic.reasoning} (the heuristics were unsure and {why}; needs review)",
        recommendation=Recommendation.REVIEW.value,
        certain=False,
        needs_review=True,
    )


def _ai_failure(answer: AIVerification) -> str:
    """`unsettled`'s reason for an AI call that gave no verdict that stands."""
    if answer.outcome is AIOutcome.UNSURE:
        return "the AI was unsure (a full-text verdict below LITERATURE_AI_MIN_CONFIDENCE)"
    if answer.outcome is AIOutcome.UNAVAILABLE:
        return f"no AI verdict was obtained: {answer.detail or 'no provider answered'}"
    detail = f": {answer.detail}" if answer.detail else ""
    return f"AI verification failed: {answer.outcome.value}{detail}"


class ContentVerifier:
    """`POST /v1/fulltext/verify`: is this piece of scraped content the full text?"""

    def __init__(self, ai: AIVerifier, settings: LiteratureSettings) -> None:
        self._ai = ai
        self._settings = settings

    async def verify(
        self,
        content: str | bytes,
        *,
        content_type: str,
        title: str | None,
        doi: str | None,
        allow_ai: bool,
        caller: str,
    ) -> Verification:
        """`content` is the page or text as sent, or a PDF's bytes (`content_type` "pdf")."""
        assessment = await asyncio.to_thread(self._assess, content, content_type, title, doi)
        heuristic = heuristic_verification(assessment)
        if assessment.certain:
            return heuristic
        if not allow_ai:
            return unsettled(heuristic, AI_SKIPPED)
        sample, document = await asyncio.to_thread(self._sample, content, content_type)
        answer = await self._ai.verify(
            sample,
            document=document,
            title=title,
            doi=doi,
            caller=caller,
            deadline_s=self._settings.ai_timeout_s,
        )
        if answer.verdict is not None and not answer.verdict.needs_review:
            return answer.verdict
        return unsettled(heuristic, _ai_failure(answer))

    @staticmethod
    def _assess(
        content: str | bytes, content_type: str, title: str | None, doi: str | None
    ) -> ContentAssessment:
        if isinstance(content, bytes):
            return assess_pdf_bytes(content, title=title, doi=doi)
        if content_type == "html":
            return assess_html(content, title=title, doi=doi)
        return assess_text(content, title=title, doi=doi)

    def _sample(self, content: str | bytes, content_type: str) -> tuple[str, str]:
        """The text an AI model reads, and what kind of document it came from."""
        limit = self._settings.ai_sample_chars * 2  # the sanitiser keeps head and tail
        if isinstance(content, bytes):
            pages = self._settings.ai_pdf_pages
            return pdf_text(content, max_pages=pages, max_chars=limit), "pdf"
        if content_type == "html":
            return extract_text(content, max_chars=limit), "html page"
        return content, "text"


def pdf_text(data: bytes, *, max_pages: int, max_chars: int) -> str:
    """The text of a PDF's first pages (CPU-bound: run in a worker thread). An unreadable PDF
    is an empty text, not an exception: a bad download is an expected outcome."""
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            reader.decrypt("")
        parts: list[str] = []
        size = 0
        for page in reader.pages[:max_pages]:
            text = page.extract_text() or ""
            parts.append(text)
            size += len(text)
            if size >= max_chars:
                break
        return "\n".join(parts)[:max_chars]
    except Exception as exc:  # pypdf raises many types on malformed input
        log.info("unreadable pdf error=%s", type(exc).__name__)
        return ""
