"""Reading an HTML page with lexbor (via selectolax): metadata, PDF links, walls, main text.

Everything structural is read from the parsed DOM, never from the raw markup with regexes. The
work is bounded: the input is cut to the limits in `limits`, every list read from the page is
capped, and no function recurses over the tree (lexbor's own traversal is iterative), so a
hostile or broken page costs at most a few tens of milliseconds.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from selectolax.lexbor import LexborHTMLParser, LexborNode

from app.modules.literature.content.limits import bounded_html
from app.modules.literature.content.sections import heading_sections

_MAX_META = 2_000
_MAX_LINKS = 5_000
_MAX_PDF_LINKS = 20
_MAX_JSON_LD = 10
_MAX_JSON_LD_CHARS = 100_000
_MAX_ANCESTORS = 1_000  # well above the depth `limits` lets through

# Elements whose content is never shown as text; removed before anything reads the page's text.
_INVISIBLE = ["script", "style", "noscript", "template", "svg", "math", "iframe"]

# Visible elements that never hold an article's prose (controls, menus, sidebars, page footers,
# code listings); removed after the wall phrases, which often sit in them, have been read.
_NEVER_TEXT = [
    "pre",
    "canvas",
    "select",
    "option",
    "button",
    "input",
    "textarea",
    "nav",
    "aside",
    "footer",
    "menu",
    "dialog",
]

# Site menus: their "Subscribe" and "Purchase options" entries are about the site, not the
# article, so wall phrases are read from the page without them.
_MENUS = "nav, menu, header, [role=navigation], [role=menubar]"
_MAX_MENUS = 200

# Inline elements unwrapped before reading blocks, so a block's text is one line.
_INLINE = [
    "a",
    "abbr",
    "b",
    "cite",
    "code",
    "em",
    "font",
    "i",
    "mark",
    "q",
    "small",
    "span",
    "strong",
    "sub",
    "sup",
    "time",
    "u",
    "label",
    "bdi",
    "dfn",
    "var",
]

# Class/id/role words of page furniture shared by most site templates. Matched as substrings by
# lexbor's selector engine; a match holding most of the page's text is kept (it is a wrapper).
_FURNITURE_WORDS = (
    "navbar",
    "navigation",
    "breadcrumb",
    "sidebar",
    "side-bar",
    "masthead",
    "site-header",
    "page-header",
    "site-footer",
    "page-footer",
    "footer",
    "cookie",
    "consent",
    "banner",
    "social",
    "share",
    "related",
    "recommend",
    "comment",
    "advert",
    "toolbar",
    "skip-link",
    "skiplink",
    "newsletter",
    "popup",
    "modal",
)
_FURNITURE_NAMES = re.compile("|".join(re.escape(word) for word in _FURNITURE_WORDS))
_FURNITURE_ROLES = frozenset(
    {"navigation", "banner", "contentinfo", "complementary", "search", "dialog", "menu"}
)
_FURNITURE_TAGS = frozenset({"header", "form"})
# One cheap selector, then a compiled regex over class and id in Python: about ten times faster
# than asking lexbor for fifty substring selectors on a large page.
_FURNITURE_CANDIDATES = "header, form, [class], [id], [role]"
_WRAPPER_SHARE = 0.5

# Elements of a whole-page bot challenge (Cloudflare, PerimeterX and similar interstitials).
_CHALLENGE_SELECTOR = ", ".join(
    [
        "#cf-wrapper",
        "#challenge-form",
        "#challenge-running",
        "#cf-challenge-running",
        # Cloudflare's interstitial since 2023 ("Just a moment..."): its text is in <noscript>.
        "#challenge-error-text",
        "#challenge-stage",
        "#challenge-body-text",
        ".cf-browser-verification",
        "#cf-content",
        "#px-captcha",
        "form[action*=captcha]",
        "form[action*=challenge]",
    ]
)
# Captcha widgets: a wall on an otherwise empty page, but also found in comment and contact
# forms of real pages, so they weigh less than a whole-page challenge.
_CAPTCHA_SELECTOR = ".g-recaptcha, .h-captcha, [data-sitekey]"

# Only links that mention PDF in their address, type or text are looked at, which the selector
# engine finds without touching the other (often thousands of) links.
_PDF_LINK_SELECTOR = (
    'a[href*="pdf" i], a[type="application/pdf" i], a[href]:lexbor-contains("pdf" i)'
)
_PDF_WORDS = re.compile(r"^(?:download|view|get|full[- ]text|article)?\s*(?:full[- ]text\s*)?pdf\b")
_BLOCK_BREAK = "\x1f"
_SHORT_RUN = 5
_SHORT_LINE = 40


@dataclass(frozen=True, slots=True)
class Page:
    """What the heuristics read from one HTML page."""

    meta: dict[str, list[str]]  # lower-cased meta name/property -> contents, in page order
    title: str
    pdf_links: tuple[str, ...]
    password_inputs: int
    challenge_elements: int
    captcha_widgets: int
    json_ld_types: frozenset[str]
    visible_text: str  # the whole body's text, boilerplate included
    wall_text: str  # the same without site menus (nav, header), for wall phrases
    lines: list[str]  # main-text blocks after boilerplate removal
    all_lines: list[str]  # the same before runs of short blocks were dropped (record fields)
    truncated: bool  # the input was cut to stay within the size and nesting limits


def read_page(html: str, base_url: str | None = None) -> Page:
    """Parse a page once and read every DOM-level feature the heuristics use."""
    safe_html, truncated = bounded_html(html)
    tree = LexborHTMLParser(safe_html)
    meta = _meta(tree)
    base = _base_url(tree, base_url, meta)
    pdf_links = _pdf_links(tree, meta, base)
    title_node = tree.css_first("title")
    title = " ".join(title_node.text().split()) if title_node is not None else ""
    password_inputs = len(tree.css("input[type=password i]"))
    challenge_elements = len(tree.css(_CHALLENGE_SELECTOR))
    captcha_widgets = len(tree.css(_CAPTCHA_SELECTOR))
    json_ld_types = _json_ld_types(tree)
    tree.strip_tags(_INVISIBLE, recursive=True)
    body = tree.body
    visible_text = body.text(separator=" ") if body is not None else ""
    # Outermost menus only, all chosen before any is removed (a removed element frees its
    # descendants, which must not be touched afterwards).
    menus = [m for m in tree.css(_MENUS)[:_MAX_MENUS] if not _has_ancestor_in(m, _MENU_TAGS)]
    for menu in menus:
        menu.decompose()
    wall_text = body.text(separator=" ") if body is not None else ""
    tree.strip_tags(_NEVER_TEXT, recursive=True)
    all_lines = _block_lines(tree)
    lines = _drop_link_runs(all_lines)
    return Page(
        meta=meta,
        title=title,
        pdf_links=pdf_links,
        password_inputs=password_inputs,
        challenge_elements=challenge_elements,
        captcha_widgets=captcha_widgets,
        json_ld_types=json_ld_types,
        visible_text=visible_text,
        wall_text=wall_text,
        lines=lines,
        all_lines=all_lines,
        truncated=truncated,
    )


_MENU_TAGS = frozenset({"nav", "menu", "header"})


def _has_ancestor_in(node: LexborNode, tags: frozenset[str]) -> bool:
    """Whether a menu sits inside another menu element (bounded walk up the tree)."""
    parent = node.parent
    for _ in range(_MAX_ANCESTORS):
        if parent is None:
            return False
        if parent.tag in tags or (parent.attributes.get("role") or "") in ("navigation", "menubar"):
            return True
        parent = parent.parent
    return True


def main_text_lines(html: str) -> list[str]:
    """Only the main-text blocks of a page (what `extract_text` returns)."""
    tree = LexborHTMLParser(bounded_html(html)[0])
    tree.strip_tags(_INVISIBLE + _NEVER_TEXT, recursive=True)
    return _drop_link_runs(_block_lines(tree))


def _meta(tree: LexborHTMLParser) -> dict[str, list[str]]:
    meta: dict[str, list[str]] = {}
    for node in tree.css("meta")[:_MAX_META]:
        attrs = node.attributes
        name = attrs.get("name") or attrs.get("property") or attrs.get("itemprop")
        content = attrs.get("content")
        if name and content:
            meta.setdefault(name.strip().casefold(), []).append(content.strip())
    return meta


def _base_url(tree: LexborHTMLParser, given: str | None, meta: dict[str, list[str]]) -> str | None:
    """The URL relative links resolve against: the caller's, else what the page says it is."""
    declared = tree.css_first("base[href]")
    declared_href = declared.attributes.get("href") if declared is not None else None
    if given:
        return urljoin(given, declared_href) if declared_href else given
    canonical = tree.css_first("link[rel=canonical][href]")
    for candidate in (
        declared_href,
        canonical.attributes.get("href") if canonical is not None else None,
        *meta.get("og:url", []),
        *meta.get("citation_abstract_html_url", []),
    ):
        if candidate and _is_absolute(candidate):
            return candidate
    return None


def _is_absolute(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _pdf_links(
    tree: LexborHTMLParser, meta: dict[str, list[str]], base: str | None
) -> tuple[str, ...]:
    """citation_pdf_url first (the publisher's own statement), then links that look like PDFs."""
    candidates: list[str] = list(meta.get("citation_pdf_url", []))
    for node in tree.css('link[type="application/pdf" i][href]'):
        candidates.append(node.attributes.get("href") or "")
    for node in tree.css(_PDF_LINK_SELECTOR)[:_MAX_LINKS]:
        href = node.attributes.get("href") or ""
        if _looks_like_pdf(href, node):
            candidates.append(href)
    return _resolve_unique(candidates, base, _MAX_PDF_LINKS)


def _looks_like_pdf(href: str, node: LexborNode) -> bool:
    path = urlsplit(href.strip()).path.casefold()
    if path.endswith((".pdf", "/pdf")) or "/pdf/" in path or "/pdfft" in path:
        return True
    if (node.attributes.get("type") or "").casefold() == "application/pdf":
        return True
    label = " ".join(node.text().split()).casefold()
    return len(label) <= 40 and bool(_PDF_WORDS.match(label))


def _resolve_unique(candidates: Iterable[str], base: str | None, limit: int) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for raw in candidates:
        href = raw.strip()
        if not href or href.startswith(("#", "javascript:", "mailto:", "data:")):
            continue
        url = urljoin(base, href) if base else href
        if _is_absolute(url):
            seen.setdefault(url, None)
        if len(seen) >= limit:
            break
    return tuple(seen)


def _json_ld_types(tree: LexborHTMLParser) -> frozenset[str]:
    """schema.org types a page declares about itself (ScholarlyArticle, NewsArticle, ...)."""
    types: set[str] = set()
    for node in tree.css('script[type="application/ld+json" i]')[:_MAX_JSON_LD]:
        raw = node.text()[:_MAX_JSON_LD_CHARS]
        try:
            data = json.loads(raw)
        except ValueError:
            continue
        items = data if isinstance(data, list) else [data]
        for item in items[:_MAX_JSON_LD]:
            if isinstance(item, dict):
                types.update(_types_of(item))
                graph = item.get("@graph")
                if isinstance(graph, list):
                    for sub in graph[:_MAX_JSON_LD]:
                        if isinstance(sub, dict):
                            types.update(_types_of(sub))
    return frozenset(types)


def _types_of(item: dict[str, object]) -> list[str]:
    value = item.get("@type")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _block_lines(tree: LexborHTMLParser) -> list[str]:
    """Remove page furniture, then read the remaining body as one line per block."""
    body = tree.body
    if body is None:
        return []
    _remove_furniture(body, len(body.text()))
    tree.unwrap_tags(_INLINE)
    tree.merge_text_nodes()
    # Text nodes carry the source's own line breaks, so blocks are joined with a character
    # that never appears in text and whitespace inside each block is collapsed afterwards.
    raw = body.text(separator=_BLOCK_BREAK, strip=True, skip_empty=True)
    lines = [" ".join(line.split()) for line in raw.split(_BLOCK_BREAK)]
    return [line for line in lines if line]


def _remove_furniture(body: LexborNode, total_chars: int) -> None:
    """Decompose headers, menus, sidebars, cookie banners and the like.

    Only the outermost match of each nested group is removed (removing an element frees its
    descendants, so they must not be touched afterwards), and a match holding more than half of
    the page's text is kept: it is a wrapper whose class happens to contain a furniture word.
    Matches come in document order, so an ancestor is always decided before its descendants.
    """
    doomed: dict[int, LexborNode] = {}
    for node in body.css(_FURNITURE_CANDIDATES):
        if node.tag in ("body", "html", "main", "article") or not _is_furniture(node):
            continue
        if _has_doomed_ancestor(node, doomed):
            continue
        if len(node.text()) <= _WRAPPER_SHARE * total_chars and not _holds_sections(node):
            doomed[node.mem_id] = node
    for node in doomed.values():
        node.decompose()


def _holds_sections(node: LexborNode) -> bool:
    """Whether an element titled like furniture holds a real section (an article's back matter
    often sits in a `...-footer` element, with the references in it)."""
    return any(heading_sections(h.text()) for h in node.css("h1, h2, h3, h4, h5, h6")[:50])


def _is_furniture(node: LexborNode) -> bool:
    if node.tag in _FURNITURE_TAGS:
        return True
    attrs = node.attributes
    if (attrs.get("role") or "").casefold() in _FURNITURE_ROLES:
        return True
    return _furniture_name(f"{attrs.get('class') or ''} {attrs.get('id') or ''}")


@functools.lru_cache(maxsize=8192)
def _furniture_name(names: str) -> bool:
    """Cached: a page repeats the same few hundred class strings thousands of times."""
    return _FURNITURE_NAMES.search(names.casefold()) is not None


def _has_doomed_ancestor(node: LexborNode, doomed: dict[int, LexborNode]) -> bool:
    """Whether an ancestor is already marked; an unexplored chain (deeper than the walk goes)
    counts as marked, so a node is only ever removed when its whole ancestry is known."""
    parent = node.parent
    for _ in range(_MAX_ANCESTORS):
        if parent is None:
            return False
        if parent.mem_id in doomed:
            return True
        parent = parent.parent
    return True


def _drop_link_runs(lines: list[str]) -> list[str]:
    """Drop runs of many short blocks: menus, tag clouds and link lists left in the body.

    A table's cells also go; the heuristics measure prose, which tables are not. A section
    heading inside such a run is kept, because an outline's headings still name sections.
    """
    kept: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if len(run) >= _SHORT_RUN:
            kept.extend(item for item in run if heading_sections(item))
        else:
            kept.extend(run)
        run.clear()

    for line in lines:
        if len(line) <= _SHORT_LINE:
            run.append(line)
        else:
            flush()
            kept.append(line)
    flush()
    return kept
