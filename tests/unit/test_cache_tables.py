"""The three bounded tables (AI response store, literature result cache, host guards) on
cachetools: the bounds, the injected clock and the eviction counts they had by hand."""

from __future__ import annotations

from prometheus_client import generate_latest

from app.core.clock import ManualClock
from app.core.settings import LiteratureSettings, ProviderName
from app.core.telemetry import Telemetry
from app.modules.ai.cache import MemoryStore
from app.modules.ai.domain import AIResponse, Usage
from app.modules.ai.metrics import AIMetrics
from app.modules.literature.hostguards import HostGuards, RateRule


def _response(content: str = "answer") -> AIResponse:
    return AIResponse(content, ProviderName.GROQ, "m", Usage(1, 1), 0.0, 1.0)


def _evictions(telemetry: Telemetry) -> dict[str, float]:
    counts: dict[str, float] = {}
    for line in generate_latest(telemetry.registry).decode().splitlines():
        if line.startswith("ai_cache_evictions_total{"):
            labels, value = line.rsplit(" ", 1)
            reason = labels.split('reason="', 1)[1].split('"', 1)[0]
            counts[reason] = float(value)
    return counts


def test_memory_store_expires_on_the_injected_clock_and_counts_why() -> None:
    clock = ManualClock()
    telemetry = Telemetry()
    store = MemoryStore(clock, AIMetrics(telemetry, frozenset()), max_entries=2, ttl_s=60)
    store.put_now("a", _response("a"))
    clock.advance(59.9)
    assert store.get_now("a") == _response("a")  # reading does not extend its life
    clock.advance(0.1)
    assert store.get_now("a") is None
    store.put_now("b", _response("b"))
    store.put_now("c", _response("c"))
    assert store.get_now("b") is not None  # c is now the least recently used
    store.put_now("d", _response("d"))
    assert store.get_now("c") is None
    assert store.get_now("b") is not None
    assert store.get_now("d") is not None
    assert len(store) == 2
    assert _evictions(telemetry) == {"expired": 1.0, "size": 1.0}


def test_host_guards_keep_the_recently_used_and_stay_bounded() -> None:
    settings = LiteratureSettings(max_tracked_hosts=10)
    guards = HostGuards(settings, ManualClock())
    first = guards.breaker("host-0.example")
    limiter = guards.limiter(RateRule("host:host-0.example", "other", 60))
    made = {}
    for index in range(1, 30):
        made[index] = guards.breaker(f"host-{index}.example")
        guards.limiter(RateRule(f"host:host-{index}.example", "other", 60))
        # host-0 is used between every newcomer, so it is never the least recently used
        assert guards.breaker("host-0.example") is first
        assert guards.limiter(RateRule("host:host-0.example", "other", 60)) is limiter
    assert len(guards._breakers) == 10
    assert len(guards._limiters) == 10
    # host-29 is still tracked; host-1 was dropped long ago: asking again makes a new one
    assert guards.breaker("host-29.example") is made[29]
    assert guards.breaker("host-1.example") is not made[1]
