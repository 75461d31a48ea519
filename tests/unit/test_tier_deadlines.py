"""Whose deadline a tier runs under: its configured timeout (a host that does not answer by
then is at fault) or the caller's (`tier_timeout_s`, the paper's deadline: no verdict on the
host)."""

from __future__ import annotations

import pytest

from app.core.settings import LiteratureSettings
from app.modules.literature.domain import Confidence, DetectOptions, Evidence, Paper, TierNumber
from app.modules.literature.tiers import (
    AIVerificationTier,
    DirectUrlTier,
    PmcTier,
    PublisherTier,
    SecondaryLinksTier,
    UnpaywallTier,
)
from app.modules.literature.tiers.base import CONFIGURED_TIMEOUTS, TierContext

# Every tier a different timeout, so a tier mapped to another's setting shows.
SETTINGS = LiteratureSettings(
    direct_timeout_s=11,
    pmc_timeout_s=12,
    unpaywall_timeout_s=13,
    publisher_timeout_s=14,
    secondary_timeout_s=15,
    ai_timeout_s=16,
    detect_deadline_s=60,
)
NOW = 1000.0
PAPER_DEADLINE = NOW + 60


@pytest.mark.parametrize(
    "tier",
    [DirectUrlTier, PmcTier, UnpaywallTier, PublisherTier, SecondaryLinksTier, AIVerificationTier],
)
def test_the_table_says_what_each_tier_says(tier: type) -> None:
    instance = object.__new__(tier)  # timeout_s reads only the settings
    assert CONFIGURED_TIMEOUTS[tier.number](SETTINGS) == instance.timeout_s(SETTINGS)


def _context(budget: float, tier_timeout_s: float | None = None) -> TierContext:
    """A context as the service makes it: the paper's deadline, then narrowed to the tier's
    budget (its timeout, lowered by tier_timeout_s, never past the paper's deadline)."""
    options = DetectOptions(tier_timeout_s=tier_timeout_s, min_confidence=Confidence.HIGH)
    ctx = TierContext(
        TierNumber.UNPAYWALL,
        Paper(id="p", doi="10.1234/x"),
        options,
        Evidence(),
        Confidence.HIGH,
        PAPER_DEADLINE,
        "tests",
    )
    ctx.deadline = NOW + budget
    return ctx


def test_the_configured_timeout_is_the_hosts() -> None:
    assert not _context(13).deadline_is_callers(SETTINGS)
    # Asking for more than is configured changes nothing: the configured timeout binds.
    assert not _context(13, tier_timeout_s=30).deadline_is_callers(SETTINGS)


def test_a_shorter_tier_timeout_is_the_callers() -> None:
    assert _context(0.001, tier_timeout_s=0.001).deadline_is_callers(SETTINGS)
    assert _context(12.9, tier_timeout_s=12.9).deadline_is_callers(SETTINGS)


def test_the_papers_deadline_is_the_callers() -> None:
    assert _context(PAPER_DEADLINE - NOW).deadline_is_callers(SETTINGS)
    late = _context(0.0)
    late.deadline = PAPER_DEADLINE  # the paper's last seconds, shorter than the tier's 13
    assert late.deadline_is_callers(SETTINGS)
