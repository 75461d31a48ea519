"""Rate limits and circuit breakers per upstream host, for the fetcher.

Limiters are keyed by publisher (all of Elsevier's hosts share Elsevier's limit), by API
(Unpaywall) or, for unknown sites, by host; breakers by host. Both tables are bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from cachetools import LRUCache

from app.core.clock import Clock
from app.core.resilience.breaker import AsyncCircuitBreaker
from app.core.resilience.ratelimit import RateLimiter, Unlimited, make_limiter
from app.core.settings import LiteratureSettings
from app.modules.literature.publishers import PublisherRegistry


@dataclass(frozen=True, slots=True)
class RateRule:
    key: str  # the limiter's key: a publisher, an API, or a host for unknown sites
    label: str  # the metric label (closed set)
    rpm: int | None


class RatePlan:
    """Which limiter a host's requests draw from."""

    def __init__(self, settings: LiteratureSettings, registry: PublisherRegistry) -> None:
        self._settings = settings
        self._registry = registry
        self._special = {
            _host_of(settings.unpaywall_base_url): RateRule(
                "unpaywall", "unpaywall", settings.unpaywall_rpm
            ),
            # doi.org only redirects; it has no published limit worth enforcing client-side.
            _host_of(settings.doi_resolver_url): RateRule("doi_resolver", "doi_resolver", None),
        }

    def rule(self, host: str) -> RateRule:
        special = self._special.get(host)
        if special is not None:
            return special
        strategy = self._registry.by_host(host)
        if strategy is not None:
            rpm = self._settings.publisher_rpm_overrides.get(
                strategy.key, strategy.rpm or self._settings.publisher_rpm
            )
            return RateRule(strategy.key, strategy.key, rpm)
        return RateRule(f"host:{host}", "other", self._settings.publisher_rpm)


def _host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


class HostGuards:
    """A circuit breaker per host and a limiter per rate key, in cachetools LRU tables
    (LITERATURE_MAX_TRACKED_HOSTS each; `get` counts as a use), so a batch over thousands of
    hosts cannot grow them without bound."""

    def __init__(self, settings: LiteratureSettings, clock: Clock) -> None:
        self._settings = settings
        self._clock = clock
        size = settings.max_tracked_hosts
        self._breakers: LRUCache[str, AsyncCircuitBreaker] = LRUCache(maxsize=size)
        self._limiters: LRUCache[str, RateLimiter | Unlimited] = LRUCache(maxsize=size)

    def breaker(self, host: str) -> AsyncCircuitBreaker:
        breaker = self._breakers.get(host)
        if breaker is None:
            breaker = AsyncCircuitBreaker(
                f"literature:{host}",
                self._clock,
                fail_max=self._settings.breaker_fail_max,
                reset_timeout_s=self._settings.breaker_reset_timeout_s,
            )
            self._breakers[host] = breaker  # the least recently used goes when full
        return breaker

    def limiter(self, rule: RateRule) -> RateLimiter | Unlimited:
        limiter = self._limiters.get(rule.key)
        if limiter is None:
            limiter = make_limiter(self._clock, rpm=rule.rpm, tpm=None)
            self._limiters[rule.key] = limiter  # the least recently used goes when full
        return limiter
