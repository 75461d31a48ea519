"""Building blocks of the catalogue: pages, PDFs, Unpaywall records, DOI redirects, papers."""

from __future__ import annotations

from typing import Any

from .. import pages
from ..model import Catalogue, Entry, Expected, Html, Pdf
from ..text import Article


def pdf_of(article: Article) -> Pdf:
    body = article.body_text.split("\n\n", 1)[1]
    return Pdf(article.key, article.title, body)


def full_page(
    c: Catalogue,
    url: str,
    article: Article,
    style: str,
    *,
    pdf: str | None = None,
    meta: str | None = None,
) -> None:
    c.add(
        url,
        Html(
            lambda x: pages.full_article(
                article,
                style,
                pdf_href=x(pdf) if pdf else None,
                pdf_meta=x(meta) if meta else None,
            )
        ),
    )


def landing_page(
    c: Catalogue,
    url: str,
    article: Article,
    style: str,
    *,
    wall: str | None = None,
    pdf: str | None = None,
    meta: str | None = None,
    links: tuple[tuple[str, str], ...] = (),
) -> None:
    c.add(
        url,
        Html(
            lambda x: pages.landing(
                article,
                style,
                wall=wall,
                pdf_href=x(pdf) if pdf else None,
                pdf_meta=x(meta) if meta else None,
                links=tuple((label, x(href)) for label, href in links),
            )
        ),
    )


def location(
    *,
    pdf: str | None,
    landing: str,
    host_type: str = "publisher",
    version: str = "publishedVersion",
) -> dict[str, Any]:
    return {
        "url": pdf or landing,
        "url_for_pdf": pdf,
        "url_for_landing_page": landing,
        "evidence": "open (via page says license)" if host_type == "publisher" else "oa repository",
        "host_type": host_type,
        "is_best": False,
        "license": "cc-by",
        "oa_date": "2020-05-14",
        "pmh_id": None,
        "repository_institution": "University Repository" if host_type == "repository" else None,
        "updated": "2024-01-10T08:00:00.000000",
        "version": version,
        "endpoint_id": None,
    }


def unpaywall(c: Catalogue, article: Article, locations: list[dict[str, Any]]) -> None:
    """Unpaywall's record; no locations means closed access."""
    assert article.doi is not None
    if locations:
        locations[0] = {**locations[0], "is_best": True}
    status = "closed"
    if locations:
        status = "green" if locations[0]["host_type"] == "repository" else "gold"
    c.unpaywall[article.doi.lower()] = {
        "doi": article.doi,
        "doi_url": f"https://doi.org/{article.doi}",
        "title": article.title,
        "genre": "journal-article",
        "is_paratext": False,
        "published_date": f"{article.year}-05-14",
        "year": article.year,
        "journal_name": article.journal,
        "journal_is_oa": False,
        "journal_is_in_doaj": False,
        "publisher": "Sandbox Publishing",
        "is_oa": bool(locations),
        "oa_status": status,
        "has_repository_copy": any(loc["host_type"] == "repository" for loc in locations),
        "best_oa_location": locations[0] if locations else None,
        "first_oa_location": locations[0] if locations else None,
        "oa_locations": locations,
        "oa_locations_embargoed": [],
        "updated": "2024-01-10T08:00:00.000000",
        "z_authors": [{"raw_author_name": a} for a in article.authors],
    }


def resolve(c: Catalogue, article: Article, url: str) -> None:
    """doi.org sends the article's DOI to `url`."""
    assert article.doi is not None
    c.dois[article.doi.lower()] = url


def paper(c: Catalogue, key: str, note: str, expected: Expected, **paper: Any) -> None:
    c.paper(Entry(key, paper, expected, note))


def yes(tier: int, kind: str | None, url: str | None) -> Expected:
    return Expected(True, tier, kind, url)


NO = Expected(False)
