"""The literature module's instruments. Labels are closed sets only: tier names, outcomes,
publisher keys from the strategy table, refusal reasons. Never a URL, a DOI, a title, a host
or page text: those are unbounded and some are the caller's data."""

from __future__ import annotations

from opentelemetry.metrics import Meter

from app.core.telemetry import LLM_LATENCY_BUCKETS_S

# Paper counts per batch: 1 to the largest batch we accept.
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000)


class LiteratureMetrics:
    def __init__(self, meter: Meter, publishers: frozenset[str]) -> None:
        # Publisher keys allowed as label values; anything else is "other".
        self._publishers = publishers
        self.tier_attempts = meter.create_counter(
            "literature_tier_attempts",
            unit="{attempt}",
            description="Waterfall tier runs by tier and outcome (decided, found, not_found, "
            "refused, timeout, error)",
        )
        self.tier_duration = meter.create_histogram(
            "literature_tier_duration",
            unit="s",
            description="Time one tier spent on one paper",
            explicit_bucket_boundaries_advisory=list(LLM_LATENCY_BUCKETS_S),
        )
        self.decisions = meter.create_counter(
            "literature_detections",
            unit="{paper}",
            description="Detection results by deciding tier (none when not available) and "
            "confidence",
        )
        self.cache_requests = meter.create_counter(
            "literature_cache_requests",
            unit="{request}",
            description="Detection result cache lookups by result (hit or miss)",
        )
        self.fetches = meter.create_counter(
            "literature_fetches",
            unit="{request}",
            description="Outbound requests by publisher and outcome (status class or failure)",
        )
        self.refusals = meter.create_counter(
            "literature_fetch_refusals",
            unit="{request}",
            description="Outbound requests refused by the guard before any connection, by reason",
        )
        self.ai_verifications = meter.create_counter(
            "literature_ai_verifications",
            unit="{verification}",
            description="AI verifications (tier 7 and /verify) by outcome",
        )
        self.injection_removed = meter.create_counter(
            "literature_prompt_injection_fragments",
            unit="{fragment}",
            description="Instruction-like fragments removed from page text before a prompt",
        )
        self.batch_size = meter.create_histogram(
            "literature_batch_size",
            unit="{paper}",
            description="Papers per batch request",
            explicit_bucket_boundaries_advisory=list(BATCH_SIZE_BUCKETS),
        )

    def publisher_label(self, key: str) -> str:
        return key if key in self._publishers else "other"

    def tier(self, tier: str, outcome: str, duration_s: float) -> None:
        self.tier_attempts.add(1, {"tier": tier, "outcome": outcome})
        self.tier_duration.record(duration_s, {"tier": tier})

    def fetch(self, publisher: str, outcome: str) -> None:
        self.fetches.add(1, {"publisher": self.publisher_label(publisher), "outcome": outcome})
