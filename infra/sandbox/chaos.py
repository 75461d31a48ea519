"""Fault-injection config per provider and the runtime state it needs.

The config is a pydantic model with ``extra="forbid"`` so a typo in a test
(``latncy_ms``) is a loud 400 from ``/_chaos`` instead of a silently healthy
upstream.  Everything that depends on *when* a field was set (outage windows,
brownouts, "fail the next N", the per-key RPM windows) lives next to it in
:class:`ProviderChaos`, measured with ``time.monotonic`` so wall-clock jumps do
not end an outage early.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from collections.abc import Mapping

RPM_WINDOW_S: Final = 60.0


class ChaosConfig(BaseModel):
    """Faults for one provider. Every field is optional; the default is healthy."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: float = Field(0.0, ge=0, description="Fixed extra latency before answering.")
    latency_jitter_ms: float = Field(0.0, ge=0, description="Uniform extra 0..jitter ms.")
    latency_per_token_ms: float = Field(
        0.0,
        ge=0,
        description="Extra time per output token of the answer (as its usage counts them): "
        "before a whole answer, spread over a stream's frames.",
    )
    error_rate: float = Field(0.0, ge=0, le=1, description="Probability a call fails.")
    error_status: int = Field(503, ge=400, le=599, description="Status for injected errors.")
    retry_after: float | None = Field(
        None, ge=0, description="Seconds for retry-after on 429 (default 1) and on 503 if set."
    )
    fail_next: int = Field(0, ge=0, description="The next N calls fail with error_status.")
    seed: int | None = Field(None, description="Seed for error_rate/jitter randomness.")
    hang: bool = Field(False, description="Accept and never answer.")
    malformed: bool = Field(False, description="200 with a truncated JSON body.")
    empty: bool = Field(False, description="200 with no choices/candidates.")
    wrong_content_type: bool = Field(False, description="200 with an HTML body.")
    reset: bool = Field(False, description="Abort the TCP connection, no response.")
    slow_body_ms: float = Field(0.0, ge=0, description="Trickle the body over N ms.")
    brownout_s: float = Field(0.0, ge=0, description="Window (from now) of added latency.")
    brownout_latency_ms: float = Field(0.0, ge=0, description="Latency added in brownout.")
    down_for_s: float = Field(0.0, ge=0, description="Window (from now) of error_status.")
    rate_limited_keys: list[str] = Field(default_factory=list)
    refuse_keys: dict[str, int] = Field(
        default_factory=dict,
        description="Key -> the next N requests with it (completions and probes alike) are "
        "answered 401 as if the key were invalid, then it is accepted again (a revoked key "
        "restored, an auth blip).",
    )
    rpm_per_key: int | None = Field(None, ge=1, description="Real per-key RPM limit.")
    missing_models: list[str] = Field(default_factory=list)
    decommissioned_models: list[str] = Field(default_factory=list)
    content: str | None = Field(None, description="Answer text, verbatim.")
    schema_mismatch: bool = Field(
        False,
        description="Answer a request with a response schema with JSON of another shape "
        "(a model that ignored the schema).",
    )
    gzip: bool = Field(
        False, description="gzip answers when the client accepts it, as the real APIs do."
    )
    affect_probes: bool = Field(False, description="Also apply faults to list endpoints.")


@dataclass(slots=True)
class RateView:
    """Snapshot of a key's request budget, rendered as x-ratelimit-* headers."""

    limit: int
    remaining: int
    reset_s: float


@dataclass(slots=True)
class ProviderChaos:
    """Current config plus the clocks and counters that the config implies."""

    config: ChaosConfig = field(default_factory=ChaosConfig)
    down_until: float = 0.0
    brownout_until: float = 0.0
    fail_remaining: int = 0
    rng: random.Random = field(default_factory=random.Random)
    rpm_windows: dict[str, deque[float]] = field(default_factory=dict)
    refusals_left: dict[str, int] = field(default_factory=dict)

    # -- updating ---------------------------------------------------------------

    def put(self, data: Mapping[str, Any]) -> ChaosConfig:
        """Replace the config; every field present restarts its clock."""
        self._apply(ChaosConfig.model_validate(dict(data)), set(data), full=True)
        return self.config

    def patch(self, data: Mapping[str, Any]) -> ChaosConfig:
        """Merge top-level fields into the config; only given fields restart clocks."""
        merged = {**self.config.model_dump(), **data}
        self._apply(ChaosConfig.model_validate(merged), set(data), full=False)
        return self.config

    def clear(self) -> None:
        """Back to healthy, forgetting all clocks and RPM windows."""
        self._apply(ChaosConfig(), set(), full=True)

    def _apply(self, config: ChaosConfig, touched: set[str], *, full: bool) -> None:
        now = time.monotonic()
        self.config = config
        if full or "down_for_s" in touched:
            self.down_until = now + config.down_for_s if config.down_for_s else 0.0
        if full or "brownout_s" in touched:
            self.brownout_until = now + config.brownout_s if config.brownout_s else 0.0
        if full or "fail_next" in touched:
            self.fail_remaining = config.fail_next
        if full or "seed" in touched:
            self.rng = random.Random(config.seed)
        if full or "rpm_per_key" in touched:
            self.rpm_windows.clear()
        if full or "refuse_keys" in touched:
            self.refusals_left = {k: n for k, n in config.refuse_keys.items() if n > 0}

    # -- decisions (called per request, keep them cheap) -----------------------

    def latency_s(self, now: float) -> float:
        """Extra delay for this call: fixed + jitter + brownout (if inside window)."""
        cfg = self.config
        ms = cfg.latency_ms
        if cfg.latency_jitter_ms:
            ms += self.rng.uniform(0.0, cfg.latency_jitter_ms)
        if now < self.brownout_until:
            ms += cfg.brownout_latency_ms
        return ms / 1000.0

    def is_down(self, now: float) -> bool:
        """Inside a ``down_for_s`` outage window."""
        return now < self.down_until

    def roll_error(self) -> str | None:
        """Which injected-error fault fires for this call, if any."""
        if self.fail_remaining > 0:
            self.fail_remaining -= 1
            return "fail_next"
        rate = self.config.error_rate
        if rate and (rate >= 1.0 or self.rng.random() < rate):
            return "error_rate"
        return None

    def refuse(self, key: str | None) -> bool:
        """Whether ``refuse_keys`` answers this request with ``key`` 401 (counts it down)."""
        if key is None or self.refusals_left.get(key, 0) <= 0:
            return False
        self.refusals_left[key] -= 1
        return True

    def admit(self, key: str, now: float) -> float | None:
        """Count one call against ``key``'s RPM window.

        Returns ``None`` when admitted, else the seconds until a slot frees (the
        call is not counted, like real providers that only meter accepted calls).
        """
        limit = self.config.rpm_per_key
        if limit is None:
            return None
        window = self.rpm_windows.setdefault(key, deque())
        horizon = now - RPM_WINDOW_S
        while window and window[0] <= horizon:
            window.popleft()
        if len(window) >= limit:
            return max(window[0] + RPM_WINDOW_S - now, 0.001)
        window.append(now)
        return None

    def rate_view(self, key: str, now: float) -> RateView | None:
        """Budget left for ``key`` under ``rpm_per_key`` (None when unlimited)."""
        limit = self.config.rpm_per_key
        if limit is None:
            return None
        window = self.rpm_windows.get(key) or deque()
        live = [t for t in window if t > now - RPM_WINDOW_S]
        reset = (live[0] + RPM_WINDOW_S - now) if live else 0.0
        return RateView(limit=limit, remaining=max(limit - len(live), 0), reset_s=reset)

    def timers(self, now: float) -> dict[str, float | int]:
        """Remaining time-bound state, for ``/_stats`` (debugging flaky tests)."""
        return {
            "down_remaining_s": round(max(self.down_until - now, 0.0), 3),
            "brownout_remaining_s": round(max(self.brownout_until - now, 0.0), 3),
            "fail_next_remaining": self.fail_remaining,
            "refusals_remaining": sum(self.refusals_left.values()),
        }


def retry_after_for_429(config: ChaosConfig) -> float:
    """Providers always tell you when to come back on a 429; default 1 second."""
    return config.retry_after if config.retry_after is not None else 1.0


def ceil_seconds(value: float) -> int:
    """Whole seconds, rounded up, at least 1 (what ``retry-after`` usually carries)."""
    return max(1, math.ceil(value))
