"""The seven tiers of the full-text waterfall, cheapest first."""

from app.modules.literature.tiers.ai import AIVerificationTier
from app.modules.literature.tiers.base import Examiner, Tier, TierContext
from app.modules.literature.tiers.database import DatabaseTier
from app.modules.literature.tiers.direct import DirectUrlTier
from app.modules.literature.tiers.pmc import PmcTier
from app.modules.literature.tiers.publisher import PublisherTier
from app.modules.literature.tiers.secondary import SecondaryLinksTier
from app.modules.literature.tiers.unpaywall import UnpaywallTier

__all__ = [
    "AIVerificationTier",
    "DatabaseTier",
    "DirectUrlTier",
    "Examiner",
    "PmcTier",
    "PublisherTier",
    "SecondaryLinksTier",
    "Tier",
    "TierContext",
    "UnpaywallTier",
]
