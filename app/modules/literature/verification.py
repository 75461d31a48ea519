"""Is this content the paper's full text? Heuristics first, the AI only when they are unsure.

`AIVerifier` is the one place that asks `UnifiedAIService` about page content (tier 7 and the
`/verify` route both use it): sanitised sample, strict prompt, strict parse, an honest outcome
when no provider can answer. `ContentVerifier` is the `/verify` route's logic.
"""

from __future__ import annotations

import asyncio
import io
import logging

from pypdf import PdfReader

from app.core.errors import GatewayError
from app.core.settings import LiteratureSettings
from app.modules.ai.domain import CallContext, CompletionRequest, Intent
from app.modules.ai.service import UnifiedAIService
from app.modules.literature.content import (
    ContentAssessment,
    assess_html,
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
# The confidence a heuristic verdict keeps when it needed the AI and the AI could not answer.
UNVERIFIED_CONFIDENCE_CAP = 0.5


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
            return self._done(
                AIVerification(AIOutcome.UNAVAILABLE, url, detail=f"{error.title.lower()}")
            )
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
        if not verdict.is_full_text:
            outcome = AIOutcome.REJECTED
        elif verdict.confidence >= self._settings.ai_min_confidence:
            outcome = AIOutcome.VERIFIED
        else:
            outcome = AIOutcome.UNSURE
        return self._done(AIVerification(outcome, url, verdict, provider, model))

    def _done(self, result: AIVerification) -> AIVerification:
        self._metrics.ai_verifications.add(1, {"outcome": result.outcome.value})
        return result


def heuristic_verification(assessment: ContentAssessment) -> Verification:
    return Verification(
        is_full_text=assessment.is_full_text,
        confidence=assessment.confidence,
        content_type=assessment.content_type.value,
        reasoning=assessment.reasoning,
        sections=assessment.sections,
        recommendation=assessment.recommendation.value,
        decided_by="heuristic",
    )


class ContentVerifier:
    """`POST /v1/fulltext/verify`: is this piece of scraped content the full text?"""

    def __init__(self, ai: AIVerifier, settings: LiteratureSettings) -> None:
        self._ai = ai
        self._settings = settings

    async def verify(
        self,
        content: str,
        *,
        content_type: str,
        title: str | None,
        doi: str | None,
        allow_ai: bool,
        caller: str,
    ) -> Verification:
        is_html = content_type == "html"
        if is_html:
            assessment = await asyncio.to_thread(assess_html, content, title=title, doi=doi)
        else:
            assessment = await asyncio.to_thread(assess_text, content, title=title, doi=doi)
        heuristic = heuristic_verification(assessment)
        if assessment.certain or not allow_ai:
            return heuristic
        sample = content
        if is_html:
            sample = await asyncio.to_thread(
                extract_text, content, max_chars=self._settings.ai_sample_chars * 2
            )
        answer = await self._ai.verify(
            sample,
            document="html page" if is_html else "text",
            title=title,
            doi=doi,
            caller=caller,
            deadline_s=self._settings.ai_timeout_s,
        )
        if answer.verdict is not None:
            return answer.verdict
        return Verification(
            is_full_text=heuristic.is_full_text,
            confidence=min(heuristic.confidence, UNVERIFIED_CONFIDENCE_CAP),
            content_type=heuristic.content_type,
            reasoning=f"{heuristic.reasoning} (the heuristics were unsure and AI verification "
            f"failed: {answer.outcome.value}{': ' + answer.detail if answer.detail else ''})",
            sections=heuristic.sections,
            recommendation=heuristic.recommendation,
            decided_by="heuristic",
        )


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
