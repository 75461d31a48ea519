"""Full-text detection's own data, independent of HTTP: papers, options, findings, results.

The controller turns JSON into these (after validation), the tiers and the service work on
them, and the controller turns results back into JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum


class Confidence(StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    AI_VERIFIED = "ai_verified"

    @property
    def rank(self) -> int:
        """Order for `min_confidence`: an AI reading the content beats an unverified claim,
        a verified PDF or a full-text page the heuristics are sure of beats both."""
        return _RANK[self]


_RANK = {Confidence.LOW: 1, Confidence.MEDIUM: 2, Confidence.AI_VERIFIED: 3, Confidence.HIGH: 4}


class DocumentKind(StrEnum):
    PDF = "pdf"
    HTML = "html"


class TierNumber(IntEnum):
    DATABASE = 1
    DIRECT_URL = 2
    PMC = 3
    UNPAYWALL = 4
    PUBLISHER = 5
    SECONDARY_LINKS = 6
    AI_VERIFICATION = 7

    @property
    def label(self) -> str:
        """The metric label and the name in logs."""
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Paper:
    """One paper, identifiers already validated and normalised."""

    id: str
    doi: str | None = None
    title: str | None = None
    pmcid: str | None = None
    pmid: str | None = None
    url: str | None = None
    open_access_pdf: str | None = None
    pdf_url: str | None = None
    full_text: str | None = None
    full_text_status: str | None = None


@dataclass(frozen=True, slots=True)
class DetectOptions:
    skip_tiers: frozenset[int] = frozenset()
    max_tier: int = 7
    tier_timeout_s: float | None = None
    min_confidence: Confidence = Confidence.HIGH
    skip_ai: bool = False

    def runs(self, tier: TierNumber) -> bool:
        if tier > self.max_tier or tier in self.skip_tiers:
            return False
        return not (tier is TierNumber.AI_VERIFICATION and self.skip_ai)


@dataclass(frozen=True, slots=True)
class Finding:
    """A tier's answer: where the full text is, and how sure it is."""

    url: str | None
    kind: DocumentKind | None
    confidence: Confidence
    tier: TierNumber
    method: str


@dataclass(frozen=True, slots=True)
class Verification:
    """Whether a piece of content is a paper's full text (the `/verify` answer and tier 7's)."""

    is_full_text: bool
    confidence: float
    content_type: str
    reasoning: str
    sections: tuple[str, ...]
    recommendation: str
    decided_by: str  # heuristic | ai
    # The verdict stands on its own: the heuristics were sure, or an AI model read the content
    # and answered at least LITERATURE_AI_MIN_CONFIDENCE. `needs_review` is its negation here
    # (there is always content to review), and then `recommendation` is "review".
    certain: bool
    needs_review: bool


class AIOutcome(StrEnum):
    """How tier 7 ended; values are metric labels."""

    VERIFIED = "verified"  # the model read the sample and says it is the full text
    REJECTED = "rejected"  # the model says it is not
    UNSURE = "unsure"  # full text, but below the confidence we accept
    UNPARSEABLE = "unparseable"  # the answer was not the JSON we asked for
    UNAVAILABLE = "unavailable"  # no provider could answer
    NO_SAMPLE = "no_sample"  # the candidate could not be fetched or held no text


@dataclass(frozen=True, slots=True)
class AIVerification:
    outcome: AIOutcome
    url: str | None
    verdict: Verification | None = None
    provider: str | None = None
    model: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class DetectionResult:
    paper_id: str
    is_available: bool
    url: str | None
    alternative_urls: tuple[str, ...]
    content_type: DocumentKind | None
    confidence: Confidence
    tier: int | None
    method: str | None
    tiers_tried: tuple[int, ...]
    duration_ms: float
    ai_verification: AIVerification | None = None
    cached: bool = False
    error: str | None = None
    # Settled: a full text the heuristics were sure of or an AI verified, or a "no" the AI or
    # the heuristics were sure of. `needs_review`: a full text is offered that nobody settled.
    certain: bool = False
    needs_review: bool = False


@dataclass(slots=True)
class TierRecord:
    """What one tier did for one paper (for `tiers_tried` and the metrics)."""

    tier: TierNumber
    outcome: str
    duration_s: float


@dataclass(slots=True)
class Candidate:
    """A URL worth checking later in the waterfall, and where it was found."""

    url: str
    source: str
    kind: DocumentKind | None = None
    depth: int = 0


@dataclass(slots=True)
class Negative:
    """Evidence that the full text is *not* available where we looked."""

    tier: TierNumber
    method: str
    certain: bool


@dataclass(slots=True)
class Evidence:
    """Everything tiers learnt about one paper, carried down the waterfall."""

    findings: list[Finding] = field(default_factory=list)
    candidates: dict[str, Candidate] = field(default_factory=dict)
    # URLs already fetched (any tier), so no tier fetches the same URL twice.
    seen: set[str] = field(default_factory=set)
    negatives: list[Negative] = field(default_factory=list)
    ai: AIVerification | None = None
    # Something failed that may work later (a timeout, a 5xx, an open breaker, no AI): an
    # answer short of the wanted confidence is then not worth caching.
    transient: bool = False

    def add_candidate(
        self, url: str, source: str, *, kind: DocumentKind | None = None, depth: int = 0
    ) -> None:
        if url not in self.candidates and url not in self.seen:
            self.candidates[url] = Candidate(url, source, kind, depth)

    def best(self) -> Finding | None:
        """The most confident finding; among equals, the earliest tier's."""
        if not self.findings:
            return None
        return max(self.findings, key=lambda f: (f.confidence.rank, -f.tier))
