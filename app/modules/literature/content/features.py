"""The features a verdict is computed from, shared by the HTML and the plain-text paths."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.modules.literature.content.dom import Page
from app.modules.literature.content.markers import (
    WallHits,
    citation_markers,
    find_dois,
    numeric_citations,
    title_matches,
    wall_hits,
)
from app.modules.literature.content.model import Signal
from app.modules.literature.content.sections import (
    longest_citation_run,
    looks_like_citation,
    scan_sections,
)
from app.modules.literature.content.shapes import item_links, record_fields

# A block this long is prose (a paragraph), not a label, a menu entry or a table cell.
PROSE_BLOCK_CHARS = 80
LONG_BLOCK_CHARS = 400
# A run of this many citation-shaped blocks is a reference list even without a heading.
_UNHEADED_LIST_RUN = 5
# A catalogue record shows this many bibliographic field labels, and little prose: manuals and
# books that document fields ("Authors", "Description", "License") are long.
_RECORD_FIELDS = 4
_RECORD_MAX_PROSE = 15_000
# A DOI in the first characters of a document (a PDF's first page header) is its own DOI.
_DECLARED_DOI_CHARS = 3_000
# A block where this share of the characters are code punctuation is script, not prose
# (obfuscated challenge scripts shown as text); prose, citations included, stays near 2 %.
_CODE_SYMBOLS = frozenset("{}[]();=$_\\'\"<>|!+*&^%")
_CODE_SHARE = 0.08

# Meta tags through which publishers describe a scholarly item (Highwire/Google Scholar, Dublin
# Core, PRISM, EPrints, bepress). Their presence says "this page is about a paper", not "it is
# the paper": landing pages carry them too.
_SCHOLARLY_META = (
    "citation_title",
    "citation_doi",
    "citation_journal_title",
    "citation_author",
    "citation_pdf_url",
    "citation_abstract_html_url",
    "citation_fulltext_html_url",
    "citation_conference_title",
    "citation_dissertation_institution",
    "citation_technical_report_institution",
    "prism.doi",
    "eprints.title",
    "bepress_citation_pdf_url",
    "bepress_citation_journal_title",
)
# Tags any content site emits for any page (a title, an author, an address): on their own they
# say a page has a title and an author, which essays, op-eds and blog posts have too. A DOI in
# them still counts (`doi_declared`), as does an abstract in dc.description.
_WEAK_META = (
    "dc.identifier",
    "dc.title",
    "dc.creator",
    "bepress_citation_title",
    "bepress_citation_author",
)
_ABSTRACT_META = ("citation_abstract", "dc.description", "dcterms.abstract")
# publication_doi: Atypon's sites (science.org) declare the DOI there and in no citation_ tag.
_DOI_META = ("citation_doi", "dc.identifier", "prism.doi", "dc.identifier.doi", "publication_doi")
# Where publishers declare what kind of item a page is (Highwire, Dublin Core, PRISM).
_TYPE_META = ("citation_article_type", "dc.type", "prism.section", "prism.genre")
# Declared kinds that are journalism or opinion, not papers, even on a journal's own site.
_NEWS_TYPES = frozenset(
    {
        "news",
        "news feature",
        "news explainer",
        "news in focus",
        "editorial",
        "blog",
        "blog post",
        "podcast",
        "obituary",
        "career column",
        "career feature",
        "careers",
        "opinion",
        "world view",
        "comment",
        "book review",
        "books and arts",
    }
)
_SCHOLARLY_LD = frozenset(
    {"ScholarlyArticle", "MedicalScholarlyArticle", "Thesis", "Report", "Chapter", "Dataset"}
)
_NEWS_LD = frozenset(
    {
        "NewsArticle",
        "ReportageNewsArticle",
        "OpinionNewsArticle",
        "BlogPosting",
        "LiveBlogPosting",
        "Blog",
        "DiscussionForumPosting",
        "QAPage",
        "SearchResultsPage",
        "Product",
    }
)


@dataclass(frozen=True, slots=True)
class Features:
    """Every measured feature of one page or document (see `as_signals` for the names)."""

    text_length: int
    prose_chars: int
    long_blocks: int
    sections: tuple[str, ...]
    substantive_sections: tuple[str, ...]
    body_section_chars: int
    abstract_chars: int
    reference_entries: int
    meta_references: int
    citation_markers: int
    scholarly_meta: int
    weak_meta: int  # Dublin Core / bepress title and author tags: not evidence on their own
    scholarly_ld: bool
    news_ld: bool
    og_article: bool
    doi_declared: bool  # in meta tags, or printed in a document's opening text
    distinct_dois: int
    record_fields: int
    item_links: int
    title_match: bool | None
    doi_match: bool | None
    walls: WallHits
    inline_walls: WallHits  # wall phrases inside the main text itself (a preview's access box)
    numeric_citations: int  # "[12]"-style markers (encyclopedias, sciences), of citation_markers
    password_inputs: int
    challenge_elements: int
    captcha_widgets: int
    pdf_links: tuple[str, ...]
    fulltext_url_meta: bool
    declared_news: bool  # the page's own metadata calls it news, an editorial, a blog post...
    truncated: bool  # the input was cut to the size or nesting limit before reading

    @property
    def reference_count(self) -> int:
        return max(self.reference_entries, self.meta_references)

    @property
    def about_a_paper(self) -> bool:
        """Whether the page describes one scholarly item (an article, thesis, report...).

        True for full texts and landing pages alike; false for news, blogs, lists and walls.
        A DOI merely written in the text does not count: news stories cite papers too.
        """
        return (
            self.scholarly_meta >= 2
            or self.scholarly_ld
            or self.doi_declared
            or self.abstract_chars >= 150
            or (self.record_fields >= _RECORD_FIELDS and self.prose_chars < _RECORD_MAX_PROSE)
        )

    def as_signals(self) -> dict[str, Signal]:
        """The features as flat, JSON-friendly values for logs and the benchmark."""
        return {
            "text_length": self.text_length,
            "prose_chars": self.prose_chars,
            "long_blocks": self.long_blocks,
            "sections": ",".join(self.sections),
            "substantive_sections": ",".join(self.substantive_sections),
            "body_section_chars": self.body_section_chars,
            "abstract_chars": self.abstract_chars,
            "reference_entries": self.reference_entries,
            "meta_references": self.meta_references,
            "citation_markers": self.citation_markers,
            "scholarly_meta": self.scholarly_meta,
            "weak_meta": self.weak_meta,
            "scholarly_ld": self.scholarly_ld,
            "news_ld": self.news_ld,
            "og_article": self.og_article,
            "doi_declared": self.doi_declared,
            "distinct_dois": self.distinct_dois,
            "record_fields": self.record_fields,
            "item_links": self.item_links,
            "about_a_paper": self.about_a_paper,
            "title_match": "unknown" if self.title_match is None else self.title_match,
            "doi_match": "unknown" if self.doi_match is None else self.doi_match,
            "challenge_phrases": self.walls.challenge,
            "cookie_phrases": self.walls.cookie,
            "paywall_phrases": self.walls.paywall,
            "login_phrases": self.walls.login,
            "news_phrases": self.walls.news,
            "inline_paywall_phrases": self.inline_walls.paywall,
            "numeric_citations": self.numeric_citations,
            "password_inputs": self.password_inputs,
            "challenge_elements": self.challenge_elements,
            "captcha_widgets": self.captcha_widgets,
            "pdf_links": len(self.pdf_links),
            "fulltext_url_meta": self.fulltext_url_meta,
            "declared_news": self.declared_news,
            "input_truncated": self.truncated,
        }


def measure(
    lines: Sequence[str],
    visible_text: str,
    page: Page | None,
    *,
    title: str | None,
    doi: str | None,
    prose_line_chars: int = PROSE_BLOCK_CHARS,
    truncated: bool = False,
) -> Features:
    """Compute the features from main-text blocks, the whole visible text and (for HTML) the DOM.

    `prose_line_chars` is lower for plain text, whose lines are often wrapped at a fixed width
    (PDF extraction) rather than being whole paragraphs as HTML blocks are.
    """
    scan = scan_sections(lines)
    citations = [looks_like_citation(line) for line in lines]
    references = scan.reference_blocks
    prose = [
        line
        for index, (line, citation) in enumerate(zip(lines, citations, strict=True))
        if len(line) >= prose_line_chars
        and not citation
        and index not in references
        and not _looks_like_code(line)
    ]
    meta = page.meta if page is not None else {}
    all_lines = page.all_lines if page is not None else lines
    ld_types = page.json_ld_types if page is not None else frozenset()
    declared = " ".join(v for key in _DOI_META for v in meta.get(key, []))
    if page is None:
        declared = visible_text[:_DECLARED_DOI_CHARS]
    meta_dois = find_dois(declared)
    dois = meta_dois + find_dois(visible_text)
    abstract_meta = max((len(v) for key in _ABSTRACT_META for v in meta.get(key, [])), default=0)
    prose_text = "\n".join(prose)
    return Features(
        text_length=sum(len(line) for line in lines),
        prose_chars=sum(len(line) for line in prose),
        long_blocks=sum(1 for line in prose if len(line) >= LONG_BLOCK_CHARS),
        sections=scan.found,
        substantive_sections=scan.substantive,
        body_section_chars=scan.body_chars,
        abstract_chars=max(scan.abstract_chars, abstract_meta),
        reference_entries=max(scan.reference_entries, _unheaded_references(lines, citations)),
        meta_references=len(meta.get("citation_reference", [])),
        citation_markers=citation_markers(prose_text),
        numeric_citations=numeric_citations(prose_text),
        scholarly_meta=sum(1 for key in _SCHOLARLY_META if key in meta),
        weak_meta=sum(1 for key in _WEAK_META if key in meta),
        scholarly_ld=bool(ld_types & _SCHOLARLY_LD),
        news_ld=bool(ld_types & _NEWS_LD),
        og_article=any(v.casefold() == "article" for v in meta.get("og:type", [])),
        doi_declared=bool(meta_dois),
        distinct_dois=len(set(dois)),
        record_fields=record_fields(all_lines),
        item_links=item_links(all_lines),
        title_match=_title_match(title, page, meta, visible_text),
        doi_match=_doi_match(doi, dois, visible_text),
        walls=wall_hits(page.wall_text if page is not None else visible_text),
        inline_walls=wall_hits("\n".join(lines)),
        password_inputs=page.password_inputs if page is not None else 0,
        challenge_elements=page.challenge_elements if page is not None else 0,
        captcha_widgets=page.captcha_widgets if page is not None else 0,
        pdf_links=page.pdf_links if page is not None else (),
        fulltext_url_meta="citation_fulltext_html_url" in meta,
        truncated=page.truncated if page is not None else truncated,
        declared_news=any(
            " ".join(value.casefold().replace("&", "and").split()) in _NEWS_TYPES
            for key in _TYPE_META
            for value in meta.get(key, [])
        ),
    )


def _looks_like_code(line: str) -> bool:
    """Script shown as text: code punctuation where prose has letters and spaces."""
    symbols = sum(1 for ch in line if ch in _CODE_SYMBOLS)
    return symbols >= _CODE_SHARE * len(line)


def _unheaded_references(lines: Sequence[str], citations: Sequence[bool]) -> int:
    """Citation-shaped blocks, counted only when some of them form a list."""
    if longest_citation_run(lines, citations) < _UNHEADED_LIST_RUN:
        return 0
    return sum(citations)


def _title_match(
    title: str | None, page: Page | None, meta: dict[str, list[str]], text: str
) -> bool | None:
    if not title:
        return None
    candidates = [
        *meta.get("citation_title", []),
        *meta.get("dc.title", []),
        *meta.get("og:title", []),
    ]
    if page is not None and page.title:
        candidates.append(page.title)
    return title_matches(title, candidates, text)


def _doi_match(doi: str | None, dois: list[str], text: str) -> bool | None:
    if not doi:
        return None
    wanted = doi.strip().casefold()
    for prefix in (
        "https://doi.org/",
        "http://doi.org/",
        "https://dx.doi.org/",
        "http://dx.doi.org/",
        "doi:",
    ):
        wanted = wanted.removeprefix(prefix)
    wanted = wanted.strip()
    return wanted in dois or wanted in text[:400_000].casefold()
