"""HTTP shapes of full-text detection (JSON, snake_case), and their mapping to the domain.

Papers ignore unknown fields (the pipeline sends whole records: authors, abstracts, ...);
options and request envelopes forbid them, so a misspelt option is a 400, not a silent default.
Identifiers are validated and normalised here, so everything below the controller can trust
them; each message says what to send instead.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.modules.literature.domain import (
    AIVerification,
    Confidence,
    DetectionResult,
    DetectOptions,
    Paper,
    Verification,
)
from app.modules.literature.safety import (
    MAX_URL_CHARS,
    normalize_doi,
    normalize_pmcid,
    normalize_pmid,
)

IDENTIFIERS = ("doi", "pmcid", "pmid", "url", "open_access_pdf", "pdf_url", "full_text")
# Stored full text beyond this is not a paper (the longest reviews are under 1 MB of text).
MAX_FULL_TEXT_CHARS = 5_000_000

OptionalUrl = Annotated[str | None, Field(default=None, max_length=MAX_URL_CHARS)]


class PaperIn(BaseModel):
    """One paper; at least one identifier (or the stored full text) is required."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    id: str | int | None = Field(default=None, description="The caller's id, echoed back")
    doi: str | None = Field(default=None, max_length=400, examples=["10.1371/journal.pone.0111303"])
    title: str | None = Field(default=None, max_length=2000)
    pmcid: str | None = Field(default=None, max_length=20, examples=["PMC4267813"])
    pmid: str | int | None = Field(default=None, examples=["25372390"])
    url: OptionalUrl = None
    open_access_pdf: OptionalUrl = None
    pdf_url: OptionalUrl = None
    full_text: str | None = Field(default=None, max_length=MAX_FULL_TEXT_CHARS)
    full_text_status: str | None = Field(default=None, max_length=40, examples=["available"])

    @field_validator("doi")
    @classmethod
    def _doi(cls, value: str | None) -> str | None:
        return normalize_doi(value) if value else None

    @field_validator("pmcid")
    @classmethod
    def _pmcid(cls, value: str | None) -> str | None:
        return normalize_pmcid(value) if value else None

    @field_validator("pmid", mode="before")
    @classmethod
    def _pmid(cls, value: object) -> str | None:
        if value is None or value == "":
            return None
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ValueError("a PMID is digits, e.g. '25372390'")
        return normalize_pmid(str(value))

    @field_validator("url", "open_access_pdf", "pdf_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL, e.g. 'https://example.org/a.pdf'")
        return value

    @model_validator(mode="after")
    def _some_identifier(self) -> PaperIn:
        if not any(getattr(self, name) for name in IDENTIFIERS):
            raise ValueError(
                "the paper has no identifier: send at least one of " + ", ".join(IDENTIFIERS)
            )
        return self

    def to_domain(self, index: int) -> Paper:
        paper_id = self.id if self.id is not None else None
        fallback = self.doi or self.pmcid or (f"pmid:{self.pmid}" if self.pmid else None)
        return Paper(
            id=str(paper_id) if paper_id is not None else (fallback or f"paper-{index}"),
            doi=self.doi,
            title=self.title,
            pmcid=self.pmcid,
            pmid=str(self.pmid) if self.pmid is not None else None,
            url=self.url,
            open_access_pdf=self.open_access_pdf,
            pdf_url=self.pdf_url,
            full_text=self.full_text,
            full_text_status=self.full_text_status,
        )


TierIndex = Annotated[int, Field(ge=1, le=7)]


class OptionsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    skip_tiers: list[TierIndex] = Field(default_factory=list, max_length=7)
    max_tier: TierIndex = 7
    tier_timeout_s: float | None = Field(
        default=None, gt=0, le=300, description="Lowers every tier's configured timeout"
    )
    min_confidence: Literal["low", "medium", "ai_verified", "high"] = Field(
        default="high", description="Stop at the first answer at least this sure"
    )
    skip_ai: bool = Field(default=False, description="Never run tier 7 (AI verification)")

    def to_domain(self) -> DetectOptions:
        return DetectOptions(
            skip_tiers=frozenset(self.skip_tiers),
            max_tier=self.max_tier,
            tier_timeout_s=self.tier_timeout_s,
            min_confidence=Confidence(self.min_confidence),
            skip_ai=self.skip_ai,
        )


class DetectBody(BaseModel):
    """`POST /v1/fulltext/detect`."""

    model_config = ConfigDict(extra="forbid")

    paper: PaperIn
    options: OptionsIn = Field(default_factory=OptionsIn)


class BatchBody(BaseModel):
    """`POST /v1/fulltext/detect/batch`; the size limit is LITERATURE_BATCH_MAX_SIZE (413)."""

    model_config = ConfigDict(extra="forbid")

    papers: list[PaperIn] = Field(min_length=1)
    options: OptionsIn = Field(default_factory=OptionsIn)


class PaperRef(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    title: str | None = Field(default=None, max_length=2000)
    doi: str | None = Field(default=None, max_length=400)

    @field_validator("doi")
    @classmethod
    def _doi(cls, value: str | None) -> str | None:
        return normalize_doi(value) if value else None


class VerifyBody(BaseModel):
    """`POST /v1/fulltext/verify`: is this content the full text of this paper?"""

    model_config = ConfigDict(extra="forbid")

    content: str = Field(
        min_length=1,
        description="Scraped HTML or plain text, or (content_type pdf) the PDF's bytes in base64",
    )
    content_type: Literal["html", "text", "pdf"] = "html"
    paper: PaperRef = Field(default_factory=PaperRef)
    skip_ai: bool = Field(default=False, description="Answer from the heuristics alone")


# --- answers ------------------------------------------------------------------------------------

ContentTypeOut = Literal[
    "full_article", "abstract_only", "paywall", "login", "metadata", "not_article", "unknown"
]


class VerificationOut(BaseModel):
    is_full_text: bool
    confidence: float = Field(ge=0, le=1)
    content_type: ContentTypeOut
    reasoning: str
    sections: list[str]
    recommendation: Literal["accept", "retry_html", "retry_pdf", "reject", "review"]
    decided_by: Literal["heuristic", "ai"]
    certain: bool = Field(
        description="The verdict stands alone: the heuristics were sure, or an AI model read "
        "the content and answered with at least LITERATURE_AI_MIN_CONFIDENCE"
    )
    needs_review: bool = Field(
        description="Nobody settled the question (then recommendation is review, and the "
        "reasoning says why no AI verdict was obtained)"
    )

    @classmethod
    def of(cls, verification: Verification) -> VerificationOut:
        return cls.model_validate(
            {
                "is_full_text": verification.is_full_text,
                "confidence": verification.confidence,
                "content_type": verification.content_type,
                "reasoning": verification.reasoning,
                "sections": list(verification.sections),
                "recommendation": verification.recommendation,
                "decided_by": verification.decided_by,
                "certain": verification.certain,
                "needs_review": verification.needs_review,
            }
        )


class AIVerificationOut(BaseModel):
    outcome: Literal["verified", "rejected", "unsure", "unparseable", "unavailable", "no_sample"]
    url: str | None
    verdict: VerificationOut | None
    provider: str | None
    model: str | None
    detail: str | None

    @classmethod
    def of(cls, ai: AIVerification) -> AIVerificationOut:
        return cls.model_validate(
            {
                "outcome": ai.outcome.value,
                "url": ai.url,
                "verdict": VerificationOut.of(ai.verdict) if ai.verdict else None,
                "provider": ai.provider,
                "model": ai.model,
                "detail": ai.detail,
            }
        )


class ResultOut(BaseModel):
    paper_id: str
    is_available: bool
    url: str | None
    alternative_urls: list[str]
    content_type: Literal["pdf", "html"] | None
    confidence: Literal["high", "medium", "low", "ai_verified"]
    tier: int | None
    method: str | None
    tiers_tried: list[int]
    duration_ms: float
    ai_verification: AIVerificationOut | None
    cached: bool = False
    error: str | None = None
    certain: bool = Field(
        default=False,
        description="Settled: a full text verified (confidence high or ai_verified), or a "
        "'no' the AI or the heuristics were sure of",
    )
    needs_review: bool = Field(
        default=False,
        description="A full text is offered that neither the heuristics nor an AI settled",
    )

    @classmethod
    def of(cls, result: DetectionResult) -> ResultOut:
        return cls.model_validate(
            {
                "paper_id": result.paper_id,
                "is_available": result.is_available,
                "url": result.url,
                "alternative_urls": list(result.alternative_urls),
                "content_type": result.content_type.value if result.content_type else None,
                "confidence": result.confidence.value,
                "tier": result.tier,
                "method": result.method,
                "tiers_tried": list(result.tiers_tried),
                "duration_ms": result.duration_ms,
                "ai_verification": (
                    AIVerificationOut.of(result.ai_verification) if result.ai_verification else None
                ),
                "cached": result.cached,
                "error": result.error,
                "certain": result.certain,
                "needs_review": result.needs_review,
            }
        )


class BatchSummaryOut(BaseModel):
    total: int
    available: int
    by_tier: dict[str, int]
    errors: int
    duration_ms: float


class BatchOut(BaseModel):
    results: list[ResultOut]
    summary: BatchSummaryOut
