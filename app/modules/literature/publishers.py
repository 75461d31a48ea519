"""Per-publisher strategies for landing pages: where the PDF link is, where the article body is,
how a landing URL becomes a PDF URL, and how fast we may ask.

A strategy is found by the landing page's host first (bioRxiv and medRxiv share the DOI prefix
10.1101), then by DOI prefix, then by URL shape (OJS journals live on thousands of hosts but all
use `/index.php/<journal>/article/view/<id>`), else the generic strategy applies.

Hosts are matched on their *brand*: the registrable name without its public suffix, so
`journals.plos.org` and the sandbox's `journals.plos.test` are the same publisher. A brand can
only pick selectors and a rate limit, never relax the outbound guard.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from selectolax.lexbor import LexborHTMLParser

_TWO_LEVEL_SUFFIXES = frozenset(
    {"co.uk", "ac.uk", "org.uk", "com.au", "edu.au", "co.jp", "ac.jp", "com.br", "com.cn"}
)
# Bounds on what one page may make us look at.
_MAX_LINKS_SCANNED = 3000
_MAX_LINKS_KEPT = 12


def brand(host: str) -> str:
    """`journals.plos.org` -> `plos`; `www.bbc.co.uk` -> `bbc`."""
    labels = host.lower().rstrip(".").split(".")
    if len(labels) >= 3 and ".".join(labels[-2:]) in _TWO_LEVEL_SUFFIXES:
        return labels[-3]
    return labels[-2] if len(labels) >= 2 else labels[0]


@dataclass(frozen=True, slots=True)
class PdfRewrite:
    """A landing (or viewer) URL path+query pattern and the PDF URL it implies."""

    pattern: re.Pattern[str]
    replacement: str

    def apply(self, url: str) -> str | None:
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        match = self.pattern.fullmatch(target)
        if match is None:
            return None
        return f"{parts.scheme}://{parts.netloc}{match.expand(self.replacement)}"


def _rw(pattern: str, replacement: str) -> PdfRewrite:
    return PdfRewrite(re.compile(pattern), replacement)


@dataclass(frozen=True, slots=True)
class PublisherStrategy:
    key: str  # also the metric label, so a closed set
    name: str
    doi_prefixes: tuple[str, ...] = ()
    brands: tuple[str, ...] = ()
    path_patterns: tuple[re.Pattern[str], ...] = ()
    generators: tuple[str, ...] = ()  # <meta name=generator> prefixes (OJS)
    pdf_selectors: tuple[str, ...] = ()
    content_selectors: tuple[str, ...] = ()
    pdf_rewrites: tuple[PdfRewrite, ...] = ()
    rpm: int | None = None  # None: the default publisher rate

    def pdf_from_url(self, url: str) -> str | None:
        for rewrite in self.pdf_rewrites:
            pdf = rewrite.apply(url)
            if pdf is not None and pdf != url:
                return pdf
        return None


GENERIC = PublisherStrategy(
    key="generic",
    name="Unknown publisher",
    content_selectors=("article", "main", "[role=main]"),
)

STRATEGIES: tuple[PublisherStrategy, ...] = (
    PublisherStrategy(
        key="elsevier",
        name="Elsevier (ScienceDirect, Cell Press)",
        doi_prefixes=("10.1016",),
        brands=("sciencedirect", "elsevier", "cell", "thelancet"),
        pdf_selectors=("a.pdf-download-btn-link", "li.ViewPDF a", 'a[aria-label*="View PDF"]'),
        content_selectors=("div#body", "section#body", "div.Body"),
        pdf_rewrites=(_rw(r"/science/article/pii/(\w+)", r"/science/article/pii/\1/pdfft"),),
        rpm=20,  # ScienceDirect blocks automated access early
    ),
    PublisherStrategy(
        key="springer",
        name="Springer, BioMed Central",
        doi_prefixes=("10.1007", "10.1186"),
        brands=("springer", "biomedcentral", "springeropen"),
        pdf_selectors=("a.c-pdf-download__link", "a[data-article-pdf]"),
        content_selectors=("div.c-article-body", "div#body"),
        pdf_rewrites=(_rw(r"/article/(10\.\d+/.+)", r"/content/pdf/\1.pdf"),),
    ),
    PublisherStrategy(
        key="nature",
        name="Nature Portfolio",
        doi_prefixes=("10.1038",),
        brands=("nature",),
        pdf_selectors=("a.c-pdf-download__link", "a[data-article-pdf]"),
        content_selectors=("div.c-article-body", "div.article__body"),
        pdf_rewrites=(_rw(r"/articles/([^/.]+)", r"/articles/\1.pdf"),),
    ),
    PublisherStrategy(
        key="wiley",
        name="Wiley Online Library",
        doi_prefixes=("10.1002", "10.1111"),
        brands=("wiley",),
        pdf_selectors=("a.pdf-download", 'a[title="ePDF"]'),
        content_selectors=("section.article-section__full", "div.article__body"),
        pdf_rewrites=(_rw(r"/doi/(?:abs|full|epdf)/(.+)", r"/doi/pdfdirect/\1"),),
        rpm=30,
    ),
    PublisherStrategy(
        key="tandf",
        name="Taylor & Francis Online",
        doi_prefixes=("10.1080",),
        brands=("tandfonline",),
        pdf_selectors=("a.show-pdf", 'a[href*="/doi/pdf/"]'),
        content_selectors=("div.hlFld-Fulltext",),
        pdf_rewrites=(_rw(r"/doi/(?:abs|full)/(.+)", r"/doi/pdf/\1"),),
        rpm=30,
    ),
    PublisherStrategy(
        key="plos",
        name="PLOS",
        doi_prefixes=("10.1371",),
        brands=("plos",),
        pdf_selectors=("a#downloadPdf", 'a[href*="type=printable"]'),
        content_selectors=("div.article-text", "div#artText"),
        pdf_rewrites=(
            _rw(r"/([\w-]+/)?article\?id=(.+)", r"/\1article/file?id=\2&type=printable"),
        ),
    ),
    PublisherStrategy(
        key="mdpi",
        name="MDPI",
        doi_prefixes=("10.3390",),
        brands=("mdpi",),
        pdf_selectors=("a.UD_ArticlePDF", 'a[href$="/pdf"]'),
        content_selectors=("div.html-body",),
        pdf_rewrites=(_rw(r"(/\d{4}-\d{3}[\dX]/\d+/\d+/\d+)", r"\1/pdf"),),
    ),
    PublisherStrategy(
        key="frontiers",
        name="Frontiers",
        doi_prefixes=("10.3389",),
        brands=("frontiersin",),
        pdf_selectors=("a.download-files-pdf", 'a[href$="/pdf"]'),
        content_selectors=("div.JournalFullText",),
        pdf_rewrites=(_rw(r"/articles/(10\.3389/.+?)/full", r"/articles/\1/pdf"),),
    ),
    PublisherStrategy(
        key="elife",
        name="eLife",
        doi_prefixes=("10.7554",),
        brands=("elifesciences",),
        pdf_selectors=('a[data-download-type="pdf-article"]', "a.article-download-link"),
        content_selectors=("div.main-content-grid", "main article"),
    ),
    PublisherStrategy(
        key="arxiv",
        name="arXiv",
        doi_prefixes=("10.48550",),
        brands=("arxiv",),
        pdf_selectors=("a.download-pdf", 'a[href^="/pdf/"]'),
        pdf_rewrites=(_rw(r"/abs/(.+)", r"/pdf/\1"),),
        rpm=20,  # arXiv asks robots for one request every three seconds
    ),
    PublisherStrategy(
        key="biorxiv",
        name="bioRxiv",
        doi_prefixes=("10.1101",),
        brands=("biorxiv",),
        pdf_selectors=("a.article-dl-pdf-link", 'a[href$=".full.pdf"]'),
        content_selectors=("div.fulltext-view",),
        pdf_rewrites=(_rw(r"(/content/10\.1101/[^/]+?)(?:\.full|\.abstract)?", r"\1.full.pdf"),),
        rpm=30,
    ),
    PublisherStrategy(
        key="medrxiv",
        name="medRxiv",
        brands=("medrxiv",),
        pdf_selectors=("a.article-dl-pdf-link", 'a[href$=".full.pdf"]'),
        content_selectors=("div.fulltext-view",),
        pdf_rewrites=(_rw(r"(/content/10\.1101/[^/]+?)(?:\.full|\.abstract)?", r"\1.full.pdf"),),
        rpm=30,
    ),
    PublisherStrategy(
        key="pmc",
        name="PubMed Central",
        brands=("nih", "europepmc"),
        pdf_selectors=('a[href$=".pdf"][href*="/pdf/"]', "li.pdf-link a"),
        content_selectors=("section.body.main-article-body", "div.jig-ncbiinpagenav"),
        pdf_rewrites=(_rw(r"/(?:pmc/)?articles/(PMC\d+)/?", r"/articles/\1/pdf/"),),
        rpm=180,  # NCBI: 3 requests a second without an API key
    ),
    PublisherStrategy(
        key="ojs",
        name="Open Journal Systems journal",
        path_patterns=(re.compile(r"(?:/index\.php)?/[^/]+/article/view/\d+(?:/\d+)?"),),
        generators=("open journal systems",),
        pdf_selectors=("a.obj_galley_link.pdf", "a.galley-link.pdf"),
        content_selectors=("div#articleFullText", "div.article-full-text"),
        # The galley link opens a viewer page; /download/ serves the file itself.
        pdf_rewrites=(_rw(r"(.*/article)/view/(\d+)/(\d+)", r"\1/download/\2/\3"),),
    ),
)


class PublisherRegistry:
    """Strategy lookup by host, DOI prefix and URL shape."""

    def __init__(self, strategies: Iterable[PublisherStrategy] = STRATEGIES) -> None:
        self.strategies = tuple(strategies)
        self._by_brand = {b: s for s in self.strategies for b in s.brands}
        self._by_prefix = {p: s for s in self.strategies for p in s.doi_prefixes}

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(s.key for s in self.strategies) | {GENERIC.key}

    def by_host(self, host: str) -> PublisherStrategy | None:
        return self._by_brand.get(brand(host))

    def by_doi(self, doi: str | None) -> PublisherStrategy | None:
        if not doi:
            return None
        return self._by_prefix.get(doi.split("/", 1)[0])

    def for_page(self, url: str, doi: str | None, generator: str = "") -> PublisherStrategy:
        """The strategy for a landing page at `url` (after redirects)."""
        parts = urlsplit(url)
        found = self.by_host(parts.hostname or "")
        if found is not None:
            return found
        for strategy in self.strategies:
            if any(p.fullmatch(parts.path) for p in strategy.path_patterns):
                return strategy
            if generator and any(generator.lower().startswith(g) for g in strategy.generators):
                return strategy
        return self.by_doi(doi) or GENERIC

    def pdf_from_url(self, url: str) -> str | None:
        """A direct PDF URL implied by a landing or viewer URL on a known host or OJS."""
        parts = urlsplit(url)
        strategy = self.by_host(parts.hostname or "")
        candidates = [strategy] if strategy else []
        candidates += [s for s in self.strategies if s.path_patterns]
        for candidate in candidates:
            pdf = candidate.pdf_from_url(url)
            if pdf is not None:
                return pdf
        return None


# --- reading a landing page -------------------------------------------------------------------

# Hosts of repositories and preprint servers whose links are worth following (tier 6).
REPOSITORY_BRANDS = frozenset(
    {
        "arxiv",
        "biorxiv",
        "medrxiv",
        "zenodo",
        "figshare",
        "osf",
        "hal",
        "ssrn",
        "researchsquare",
        "europepmc",
        "nih",
        "core",
        "semanticscholar",
    }
)
_REPOSITORY_PATH = re.compile(r"/(?:handle|bitstream|eprints?|server/api/core/bitstreams)/", re.I)
_REPOSITORY_TEXT = re.compile(
    r"\b(?:repository|preprint|accepted manuscript"
    r"|author(?:'s)? (?:accepted )?(?:manuscript|version)"
    r"|green open access|self-archived|postprint)\b",
    re.IGNORECASE,
)
_PDF_PATH = re.compile(r"(?:\.pdf$|/pdf/|/pdf$|/pdfft|/download/\d+)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class PageLinks:
    """What a landing page points at, by how much we trust the pointer."""

    strategy: PublisherStrategy
    publisher_pdf: tuple[str, ...]  # the strategy's own PDF selectors and URL rewrites
    citation_pdf: tuple[str, ...]  # <meta name=citation_pdf_url>: the publisher's statement
    repository: tuple[str, ...]  # repository and preprint links
    other_pdf: tuple[str, ...]  # any other link that looks like a PDF
    content_chars: int  # text length inside the strategy's content selectors


def read_links(html: str, page_url: str, doi: str | None, registry: PublisherRegistry) -> PageLinks:
    """Parse a (sanitised, size-capped) page once and sort its links. CPU-bound: callers run it
    in a worker thread."""
    tree = LexborHTMLParser(html)
    generator_node = tree.css_first('meta[name="generator" i]')
    generator = (generator_node.attributes.get("content") or "") if generator_node else ""
    strategy = registry.for_page(page_url, doi, generator)

    def absolute(href: str | None) -> str | None:
        if not href:
            return None
        href = href.strip()
        if href.startswith(("#", "javascript:", "mailto:", "data:")):
            return None
        url = urljoin(page_url, href)
        return url if urlsplit(url).scheme in ("http", "https") else None

    publisher: list[str] = []
    for selector in strategy.pdf_selectors:
        for node in tree.css(selector)[:_MAX_LINKS_KEPT]:
            url = absolute(node.attributes.get("href"))
            if url:
                publisher.append(strategy.pdf_from_url(url) or url)
    rewritten = strategy.pdf_from_url(page_url)
    if rewritten:
        publisher.append(rewritten)

    citation = [
        url
        for node in tree.css('meta[name="citation_pdf_url" i]')[:_MAX_LINKS_KEPT]
        if (url := absolute(node.attributes.get("content")))
    ]
    repository: list[str] = []
    other_pdf: list[str] = []
    page_host = urlsplit(page_url).hostname or ""
    for node in tree.css("a[href]")[:_MAX_LINKS_SCANNED]:
        url = absolute(node.attributes.get("href"))
        if url is None:
            continue
        host = urlsplit(url).hostname or ""
        path = urlsplit(url).path
        text = " ".join((node.text() or "").split())[:200]
        title = node.attributes.get("title") or ""
        off_site = brand(host) != brand(page_host)
        if (
            (off_site and brand(host) in REPOSITORY_BRANDS)
            or _REPOSITORY_PATH.search(path)
            or _REPOSITORY_TEXT.search(f"{text} {title}")
        ):
            repository.append(url)
        elif _PDF_PATH.search(path) or text.lower().endswith("pdf"):
            other_pdf.append(url)

    content_chars = 0
    for selector in strategy.content_selectors:
        container = tree.css_first(selector)
        if container is not None:
            content_chars = len(" ".join(container.text(separator=" ").split()))
            break
    known = set(publisher) | set(citation)
    return PageLinks(
        strategy=strategy,
        publisher_pdf=_unique(publisher),
        citation_pdf=_unique(citation),
        repository=_unique(u for u in repository if u not in known),
        other_pdf=_unique(u for u in other_pdf if u not in known),
        content_chars=content_chars,
    )


def _unique(urls: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(urls))[:_MAX_LINKS_KEPT]
