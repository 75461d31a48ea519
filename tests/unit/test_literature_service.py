"""The waterfall's own rules, with stand-in tiers (each a few lines, no network): early stop,
findings kept below the wanted confidence, a failing or stuck tier isolated, the per-tier
budget, the batch deadline, concurrency and duplicate coalescing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from app.core.clock import SystemClock
from app.core.settings import LiteratureSettings
from app.core.telemetry import Telemetry
from app.modules.literature.cache import ResultCache
from app.modules.literature.domain import (
    Confidence,
    DetectOptions,
    DocumentKind,
    Finding,
    Paper,
    TierNumber,
)
from app.modules.literature.metrics import LiteratureMetrics
from app.modules.literature.service import FullTextDetectionService, Waterfall
from app.modules.literature.tiers.base import Tier, TierContext

Behaviour = Callable[[TierContext], Awaitable[Finding | None]]


class StandIn(Tier):
    def __init__(self, number: TierNumber, behaviour: Behaviour, timeout_s: float = 5.0) -> None:
        self.number = number  # type: ignore[misc]
        self._behaviour = behaviour
        self._timeout_s = timeout_s
        self.runs = 0

    def timeout_s(self, settings: LiteratureSettings) -> float:
        return self._timeout_s

    def applicable(self, ctx: TierContext) -> bool:
        return True

    async def run(self, ctx: TierContext) -> Finding | None:
        self.runs += 1
        return await self._behaviour(ctx)


def finds(confidence: Confidence, url: str = "https://x.org/a.pdf") -> Behaviour:
    async def behaviour(ctx: TierContext) -> Finding | None:
        return Finding(url, DocumentKind.PDF, confidence, ctx.tier, "stand_in")

    return behaviour


async def nothing(ctx: TierContext) -> Finding | None:
    return None


async def crashes(ctx: TierContext) -> Finding | None:
    raise RuntimeError("a bug in one tier")


async def hangs(ctx: TierContext) -> Finding | None:
    await asyncio.sleep(60)
    return None


def service(*tiers: Tier, **settings: object) -> FullTextDetectionService:
    literature = LiteratureSettings(**settings)  # type: ignore[arg-type]
    clock = SystemClock()
    return FullTextDetectionService(
        literature,
        Waterfall(tiers),
        ResultCache(clock, ttl_s=literature.cache_ttl_s, max_entries=100),
        clock,
        LiteratureMetrics(Telemetry().meter, frozenset()),
    )


PAPER = Paper(id="p", doi="10.1234/x")


async def test_stops_at_the_first_answer_at_the_wanted_confidence() -> None:
    first = StandIn(TierNumber.DIRECT_URL, nothing)
    second = StandIn(TierNumber.PMC, finds(Confidence.HIGH))
    third = StandIn(TierNumber.UNPAYWALL, finds(Confidence.HIGH))
    result = await service(first, second, third).detect(PAPER, DetectOptions(), caller="t")
    assert (result.tier, result.tiers_tried) == (3, (2, 3))
    assert third.runs == 0


async def test_a_weaker_finding_is_kept_and_beaten_or_returned() -> None:
    medium = StandIn(TierNumber.DIRECT_URL, finds(Confidence.MEDIUM, "https://x.org/m"))
    high = StandIn(TierNumber.PUBLISHER, finds(Confidence.HIGH, "https://x.org/h"))
    result = await service(medium, high).detect(PAPER, DetectOptions(), caller="t")
    assert (result.url, result.confidence, result.alternative_urls) == (
        "https://x.org/h",
        Confidence.HIGH,
        ("https://x.org/m",),
    )
    alone = StandIn(TierNumber.DIRECT_URL, finds(Confidence.MEDIUM, "https://x.org/m"))
    result = await service(alone).detect(PAPER, DetectOptions(), caller="t")
    assert (result.is_available, result.confidence) == (True, Confidence.MEDIUM)
    lowered = DetectOptions(min_confidence=Confidence.MEDIUM)
    stops = StandIn(TierNumber.PMC, finds(Confidence.HIGH))
    result = await service(alone, stops).detect(PAPER, lowered, caller="t")
    assert (result.tier, stops.runs) == (2, 0)


async def test_a_crashing_or_stuck_tier_costs_only_itself() -> None:
    crash = StandIn(TierNumber.DIRECT_URL, crashes)
    stuck = StandIn(TierNumber.PMC, hangs, timeout_s=0.05)
    found = StandIn(TierNumber.UNPAYWALL, finds(Confidence.HIGH))
    detector = service(crash, stuck, found)
    started = asyncio.get_running_loop().time()
    result = await detector.detect(PAPER, DetectOptions(tier_timeout_s=0.05), caller="t")
    assert (result.tier, result.tiers_tried) == (4, (2, 3, 4))
    # Stuck for its budget plus the grace period, not for 60 s.
    assert asyncio.get_running_loop().time() - started < 2
    # An answer reached despite failures on the way is settled, so it is cached.
    again = await detector.detect(PAPER, DetectOptions(tier_timeout_s=0.05), caller="t")
    assert again.cached


async def test_failures_leave_an_unsettled_answer_uncached() -> None:
    crash = StandIn(TierNumber.DIRECT_URL, crashes)
    detector = service(crash)
    for _ in range(2):
        result = await detector.detect(PAPER, DetectOptions(), caller="t")
        assert (result.is_available, result.cached) == (False, False)
    assert crash.runs == 2


async def test_the_batch_deadline_and_concurrency() -> None:
    running = 0
    most = 0

    async def slow(ctx: TierContext) -> Finding | None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            await asyncio.sleep(0.02 if ctx.paper.id != "stuck" else 60)
        finally:
            running -= 1
        return Finding("https://x.org/a.pdf", DocumentKind.PDF, Confidence.HIGH, ctx.tier, "s")

    tier = StandIn(TierNumber.DIRECT_URL, slow, timeout_s=60)
    detector = service(tier, batch_concurrency=3, batch_deadline_s=0.5, detect_deadline_s=60)
    papers = [Paper(id=f"p{i}", doi=f"10.1234/{i}") for i in range(9)]
    papers.append(Paper(id="stuck", doi="10.1234/stuck"))
    results = await detector.detect_batch(papers, DetectOptions(), caller="t")
    assert [r.paper_id for r in results] == [p.id for p in papers]
    assert all(r.is_available for r in results[:9])
    assert (results[9].error, results[9].is_available) == ("deadline_exceeded", False)
    assert most == 3


async def test_duplicates_run_once() -> None:
    async def once(ctx: TierContext) -> Finding | None:
        await asyncio.sleep(0.02)
        return Finding("https://x.org/a.pdf", DocumentKind.PDF, Confidence.HIGH, ctx.tier, "s")

    tier = StandIn(TierNumber.DIRECT_URL, once)
    detector = service(tier, cache_ttl_s=0)
    copies = [Paper(id=f"copy{i}", doi="10.1234/same") for i in range(4)]
    results = await detector.detect_batch(copies, DetectOptions(), caller="t")
    assert [r.paper_id for r in results] == ["copy0", "copy1", "copy2", "copy3"]
    assert tier.runs == 1
