"""What every tier shares: the protocol, the per-paper context, and `Examiner`, which fetches a
URL under the guard and says what it is (a PDF, a full-text page, an abstract, a wall).

Tiers are small classes with two methods: `applicable` (are this tier's inputs there? if not
the tier is skipped without counting as tried) and `run` (return a Finding, or None and leave
evidence - candidate URLs, negative signs - for later tiers).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar

from app.core.settings import LiteratureSettings
from app.modules.literature.content import ContentAssessment, assess_html, assess_pdf_bytes
from app.modules.literature.domain import (
    Confidence,
    DetectOptions,
    DocumentKind,
    Evidence,
    Finding,
    Negative,
    Paper,
    TierNumber,
)
from app.modules.literature.fetcher import (
    FetchError,
    FetchRefused,
    FetchResult,
    SafeFetcher,
    transient_status,
)
from app.modules.literature.publishers import GENERIC, PageLinks, PublisherRegistry, read_links

# A known publisher's article-body container holding this much text confirms a full-text
# verdict the heuristics were unsure of (an abstract is 1-2 000 characters, a short paper's
# body more than 8 000).
CONTENT_CONFIRM_CHARS = 6000
# Publisher PDF links checked per page; the first one is nearly always the article.
PDF_LINKS_PER_PAGE = 2
# A tier's deadline within this of the paper's is the paper's (float rounding of now + left).
_SAME_DEADLINE_S = 1e-6
# Each tier's configured timeout (what its `timeout_s` returns), by number, for contexts that
# must know it without the tier at hand (the fetches an Examiner makes for any tier).
CONFIGURED_TIMEOUTS: dict[TierNumber, Callable[[LiteratureSettings], float]] = {
    TierNumber.DIRECT_URL: lambda s: s.direct_timeout_s,
    TierNumber.PMC: lambda s: s.pmc_timeout_s,
    TierNumber.UNPAYWALL: lambda s: s.unpaywall_timeout_s,
    TierNumber.PUBLISHER: lambda s: s.publisher_timeout_s,
    TierNumber.SECONDARY_LINKS: lambda s: s.secondary_timeout_s,
    TierNumber.AI_VERIFICATION: lambda s: s.ai_timeout_s,
}


@dataclass(slots=True)
class TierContext:
    """One paper's state while one tier runs."""

    tier: TierNumber
    paper: Paper
    options: DetectOptions
    evidence: Evidence
    wanted: Confidence
    deadline: float  # monotonic time this tier must finish by
    caller: str
    # Set when a fetch was refused by the guard, so the tier's outcome can say so.
    refused: bool = False
    # The paper's own deadline: `deadline` as the context was made, before the service
    # narrowed it to this tier's.
    paper_deadline: float = field(init=False)

    def __post_init__(self) -> None:
        self.paper_deadline = self.deadline

    def satisfied(self, finding: Finding | None) -> bool:
        return finding is not None and finding.confidence.rank >= self.wanted.rank

    def deadline_is_callers(self, settings: LiteratureSettings) -> bool:
        """Whether this tier's deadline is shorter than its configured timeout because of the
        caller: the request's `tier_timeout_s`, or the paper's overall deadline (the batch's,
        or `detect_deadline_s`). A host that has not answered by such a deadline is not at
        fault: its breaker gets no verdict (ARCHITECTURE.md, "blame the right party")."""
        configured = CONFIGURED_TIMEOUTS.get(self.tier)
        if configured is None:
            return True  # a tier that fetches nothing on its own time
        asked = self.options.tier_timeout_s
        if asked is not None and asked < configured(settings):
            return True
        return self.deadline >= self.paper_deadline - _SAME_DEADLINE_S


class Tier(ABC):
    number: ClassVar[TierNumber]

    @abstractmethod
    def applicable(self, ctx: TierContext) -> bool: ...

    @abstractmethod
    async def run(self, ctx: TierContext) -> Finding | None: ...

    @abstractmethod
    def timeout_s(self, settings: LiteratureSettings) -> float: ...


class ExamKind(StrEnum):
    PDF = "pdf"
    HTML = "html"
    OTHER = "other"  # fetched, but neither a PDF nor a page (or an error status)
    FAILED = "failed"  # not fetched: refused, timed out, too large, ...


@dataclass(frozen=True, slots=True)
class Examination:
    kind: ExamKind
    url: str  # the final URL after redirects (the requested one if not fetched)
    status: int | None = None
    # A page's assessment, or a PDF's (page count, text layer, sections, references: the
    # checks /verify makes); None for a PDF too large to read whole, which stays unchecked.
    assessment: ContentAssessment | None = None
    links: PageLinks | None = None
    error: FetchError | None = None


class Examiner:
    """Fetch one URL and classify what came back."""

    def __init__(
        self,
        fetcher: SafeFetcher,
        registry: PublisherRegistry,
        settings: LiteratureSettings,
    ) -> None:
        self.fetcher = fetcher
        self.registry = registry
        self.settings = settings
        self._max_chars = settings.max_html_bytes

    async def examine(self, url: str, ctx: TierContext) -> Examination:
        ctx.evidence.seen.add(url)
        ctx.evidence.candidates.pop(url, None)
        try:
            result = await self.fetcher.fetch(
                url,
                deadline=ctx.deadline,
                policy=self.fetcher.page_policy,
                deadline_is_callers=ctx.deadline_is_callers(self.settings),
            )
        except FetchError as error:
            ctx.evidence.transient |= error.transient
            if isinstance(error, FetchRefused):
                ctx.refused = True
                method = f"refused_{error.reason.value}"
                ctx.evidence.negatives.append(Negative(ctx.tier, method, certain=False))
            return Examination(ExamKind.FAILED, url, error=error)
        ctx.evidence.seen.add(result.url)
        ctx.evidence.candidates.pop(result.url, None)
        ctx.evidence.transient |= transient_status(result.status)
        # Walls are often served as 401/403 pages: read them, they are evidence too.
        readable = result.ok or result.status in (401, 402, 403)
        if result.ok and result.is_pdf:
            check = await self._check_pdf(result, ctx)
            return Examination(ExamKind.PDF, result.url, result.status, check)
        if readable and result.is_html:
            html = result.html(self._max_chars)
            assessment, links = await asyncio.to_thread(
                _judge, html, result.url, ctx.paper, self.registry
            )
            return Examination(ExamKind.HTML, result.url, result.status, assessment, links)
        return Examination(ExamKind.OTHER, result.url, result.status)

    async def _check_pdf(self, probe: FetchResult, ctx: TierContext) -> ContentAssessment | None:
        """The PDF's own assessment, as /verify makes it: a scan without a text layer or a
        one-page PDF must not pass as a sure full text just because it starts with %PDF-.

        The probe holds only the first `probe_bytes`; a PDF longer than that is fetched whole
        (up to `max_pdf_bytes`, its page index is at the end). None when it cannot be read
        whole (too large, or the second request failed): the caller treats it as unchecked."""
        body = probe.body
        if probe.truncated:
            try:
                whole = await self.fetcher.fetch(
                    probe.url,
                    deadline=ctx.deadline,
                    policy=self.fetcher.sample_policy,
                    deadline_is_callers=ctx.deadline_is_callers(self.settings),
                )
            except FetchError as error:
                ctx.evidence.transient |= error.transient
                return None
            if not (whole.ok and whole.is_pdf) or whole.truncated:
                return None
            body = whole.body
        paper = ctx.paper
        return await asyncio.to_thread(assess_pdf_bytes, body, title=paper.title, doi=paper.doi)


def pdf_confidence(exam: Examination, claimed: Confidence = Confidence.HIGH) -> Confidence:
    """What a fetched PDF is worth: `claimed` (what the link's source vouches for) only when
    the PDF's own check is a certain full text; an unsure full text, or a PDF that could not
    be read whole, at most medium; a scan without text, an unreadable file or one that reads
    as something else (an abstract, a one-page flyer) low, so the waterfall goes on."""
    check = exam.assessment
    if check is None:
        return _lower(claimed, Confidence.MEDIUM)
    if check.is_full_text and check.certain:
        return claimed
    if check.is_full_text:
        return _lower(claimed, Confidence.MEDIUM)
    return _lower(claimed, Confidence.LOW)


def pdf_finding(
    exam: Examination, tier: TierNumber, method: str, claimed: Confidence = Confidence.HIGH
) -> Finding:
    """A fetched PDF as a finding, at the confidence its own check allows."""
    return Finding(exam.url, DocumentKind.PDF, pdf_confidence(exam, claimed), tier, method)


def _lower(a: Confidence, b: Confidence) -> Confidence:
    return a if a.rank <= b.rank else b


def _judge(
    html: str, url: str, paper: Paper, registry: PublisherRegistry
) -> tuple[ContentAssessment, PageLinks]:
    """Both parses of a page, in one worker-thread hop."""
    assessment = assess_html(html, base_url=url, title=paper.title, doi=paper.doi)
    return assessment, read_links(html, url, paper.doi, registry)


def page_finding(
    exam: Examination, ctx: TierContext, tier: TierNumber, method: str, *, links: bool = True
) -> Finding | None:
    """A full-text page is a finding (high when the heuristics are sure, or a known publisher's
    article container confirms them); anything else is negative evidence. Either way the page's
    links become candidates for tier 6 (unless `links` is False: the caller files them)."""
    assessment, page = exam.assessment, exam.links
    if assessment is None or page is None:
        return None
    if links:
        remember_links(ctx.evidence, page, depth=0)
        for pdf in assessment.pdf_links:
            ctx.evidence.add_candidate(pdf, "pdf_link")
    if assessment.is_full_text and exam.status is not None and 200 <= exam.status < 300:
        confirmed = assessment.certain or (
            page.strategy is not GENERIC and page.content_chars >= CONTENT_CONFIRM_CHARS
        )
        confidence = Confidence.HIGH if confirmed else Confidence.MEDIUM
        return Finding(exam.url, DocumentKind.HTML, confidence, tier, f"{method}_html")
    ctx.evidence.negatives.append(
        Negative(tier, f"{method}_{assessment.content_type.value}", assessment.certain)
    )
    return None


def remember_links(evidence: Evidence, links: PageLinks, *, depth: int) -> None:
    for url in links.citation_pdf:
        evidence.add_candidate(url, "citation_pdf_url", kind=DocumentKind.PDF, depth=depth)
    for url in links.publisher_pdf:
        evidence.add_candidate(url, "publisher_pdf", kind=DocumentKind.PDF, depth=depth)
    for url in links.repository:
        evidence.add_candidate(url, "repository_link", depth=depth)
    for url in links.other_pdf:
        evidence.add_candidate(url, "pdf_link", depth=depth)


async def settle_page(
    examiner: Examiner, exam: Examination, ctx: TierContext, tier: TierNumber, method: str
) -> Finding | None:
    """A landing page's answer: the page itself if it is the full text, else (or if unsure) the
    publisher's own PDF link, checked with a bounded request."""
    finding = page_finding(exam, ctx, tier, method)
    if finding is not None and finding.confidence is Confidence.HIGH:
        return finding
    if exam.links is None:
        return finding
    for pdf_url in exam.links.publisher_pdf[:PDF_LINKS_PER_PAGE]:
        if pdf_url in ctx.evidence.seen:
            continue
        pdf = await examiner.examine(pdf_url, ctx)
        if pdf.kind is ExamKind.PDF:
            finding = better(finding, pdf_finding(pdf, tier, f"{method}_pdf"))
            if finding is not None and finding.confidence is Confidence.HIGH:
                return finding
    return finding


def better(current: Finding | None, new: Finding | None) -> Finding | None:
    if new is None:
        return current
    if current is None or new.confidence.rank > current.confidence.rank:
        return new
    return current
