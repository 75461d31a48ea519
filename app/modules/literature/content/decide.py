"""From features to a verdict: what the page is, how sure the heuristics are, what to do next.

Full text is decided by points from four independent kinds of evidence, so no single signal
(a long blog post, a reference list shown on a landing page, a sidebar saying "Subscribe") can
carry the verdict alone:

- prose: how much paragraph text there is outside reference lists;
- structure: body sections (introduction, methods, results, discussion, conclusion) that are
  followed by real text, not just named in an outline;
- apparatus: a reference list or in-text citations;
- identity: the page describes a scholarly item (citation_* meta, JSON-LD, an abstract, a DOI).

Agreement of all four gives a certain verdict; a score on the boundary is reported as uncertain,
which is when the caller asks an AI model. Pages that are not full text are then sorted into
walls, landing pages, metadata records and non-articles by their own markers.

What the confidence means: how strongly the evidence backs the verdict (is / is not full text),
on a scale where 0.85 and above is `certain`. It is a monotone function of the points: a full
text is 0.7 at the bar (6 points), 0.9 at 7, 0.95 from 8 (a matching title adds 0.03; a wrong
title or DOI caps it at 0.55); a "not full text" has its kind's confidence (0.7-0.95), capped
at 0.85 at 4 points, 0.6 at 5 and lower for the boundary cases below, so the nearer a page came
to the bar the less sure the "no" is. It is not a measured probability; `make bench-fulltext`
reports how often verdicts at each level were right on the development pages.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.modules.literature.content.features import Features
from app.modules.literature.content.model import ContentType

FULL_POINTS = 6  # points at or above which a page is full text
CERTAIN_FULL_POINTS = 7  # ... and at or above which no AI is needed
CERTAIN_CONFIDENCE = 0.85

_MIN_REFERENCES = 5
_MANY_PARAGRAPHS = 12
_SOME_PARAGRAPHS = 6
_CHALLENGE_MAX_PROSE = 3_000
_COOKIE_WALL_MAX_PROSE = 500
_LOGIN_MAX_PROSE = 1_500
_NEWS_PROSE = 1_500
# A preview shows the first paragraphs and the references with an access offer in the text
# itself; a page this strong, or with this much text under its body sections, is a full text
# whatever its sidebar-turned-inline box says (free articles keep the purchase box in markup).
_PREVIEW_MAX_POINTS = 8
_PREVIEW_MAX_BODY = 12_000
# An abstract is one to four paragraphs; a page about a paper with this many long ones holds more
# than its abstract (a letter, a correction, a commentary: short items in full).
_ABSTRACT_MAX_BLOCKS = 5
# Search results, citing works and tables of contents: this many per-item links or PDF links.
_RESULT_LIST_ITEMS = 8
# A bibliography of this many entries under long prose is a humanities article's works cited,
# not an essay's handful of notes.
_WORKS_CITED = 15
_WORKS_CITED_PROSE = 10_000
_WORKS_CITED_NUMERIC = 5


@dataclass(slots=True)
class Verdict:
    """The decision and the plain-words reasons behind it."""

    content_type: ContentType
    confidence: float
    reasons: list[str] = field(default_factory=list)
    points: int = 0

    @property
    def certain(self) -> bool:
        return self.confidence >= CERTAIN_CONFIDENCE


def full_text_points(f: Features) -> tuple[int, list[str]]:
    """Points for full text (0-10) and the evidence that earned them."""
    reasons: list[str] = []
    prose = _step(f.prose_chars, ((15_000, 3), (8_000, 2), (4_000, 1)))
    if prose:
        reasons.append(f"{f.prose_chars} characters of prose")
    # Sections named like a paper's (introduction, methods...) are the clearest structure; many
    # full texts (essays, reviews, humanities articles) use headings of their own, so a body of
    # many long paragraphs also counts, for less.
    sections = min(len(f.substantive_sections), 3)
    paragraphs = _step(f.long_blocks, ((_MANY_PARAGRAPHS, 2), (_SOME_PARAGRAPHS, 1)))
    structure = max(sections, paragraphs)
    if sections:
        reasons.append("body sections with text: " + ", ".join(f.substantive_sections))
    elif paragraphs:
        reasons.append(f"{f.long_blocks} long paragraphs")
    # A reference list alone can be shown on a landing page; citations inside the prose cannot,
    # so both together are worth more than either.
    many_refs, many_cites = f.reference_count >= 15, f.citation_markers >= 20
    apparatus = 0
    if many_refs and many_cites:
        apparatus = 3
    elif many_refs or many_cites:
        apparatus = 2
    elif f.reference_count >= 5 or f.citation_markers >= 5:
        apparatus = 1
    if apparatus:
        reasons.append(f"{f.reference_count} references, {f.citation_markers} in-text citations")
    identity = int(f.about_a_paper)
    if identity:
        reasons.append("scholarly metadata")
    return prose + structure + apparatus + identity, reasons


def _step(value: int, steps: tuple[tuple[int, int], ...]) -> int:
    for threshold, points in steps:
        if value >= threshold:
            return points
    return 0


def decide(f: Features) -> Verdict:
    """The verdict for one page or document."""
    points, evidence = full_text_points(f)
    if _is_result_list(f):
        # The snippets of twenty results add up to the prose, citations and "Introduction" of
        # a paper; the page is still a list.
        reasons = [
            f"a list of results ({f.item_links} per-item links, {len(f.pdf_links)} PDF links) "
            "with no metadata or reference list of its own"
        ]
        confidence = 0.9 if points < FULL_POINTS - 1 else 0.8
        return Verdict(ContentType.NOT_ARTICLE, confidence, reasons, points)
    unlike_a_paper = _unlike_a_paper(f)
    preview = (
        f.inline_walls.paywall > 0
        and points <= _PREVIEW_MAX_POINTS
        and f.body_section_chars < _PREVIEW_MAX_BODY
    )
    if points >= FULL_POINTS and not unlike_a_paper and not preview:
        return _full_text(f, points, evidence)
    if points >= FULL_POINTS and unlike_a_paper and _works_cited(f):
        verdict = _full_text(f, points, evidence)
        verdict.confidence = min(verdict.confidence, 0.7)
        verdict.reasons.append("no scholarly metadata, but long prose and a works-cited list")
        return verdict
    if points >= FULL_POINTS and preview and not unlike_a_paper:
        reasons = [
            "a preview: an access or purchase offer inside the article's text ("
            + "; ".join(evidence)
            + ")"
        ]
        return Verdict(ContentType.PAYWALL, 0.75, reasons, points)
    verdict = _not_full_text(f)
    verdict.points = points
    if unlike_a_paper:
        if points >= FULL_POINTS - 1 and f.reference_count >= _MIN_REFERENCES:
            # Long text with a reference list but no sign of being a paper: an encyclopedia
            # entry, a report or an essay, or a paper on a page with no metadata at all.
            verdict.confidence = min(verdict.confidence, 0.55)
            verdict.reasons.append(
                "but a long referenced text (" + "; ".join(evidence) + "), perhaps a paper "
                "without metadata or an encyclopedia entry"
            )
        elif points >= FULL_POINTS - 2 and f.reference_count >= _MIN_REFERENCES:
            # A short commentary whose site declares nothing we read: prose and a reference
            # list under the bar. Not sure enough to skip the AI.
            verdict.confidence = min(verdict.confidence, 0.75)
            verdict.reasons.append(f"but a referenced text near the bar ({'; '.join(evidence)})")
        return verdict
    # However clear the page's kind, the closer it came to the full-text bar the less sure the
    # "not full text" half of the verdict is.
    if points == FULL_POINTS - 1:
        verdict.confidence = min(verdict.confidence, 0.6)
        verdict.reasons.append(f"but near the full-text bar ({'; '.join(evidence)})")
    elif points == FULL_POINTS - 2:
        verdict.confidence = min(verdict.confidence, CERTAIN_CONFIDENCE)
    return verdict


def _unlike_a_paper(f: Features) -> bool:
    """No scholarly metadata, and either no paper sections or no reference list.

    Long prose with citations but no sections is an encyclopedia entry or a long blog post;
    long prose with an "Introduction" but no references is a manual or a book. A paper shows
    at least its metadata, or both its sections and its references.
    """
    if f.about_a_paper:
        return False
    return not f.substantive_sections or f.reference_count < _MIN_REFERENCES


def _works_cited(f: Features) -> bool:
    """Long prose closed by a real bibliography, cited by author and year rather than by
    number (encyclopedia entries number theirs), on a page that is not news or a blog."""
    return (
        f.reference_count >= _WORKS_CITED
        and f.prose_chars >= _WORKS_CITED_PROSE
        and f.long_blocks >= _MANY_PARAGRAPHS
        and f.numeric_citations < _WORKS_CITED_NUMERIC
        and not f.news_ld
        and f.walls.news == 0
    )


def _full_text(f: Features, points: int, evidence: list[str]) -> Verdict:
    confidence = 0.95 if points >= 8 else 0.9 if points >= CERTAIN_FULL_POINTS else 0.7
    reasons = ["full text: " + "; ".join(evidence)]
    if f.title_match is False:
        confidence = min(confidence, 0.55)
        reasons.append("but the expected title is not on the page")
    elif f.title_match:
        confidence = min(0.98, confidence + 0.03)
    if f.doi_match is False and f.doi_declared:
        confidence = min(confidence, 0.55)
        reasons.append("but the page's DOI is not the expected one")
    if points < CERTAIN_FULL_POINTS and (f.walls.paywall or f.walls.challenge or f.walls.login):
        reasons.append("with access-wall phrases on the page")
    return Verdict(ContentType.FULL_ARTICLE, confidence, reasons, points)


def _not_full_text(f: Features) -> Verdict:
    """Sort a page that is not a full text by the strongest marker it carries."""
    challenge = _challenge(f)
    if challenge is not None:
        return challenge
    if _is_listing(f):
        return Verdict(
            ContentType.NOT_ARTICLE,
            0.9,
            [f"a list of items ({f.item_links} per-item Abstract/PDF links)"],
        )
    if f.declared_news:
        reasons = ["the page's metadata declares news, an editorial or a blog post, not a paper"]
        return Verdict(ContentType.NOT_ARTICLE, 0.9, reasons)
    if f.news_ld and not f.substantive_sections and f.reference_count < _MIN_REFERENCES:
        # News about a paper carries the paper's DOI and citation tags; it declares itself.
        reasons = ["a news or blog page (schema.org type) about a paper, not the paper"]
        return Verdict(ContentType.NOT_ARTICLE, 0.85, reasons)
    if f.about_a_paper:
        return _about_a_paper(f)
    login = _login(f)
    if login is not None:
        return login
    return _not_article(f)


def _challenge(f: Features) -> Verdict | None:
    """Bot walls (Cloudflare and similar) and cookie walls: a challenge instead of content.

    Challenge phrases and captcha widgets can come from a form on a real page (a comment
    form's captcha), so on a page about a paper only whole-page challenge elements count;
    cookie-consent words are on almost every page and only count on a page with next to no
    text at all.
    """
    if f.prose_chars >= _CHALLENGE_MAX_PROSE:
        return None
    # A captcha widget alone is a comment or newsletter form on a page with a story around it.
    captcha = min(f.captcha_widgets, 1) if f.prose_chars < _LOGIN_MAX_PROSE else 0
    weak = 0 if f.about_a_paper else f.walls.challenge + captcha
    cookie_wall = f.walls.cookie > 0 and f.prose_chars < _COOKIE_WALL_MAX_PROSE
    if not (f.challenge_elements or weak or cookie_wall):
        return None
    strong = f.challenge_elements > 0 or weak >= 2
    reasons = [
        f"a bot or cookie challenge ({f.challenge_elements} challenge elements, "
        f"{f.captcha_widgets} captcha widgets, {f.walls.challenge} challenge phrases, "
        f"{f.walls.cookie} cookie-wall phrases) and little text"
    ]
    return Verdict(ContentType.LOGIN, 0.95 if strong else 0.7, reasons)


def _is_result_list(f: Features) -> bool:
    """Many items, each with its own link or PDF, and nothing that makes the page one paper."""
    many_items = f.item_links >= _RESULT_LIST_ITEMS or len(f.pdf_links) >= _RESULT_LIST_ITEMS
    return (
        many_items
        and f.scholarly_meta < 2
        and not f.scholarly_ld
        and not f.doi_declared
        and f.reference_count < _MIN_REFERENCES
    )


def _is_listing(f: Features) -> bool:
    """The milder list test, for a page already below the full-text bar: a few per-item links
    are enough when there is no abstract either (`_is_result_list` vetoes the points)."""
    return f.item_links >= 4 and f.scholarly_meta < 2 and f.abstract_chars < 150


def _about_a_paper(f: Features) -> Verdict:
    """A page about one paper that does not hold its text: a wall, a landing page or a record."""
    has_abstract = f.abstract_chars >= 150 or f.long_blocks >= 1
    if f.walls.paywall:
        confidence = 0.9 if f.walls.paywall >= 2 else 0.75
        reasons = [f"about a paper, with {f.walls.paywall} purchase/subscription phrases"]
        return Verdict(ContentType.PAYWALL, confidence, reasons)
    if has_abstract:
        confidence = 0.75 if f.substantive_sections else 0.9
        reasons = [f"about a paper, with an abstract but only {f.prose_chars} characters of prose"]
        if f.reference_count:
            reasons.append(f"and a list of {f.reference_count} references")
        if f.long_blocks >= _ABSTRACT_MAX_BLOCKS:
            confidence = min(confidence, 0.7)
            reasons.append(
                f"but {f.long_blocks} long paragraphs, more than an abstract: perhaps a short "
                "item's whole text"
            )
        return Verdict(ContentType.ABSTRACT_ONLY, confidence, reasons)
    login = _login(f)
    if login is not None:
        return login
    reasons = ["about a paper, but neither its text nor an abstract is on the page"]
    return Verdict(ContentType.METADATA, 0.85, reasons)


def _login(f: Features) -> Verdict | None:
    if f.prose_chars >= _LOGIN_MAX_PROSE or not (f.password_inputs or f.walls.login):
        return None
    strong = f.password_inputs > 0 and f.walls.login > 0
    reasons = [
        f"a login form ({f.password_inputs} password fields, {f.walls.login} sign-in phrases)"
    ]
    return Verdict(ContentType.LOGIN, 0.9 if strong else 0.75, reasons)


def _not_article(f: Features) -> Verdict:
    if f.prose_chars < _NEWS_PROSE:
        reasons = [f"little prose ({f.prose_chars} characters) and no scholarly metadata"]
        return Verdict(ContentType.NOT_ARTICLE, 0.9, reasons)
    missing = ["no scholarly metadata"]
    if not f.substantive_sections:
        missing.append("no paper sections")
    if f.reference_count < _MIN_REFERENCES:
        missing.append("no reference list")
    if f.news_ld or f.walls.news > 0 or f.og_article:
        reasons = ["a news or blog page (" + ", ".join(missing) + ")"]
        return Verdict(ContentType.NOT_ARTICLE, 0.9, reasons)
    reasons = [f"{f.prose_chars} characters of text but " + ", ".join(missing)]
    return Verdict(ContentType.NOT_ARTICLE, 0.85, reasons)
