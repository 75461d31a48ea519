"""FullTextDetectionService: the waterfall for one paper, and batches of them.

For one paper the tiers run cheapest first; each gets its own timeout (the setting, lowered by
the request's `tier_timeout_s`, never past the paper's deadline) and the waterfall stops at the
first finding at or above the wanted confidence. Findings below it are kept: a later tier may
confirm or beat them, and if none does the best of them is the answer.

A batch runs at most `batch_concurrency` papers at once under one overall deadline; results
come out as they complete (for streaming) and papers still unfinished at the deadline get an
explicit `deadline_exceeded` result instead of holding the whole batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace

from app.core.clock import Clock
from app.core.settings import LiteratureSettings
from app.core.tracing import internal_span
from app.modules.literature.cache import ResultCache, cache_key
from app.modules.literature.domain import (
    Confidence,
    DetectionResult,
    DetectOptions,
    DocumentKind,
    Evidence,
    Finding,
    Paper,
    TierNumber,
)
from app.modules.literature.metrics import LiteratureMetrics
from app.modules.literature.tiers.base import Tier, TierContext
from app.modules.literature.tiers.unpaywall import UNPAYWALL_CLOSED

log = logging.getLogger("app.literature")

# Extra time a tier gets past its own deadline before it is cancelled: its requests time out
# on their own at the deadline, this only catches a tier stuck elsewhere.
TIER_GRACE_S = 1.0
MAX_ALTERNATIVES = 5
# Unverified links worth offering as alternatives (the publisher's or Unpaywall's own).
_ALTERNATIVE_SOURCES = frozenset({"citation_pdf_url", "publisher_pdf", "unpaywall_location"})
DEADLINE_EXCEEDED = "deadline_exceeded"


@dataclass(frozen=True, slots=True)
class Waterfall:
    """The tiers in the order they run."""

    tiers: tuple[Tier, ...]


class FullTextDetectionService:
    def __init__(
        self,
        settings: LiteratureSettings,
        waterfall: Waterfall,
        cache: ResultCache,
        clock: Clock,
        metrics: LiteratureMetrics,
    ) -> None:
        self._settings = settings
        self._tiers = waterfall.tiers
        self._cache = cache
        self._clock = clock
        self._metrics = metrics
        self._inflight: dict[str, asyncio.Future[DetectionResult]] = {}

    # --- one paper ----------------------------------------------------------------------------

    async def detect(
        self,
        paper: Paper,
        options: DetectOptions,
        *,
        caller: str,
        deadline: float | None = None,
    ) -> DetectionResult:
        """Where the paper's full text is, and how sure we are (never raises for upstreams)."""
        started = self._clock.monotonic()
        own_deadline = started + self._settings.detect_deadline_s
        deadline = own_deadline if deadline is None else min(deadline, own_deadline)
        key = cache_key(paper, options)
        if self._cache.enabled:
            cached = self._cache.get(key)
            self._metrics.cache_requests.add(1, {"result": "hit" if cached else "miss"})
            if cached is not None:
                elapsed = (self._clock.monotonic() - started) * 1000
                return replace(cached, paper_id=paper.id, cached=True, duration_ms=elapsed)
        existing = self._inflight.get(key)
        if existing is not None:
            shared = await self._follow(existing)
            if shared is not None:
                return replace(shared, paper_id=paper.id)
        future: asyncio.Future[DetectionResult] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            result, settled = await self._waterfall(paper, options, caller, started, deadline)
        except BaseException:
            future.cancel()
            raise
        finally:
            if self._inflight.get(key) is future:
                del self._inflight[key]
        future.set_result(result)
        if settled:
            self._cache.put(key, result)
        return result

    @staticmethod
    async def _follow(leader: asyncio.Future[DetectionResult]) -> DetectionResult | None:
        """The same paper's result from the call already running it, or None if that call
        was cancelled (then this caller runs it itself)."""
        try:
            return await asyncio.shield(leader)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            return None

    async def _waterfall(
        self,
        paper: Paper,
        options: DetectOptions,
        caller: str,
        started: float,
        deadline: float,
    ) -> tuple[DetectionResult, bool]:
        """The result, and whether it is settled (worth caching): it reached the wanted
        confidence, or nothing on the way failed in a way that may not fail next time."""
        evidence = Evidence()
        tried: list[int] = []
        wanted = options.min_confidence
        error: str | None = None
        for tier in self._tiers:
            if not options.runs(tier.number):
                continue
            ctx = TierContext(tier.number, paper, options, evidence, wanted, deadline, caller)
            if not tier.applicable(ctx):
                continue
            now = self._clock.monotonic()
            if now >= deadline:
                error = DEADLINE_EXCEEDED
                break
            budget = min(tier.timeout_s(self._settings), deadline - now)
            if options.tier_timeout_s is not None:
                budget = min(budget, options.tier_timeout_s)
            ctx.deadline = now + budget
            tried.append(int(tier.number))
            with internal_span(
                f"tier {tier.number.label}", {"literature.tier": int(tier.number)}
            ) as span:
                finding, outcome = await self._run_tier(tier, ctx, budget)
                if span is not None:
                    span.set_attribute("literature.tier.outcome", outcome)
            evidence.transient |= outcome in ("timeout", "error")
            self._metrics.tier(tier.number.label, outcome, self._clock.monotonic() - now)
            if finding is not None:
                evidence.findings.append(finding)
                if ctx.satisfied(finding):
                    break
        result = _result(paper, evidence, tried, started, self._clock.monotonic(), error)
        self._metrics.decisions.add(
            1,
            {
                "tier": TierNumber(result.tier).label if result.tier else "none",
                "confidence": result.confidence.value,
                "available": str(result.is_available).lower(),
            },
        )
        confident = result.is_available and result.confidence.rank >= wanted.rank
        return result, confident or not evidence.transient

    async def _run_tier(
        self, tier: Tier, ctx: TierContext, budget: float
    ) -> tuple[Finding | None, str]:
        try:
            async with asyncio.timeout(budget + TIER_GRACE_S):
                finding = await tier.run(ctx)
        except TimeoutError:
            return None, "timeout"
        except Exception as exc:  # one tier's bug must not lose the paper, nor the batch
            log.exception("tier failed tier=%s error=%s", tier.number.label, type(exc).__name__)
            return None, "error"
        if finding is not None:
            return finding, "decided" if ctx.satisfied(finding) else "found"
        return None, "refused" if ctx.refused else "not_found"

    # --- batches ------------------------------------------------------------------------------

    async def detect_batch(
        self, papers: Sequence[Paper], options: DetectOptions, *, caller: str
    ) -> list[DetectionResult]:
        """Every paper's result, in the order given."""
        results: list[DetectionResult | None] = [None] * len(papers)
        async for index, result in self.stream_batch(papers, options, caller=caller):
            results[index] = result
        return [r for r in results if r is not None]

    async def stream_batch(
        self, papers: Sequence[Paper], options: DetectOptions, *, caller: str
    ) -> AsyncIterator[tuple[int, DetectionResult]]:
        """(index, result) pairs as papers complete; the unfinished ones after the deadline.

        Closing the iterator early (a client that went away) cancels the work in flight."""
        self._metrics.batch_size.record(len(papers))
        deadline = self._clock.monotonic() + self._settings.batch_deadline_s
        done: asyncio.Queue[tuple[int, DetectionResult]] = asyncio.Queue()
        indexes = iter(range(len(papers)))

        async def worker() -> None:
            for index in indexes:  # shared: each worker takes the next paper
                result = await self.detect(papers[index], options, caller=caller, deadline=deadline)
                done.put_nowait((index, result))

        workers = [
            asyncio.create_task(worker())
            for _ in range(min(self._settings.batch_concurrency, len(papers)))
        ]
        emitted: set[int] = set()
        try:
            while len(emitted) < len(papers):
                item = await self._next(done, workers, deadline)
                if item is None:
                    break
                emitted.add(item[0])
                yield item
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        for index, paper in enumerate(papers):
            if index not in emitted:
                yield index, unfinished(paper, self._settings.batch_deadline_s * 1000)

    async def _next(
        self,
        done: asyncio.Queue[tuple[int, DetectionResult]],
        workers: list[asyncio.Task[None]],
        deadline: float,
    ) -> tuple[int, DetectionResult] | None:
        """The next finished paper, or None at the deadline or when every worker stopped."""
        while True:
            if not done.empty():
                return done.get_nowait()
            if all(task.done() for task in workers):
                for task in workers:
                    if not task.cancelled() and task.exception() is not None:
                        log.error("batch worker failed error=%s", type(task.exception()).__name__)
                return None
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                return None
            getter = asyncio.ensure_future(done.get())
            try:
                finished, _ = await asyncio.wait(
                    [getter, *workers], timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                if not getter.done():
                    getter.cancel()
            if getter in finished:
                return getter.result()
            if not finished:
                return None


def unfinished(paper: Paper, duration_ms: float) -> DetectionResult:
    return DetectionResult(
        paper_id=paper.id,
        is_available=False,
        url=None,
        alternative_urls=(),
        content_type=None,
        confidence=Confidence.LOW,
        tier=None,
        method=None,
        tiers_tried=(),
        duration_ms=round(duration_ms, 3),
        error=DEADLINE_EXCEEDED,
    )


def _result(
    paper: Paper,
    evidence: Evidence,
    tried: list[int],
    started: float,
    now: float,
    error: str | None,
) -> DetectionResult:
    best = evidence.best()
    duration_ms = round((now - started) * 1000, 3)
    common = {
        "paper_id": paper.id,
        "tiers_tried": tuple(tried),
        "duration_ms": duration_ms,
        "ai_verification": evidence.ai,
        "error": error,
    }
    if best is not None:
        # A finding below high is a candidate nobody settled (a page the heuristics were
        # unsure of, an unchecked link) unless an AI read it.
        settled = best.confidence in (Confidence.HIGH, Confidence.AI_VERIFIED)
        return DetectionResult(
            is_available=True,
            url=best.url,
            alternative_urls=_alternatives(evidence, best),
            content_type=best.kind,
            confidence=best.confidence,
            tier=int(best.tier),
            method=best.method,
            certain=settled,
            needs_review=not settled,
            **common,  # type: ignore[arg-type]
        )
    confidence, tier, method = _negative(evidence)
    return DetectionResult(
        is_available=False,
        url=None,
        alternative_urls=(),
        content_type=None,
        confidence=confidence,
        tier=tier,
        method=method,
        # `_negative` gives more than low only to a "no" the AI or the heuristics were sure of;
        # an unsure "no" offers nothing to review (a false "no" only costs a retry).
        certain=confidence is not Confidence.LOW,
        needs_review=False,
        **common,  # type: ignore[arg-type]
    )


def _alternatives(evidence: Evidence, best: Finding) -> tuple[str, ...]:
    urls: dict[str, None] = {}
    ranked = sorted(evidence.findings, key=lambda f: (-f.confidence.rank, f.tier))
    for finding in ranked:
        if finding.url and finding.url != best.url:
            urls.setdefault(finding.url, None)
    for candidate in evidence.candidates.values():
        trusted = candidate.source in _ALTERNATIVE_SOURCES
        if trusted and candidate.kind is DocumentKind.PDF and candidate.url != best.url:
            urls.setdefault(candidate.url, None)
    return tuple(urls)[:MAX_ALTERNATIVES]


def _negative(evidence: Evidence) -> tuple[Confidence, int | None, str]:
    """How sure "not available" is: the AI read the best candidate and said no; or the
    heuristics were certain a page is a wall or an abstract (high when Unpaywall also knows
    the DOI as closed access); otherwise we simply found nothing."""
    if not evidence.negatives:
        return Confidence.LOW, None, "no_full_text_found"
    ai = [n for n in evidence.negatives if n.tier is TierNumber.AI_VERIFICATION]
    if ai:
        return Confidence.AI_VERIFIED, int(TierNumber.AI_VERIFICATION), ai[-1].method
    certain = [n for n in evidence.negatives if n.certain]
    if certain:
        strongest = certain[-1]
        closed = any(n.method == UNPAYWALL_CLOSED for n in evidence.negatives)
        confidence = Confidence.HIGH if closed else Confidence.MEDIUM
        return confidence, int(strongest.tier), strongest.method
    last = evidence.negatives[-1]
    return Confidence.LOW, int(last.tier), last.method
