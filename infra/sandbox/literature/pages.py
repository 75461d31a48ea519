"""HTML pages as publishers serve them: full-text articles, abstract-only landing pages,
paywalls, login walls, repository records, preprint abstract pages, OJS landing pages, news.

Each publisher style puts the article body and the PDF button where that publisher does (the
class names the gateway's strategies look for), with the usual furniture around: navigation,
cookie banner, metrics, related articles, footer, `citation_*` meta tags.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from .text import Article


@dataclass(frozen=True, slots=True)
class Style:
    site: str  # the publisher's name, as its header shows it
    body_open: str  # the article body's container (the strategy's content selector)
    body_close: str
    pdf_button: str  # format string with {href}


STYLES: dict[str, Style] = {
    "plos": Style(
        "PLOS ONE",
        '<div class="article-text" id="artText">',
        "</div>",
        '<a id="downloadPdf" class="btn" href="{href}" target="_blank">Download PDF</a>',
    ),
    "elsevier": Style(
        "ScienceDirect",
        '<div id="body" class="Body u-font-serif">',
        "</div>",
        '<a class="link-button pdf-download-btn-link" href="{href}"><span>View PDF</span></a>',
    ),
    "springer": Style(
        "SpringerLink",
        '<div class="c-article-body">',
        "</div>",
        '<a class="c-pdf-download__link" data-article-pdf="true" href="{href}">Download PDF</a>',
    ),
    "nature": Style(
        "Nature",
        '<div class="c-article-body main-content">',
        "</div>",
        '<a class="c-pdf-download__link" data-article-pdf="true" href="{href}">Download PDF</a>',
    ),
    "wiley": Style(
        "Wiley Online Library",
        '<section class="article-section article-section__full">',
        "</section>",
        '<a class="coolBar__ctrl pdf-download" href="{href}" title="PDF">PDF</a>',
    ),
    "tandf": Style(
        "Taylor &amp; Francis Online",
        '<div class="hlFld-Fulltext">',
        "</div>",
        '<a class="show-pdf" href="{href}">Download PDF</a>',
    ),
    "mdpi": Style(
        "MDPI",
        '<div class="html-body">',
        "</div>",
        '<a class="UD_ArticlePDF" href="{href}" title="Article PDF">Download PDF</a>',
    ),
    "frontiers": Style(
        "Frontiers",
        '<div class="JournalFullText">',
        "</div>",
        '<a class="download-files-pdf" href="{href}">Download PDF</a>',
    ),
    "elife": Style(
        "eLife",
        '<div class="main-content-grid">',
        "</div>",
        '<a data-download-type="pdf-article" class="article-download-link" href="{href}">'
        "Article PDF</a>",
    ),
    "biorxiv": Style(
        "bioRxiv",
        '<div class="article fulltext-view">',
        "</div>",
        '<a class="article-dl-pdf-link link-icon" href="{href}">Download PDF</a>',
    ),
    "medrxiv": Style(
        "medRxiv",
        '<div class="article fulltext-view">',
        "</div>",
        '<a class="article-dl-pdf-link link-icon" href="{href}">Download PDF</a>',
    ),
    "pmc": Style(
        "PMC",
        '<section class="body main-article-body">',
        "</section>",
        '<li class="pdf-link"><a href="{href}">PDF (1.2 MB)</a></li>',
    ),
    "generic": Style(
        "Journal of Applied Society Studies",
        "<main>",
        "</main>",
        '<a href="{href}">Download</a>',
    ),
}


def _meta(article: Article, pdf_meta: str | None) -> str:
    tags = [
        ("citation_title", article.title),
        ("citation_journal_title", article.journal),
        ("citation_publication_date", f"{article.year}/05/14"),
        *(("citation_author", a) for a in article.authors),
        ("dc.title", article.title),
        ("og:title", article.title),
    ]
    if article.doi:
        tags += [("citation_doi", article.doi), ("dc.identifier", f"doi:{article.doi}")]
    if pdf_meta:
        tags.append(("citation_pdf_url", pdf_meta))
    return "\n".join(f'<meta name="{n}" content="{escape(v)}">' for n, v in tags)


def _head(article: Article, style: Style, pdf_meta: str | None, extra: str = "") -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(article.title)} | {style.site}</title>\n"
        f"{_meta(article, pdf_meta)}\n{extra}"
        '<link rel="stylesheet" href="/static/site.css"></head>\n'
    )


def _header(style: Style) -> str:
    return (
        '<header class="site-header"><nav class="navbar" role="navigation"><ul>'
        '<li><a href="/">Home</a></li><li><a href="/journals">Journals</a></li>'
        '<li><a href="/browse">Browse</a></li><li><a href="/search">Search</a></li>'
        '<li><a href="/about">About</a></li><li><a href="/login">Sign in</a></li></ul></nav>'
        f'<div class="brand">{style.site}</div></header>\n'
        '<div class="cookie-banner" id="cookie-consent">We use cookies to improve your '
        "experience. By continuing you agree to our use of cookies. "
        '<button type="button">Accept all</button></div>\n'
    )


_FOOTER = (
    '<footer class="site-footer"><ul><li><a href="/privacy">Privacy policy</a></li>'
    '<li><a href="/terms">Terms of use</a></li><li><a href="/contact">Contact</a></li>'
    '<li><a href="/accessibility">Accessibility</a></li></ul>'
    "<p>Copyright 2024 The Publisher. All rights reserved.</p></footer>\n"
)


def _byline(article: Article) -> str:
    authors = ", ".join(f'<span class="author">{escape(a)}</span>' for a in article.authors)
    doi = (
        f'<p class="doi">DOI: <a href="https://doi.org/{escape(article.doi)}">'
        f"{escape(article.doi)}</a></p>"
        if article.doi
        else ""
    )
    return (
        f'<h1 class="article-title">{escape(article.title)}</h1>\n'
        f'<div class="authors">{authors}</div>\n'
        f'<p class="journal"><em>{escape(article.journal)}</em>, {article.year}</p>\n{doi}\n'
    )


def _abstract(article: Article) -> str:
    keywords = ", ".join(escape(k) for k in article.keywords)
    return (
        '<section class="abstract" id="abstract"><h2>Abstract</h2>'
        f"<p>{escape(article.abstract)}</p></section>\n"
        f'<div class="keywords"><strong>Keywords:</strong> {keywords}</div>\n'
    )


def _body(article: Article) -> str:
    out = []
    for number, section in enumerate(article.sections, 1):
        paragraphs = "\n".join(f"<p>{escape(p)}</p>" for p in section.paragraphs)
        out.append(
            f'<section id="sec{number}"><h2>{number}. {escape(section.heading)}</h2>\n'
            f"{paragraphs}\n</section>"
        )
        if section.heading == "Results":
            out.append(
                '<figure id="fig1"><img src="/figures/fig1.png" alt="Figure 1">'
                "<figcaption>Figure 1. Change in the primary outcome by site and exposure "
                "level; bars show 95% confidence intervals.</figcaption></figure>\n"
                '<table class="table"><caption>Table 1. Primary outcome by exposure '
                "quartile</caption><tr><th>Quartile</th><th>Mean</th><th>SD</th></tr>"
                "<tr><td>Q1</td><td>1.2</td><td>0.4</td></tr>"
                "<tr><td>Q4</td><td>2.9</td><td>0.7</td></tr></table>"
            )
    return "\n".join(out)


def _references(article: Article) -> str:
    items = "\n".join(f"<li>{escape(ref)}</li>" for ref in article.references)
    return (
        f'<section class="references" id="references"><h2>References</h2><ol>{items}</ol></section>'
    )


_RELATED = (
    '<aside class="sidebar related-articles"><h3>Related articles</h3><ul>'
    '<li><a href="/related/1">Long-term trends in regional monitoring data</a></li>'
    '<li><a href="/related/2">A review of measurement methods</a></li>'
    '<li><a href="/related/3">Editorial: open questions for the next decade</a></li>'
    "</ul></aside>\n"
)


def full_article(
    article: Article, style_key: str, *, pdf_href: str | None, pdf_meta: str | None
) -> str:
    """The article's full text as the publisher's HTML view."""
    style = STYLES[style_key]
    button = style.pdf_button.format(href=escape(pdf_href)) if pdf_href else ""
    return (
        _head(article, style, pdf_meta)
        + "<body>\n"
        + _header(style)
        + f'<div class="article-tools">{button}<a href="/cite">Cite</a>'
        '<a href="/share" class="share">Share</a></div>\n'
        + "<article>\n"
        + _byline(article)
        + _abstract(article)
        + style.body_open
        + "\n"
        + _body(article)
        + "\n"
        + _references(article)
        + "\n"
        + style.body_close
        + "\n</article>\n"
        + _RELATED
        + _FOOTER
        + "</body></html>"
    )


_PAYWALL_BOX = (
    '<div class="access-options"><h2>Access options</h2>'
    "<p>You do not currently have access to this article.</p>"
    '<p><a href="/institution-login">Access through your institution</a></p>'
    "<p>Purchase this article: <strong>USD 39.95</strong> "
    '<a class="buy" href="/purchase">Buy article PDF</a></p>'
    "<p>Rent this article for 48 hours, or subscribe to the journal for full access. "
    "Prices exclude local taxes.</p></div>\n"
)
_LOGIN_BOX = (
    '<div class="login-required"><h2>Sign in to read this article</h2>'
    "<p>Please log in with your personal or institutional account to continue.</p>"
    '<form action="/login" method="post"><label>Email <input type="email" name="email">'
    '</label><label>Password <input type="password" name="password"></label>'
    '<button type="submit">Sign in</button></form>'
    '<p><a href="/register">Create an account</a> or '
    '<a href="/forgot">reset your password</a>.</p></div>\n'
)


def landing(
    article: Article,
    style_key: str,
    *,
    wall: str | None = None,
    pdf_href: str | None = None,
    pdf_meta: str | None = None,
    links: tuple[tuple[str, str], ...] = (),
) -> str:
    """An abstract-only landing page, optionally behind a paywall or login box, optionally
    with the publisher's PDF button and extra (label, href) links."""
    style = STYLES[style_key]
    button = style.pdf_button.format(href=escape(pdf_href)) if pdf_href else ""
    extra = "".join(
        f'<li><a href="{escape(href)}">{escape(label)}</a></li>' for label, href in links
    )
    other = f'<div class="other-versions"><h3>Other versions</h3><ul>{extra}</ul></div>'
    box = {"paywall": _PAYWALL_BOX, "login": _LOGIN_BOX}.get(wall or "", "")
    return (
        _head(article, style, pdf_meta)
        + "<body>\n"
        + _header(style)
        + f'<div class="article-tools">{button}<a href="/cite">Cite</a></div>\n'
        + "<article>\n"
        + _byline(article)
        + _abstract(article)
        + box
        + (other if links else "")
        + "</article>\n"
        + _RELATED
        + _FOOTER
        + "</body></html>"
    )


def login_page(site: str) -> str:
    """Where a paywalled PDF link sends a visitor without access."""
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>Sign in | {escape(site)}</title></head><body>\n"
        f'<header class="site-header"><div class="brand">{escape(site)}</div></header>\n'
        "<main><h1>Sign in</h1><p>You must be signed in to access this content. "
        "Log in with your username and password, or through your institution.</p>"
        '<form action="/login" method="post"><label>Username <input type="text" '
        'name="username"></label><label>Password <input type="password" name="password">'
        '</label><button type="submit">Log in</button></form>'
        '<p><a href="/institution-login">Access through your institution</a></p></main>\n'
        + _FOOTER
        + "</body></html>"
    )


def repository_record(article: Article, pdf_href: str) -> str:
    """A DSpace item page: metadata, abstract, the file list, `citation_pdf_url`."""
    authors = "".join(f"<li>{escape(a)}</li>" for a in article.authors)
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{escape(article.title)} | University Repository</title>\n"
        f"{_meta(article, pdf_href)}\n"
        '<meta name="generator" content="DSpace 7.6"></head><body>\n'
        '<header class="site-header"><nav class="navbar"><a href="/">University Repository'
        '</a><a href="/browse">Browse</a><a href="/login">Log in</a></nav></header>\n'
        '<main class="item-page"><h1>' + escape(article.title) + "</h1>\n"
        '<table class="item-metadata"><tr><th>Authors</th><td><ul>' + authors + "</ul></td></tr>"
        f"<tr><th>Date</th><td>{article.year}</td></tr>"
        "<tr><th>Type</th><td>Article (accepted manuscript)</td></tr>"
        f"<tr><th>Journal</th><td>{escape(article.journal)}</td></tr></table>\n"
        f'<div class="abstract"><h2>Abstract</h2><p>{escape(article.abstract)}</p></div>\n'
        '<div class="item-files"><h2>Files in this item</h2><ul>'
        f'<li><a href="{escape(pdf_href)}">accepted_manuscript.pdf</a> (1.1 MB, PDF)</li>'
        "</ul></div></main>\n" + _FOOTER + "</body></html>"
    )


def arxiv_abstract(article: Article, arxiv_id: str) -> str:
    """arXiv's abstract page (`/abs/<id>`), whose full text is the PDF."""
    authors = ", ".join(f'<a href="/a/{escape(a)}">{escape(a)}</a>' for a in article.authors)
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>[{arxiv_id}] {escape(article.title)}</title>\n"
        f'<meta name="citation_title" content="{escape(article.title)}">\n'
        f'<meta name="citation_arxiv_id" content="{arxiv_id}">\n'
        "</head><body>\n"
        '<header class="site-header"><nav class="navbar"><a href="/">arXiv</a> &gt; '
        '<a href="/list/q-bio">q-bio</a></nav></header>\n'
        '<div id="abs"><h1 class="title mathjax">' + escape(article.title) + "</h1>\n"
        f'<div class="authors">{authors}</div>\n'
        f'<blockquote class="abstract mathjax">Abstract: {escape(article.abstract)}'
        "</blockquote>\n"
        f'<div class="dateline">Submitted on 14 Jan {article.year}</div></div>\n'
        '<div class="extra-services"><h2>Access Paper:</h2><ul>'
        f'<li><a class="abs-button download-pdf" href="/pdf/{arxiv_id}">View PDF</a></li>'
        f'<li><a href="/format/{arxiv_id}">Other Formats</a></li></ul></div>\n'
        + _FOOTER
        + "</body></html>"
    )


def ojs_landing(article: Article, galley_href: str) -> str:
    """An Open Journal Systems 3 article page: abstract and a PDF galley link."""
    authors = "".join(f'<li><span class="name">{escape(a)}</span></li>' for a in article.authors)
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{escape(article.title)} | Journal of Library and Information Science</title>\n"
        '<meta name="generator" content="Open Journal Systems 3.3.0.13">\n'
        f"{_meta(article, None)}\n</head><body>\n"
        '<header class="pkp_structure_head"><nav class="pkp_navigation_primary" '
        'role="navigation"><a href="/index.php/jlis/issue/current">Current</a>'
        '<a href="/index.php/jlis/issue/archive">Archives</a>'
        '<a href="/index.php/jlis/about">About</a></nav></header>\n'
        '<div class="page page_article"><article class="obj_article_details">'
        f'<h1 class="page_title">{escape(article.title)}</h1>'
        f'<ul class="authors">{authors}</ul>'
        f'<section class="item abstract"><h2 class="label">Abstract</h2>'
        f"<p>{escape(article.abstract)}</p></section>"
        '<div class="item galleys"><ul class="value galleys_links"><li>'
        f'<a class="obj_galley_link pdf" href="{escape(galley_href)}">PDF</a>'
        "</li></ul></div></article></div>\n" + _FOOTER + "</body></html>"
    )


def news_story() -> str:
    """A science news story about research: an article, but not a scholarly one."""
    paragraph = (
        "Scientists say the new findings could change how cities plan for hotter summers. "
        "The team, which spent several years collecting measurements, told reporters that "
        "the results were surprising. Other experts who were not involved in the study "
        "cautioned that more work is needed before drawing firm conclusions. "
    )
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        "<title>Trees cool cities more than thought, study finds | Example Media</title>\n"
        '<meta property="og:type" content="article">\n'
        '<script type="application/ld+json">{"@context":"https://schema.org",'
        '"@type":"NewsArticle","headline":"Trees cool cities more than thought"}</script>\n'
        "</head><body>\n"
        '<header class="site-header"><nav class="navbar"><a href="/">News</a>'
        '<a href="/science">Science</a><a href="/world">World</a></nav></header>\n'
        "<main><article><h1>Trees cool cities more than thought, study finds</h1>"
        '<p class="byline">By a staff reporter, 3 June 2024</p>'
        + "".join(f"<p>{paragraph}</p>" for _ in range(8))
        + "</article></main>\n"
        + _FOOTER
        + "</body></html>"
    )


def not_found(site: str) -> str:
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Not found</title></head>'
        f"<body><h1>Page not found</h1><p>{escape(site)} could not find that page.</p>"
        "</body></html>"
    )


def doi_not_found(doi: str) -> str:
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>DOI Not Found</title>'
        "</head><body><h1>DOI Not Found</h1>"
        f"<p>{escape(doi)}</p><p>This DOI cannot be found in the DOI System.</p></body></html>"
    )
