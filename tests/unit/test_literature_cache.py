"""The detection result cache: per paper (not per caller id), bounded by age and size."""

from __future__ import annotations

from app.core.clock import ManualClock
from app.modules.literature.cache import ResultCache, cache_key
from app.modules.literature.domain import (
    Confidence,
    DetectionResult,
    DetectOptions,
    Paper,
)


def _result(paper_id: str = "p", error: str | None = None) -> DetectionResult:
    return DetectionResult(
        paper_id=paper_id,
        is_available=True,
        url="https://example.org/a.pdf",
        alternative_urls=(),
        content_type=None,
        confidence=Confidence.HIGH,
        tier=2,
        method="direct_pdf",
        tiers_tried=(2,),
        duration_ms=1.0,
        error=error,
    )


def test_the_key_is_the_paper_and_the_options_that_change_the_answer() -> None:
    base = Paper(id="a", doi="10.1/x")
    options = DetectOptions()
    assert cache_key(base, options) == cache_key(Paper(id="other", doi="10.1/x"), options)
    assert cache_key(base, options) == cache_key(base, DetectOptions(tier_timeout_s=1))
    assert cache_key(base, options) != cache_key(Paper(id="a", doi="10.1/y"), options)
    assert cache_key(base, options) != cache_key(base, DetectOptions(skip_ai=True))
    assert cache_key(base, options) != cache_key(base, DetectOptions(max_tier=3))
    with_text = Paper(id="a", doi="10.1/x", full_text="one")
    assert cache_key(with_text, options) != cache_key(
        Paper(id="a", doi="10.1/x", full_text="two"), options
    )


def test_entries_expire_on_the_injected_clock() -> None:
    clock = ManualClock()
    cache = ResultCache(clock, ttl_s=60, max_entries=10)
    cache.put("k", _result())
    clock.advance(59)
    assert cache.get("k") is not None
    clock.advance(1)
    assert cache.get("k") is None
    assert len(cache) == 0


def test_least_recently_used_entries_go_first() -> None:
    cache = ResultCache(ManualClock(), ttl_s=60, max_entries=2)
    cache.put("a", _result())
    cache.put("b", _result())
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", _result())
    assert cache.get("b") is None
    assert cache.get("a") is not None
    assert cache.get("c") is not None


def test_errors_are_not_cached_and_a_zero_ttl_disables_it() -> None:
    cache = ResultCache(ManualClock(), ttl_s=60, max_entries=2)
    cache.put("a", _result(error="deadline_exceeded"))
    assert cache.get("a") is None
    off = ResultCache(ManualClock(), ttl_s=0, max_entries=2)
    off.put("a", _result())
    assert not off.enabled
    assert off.get("a") is None
