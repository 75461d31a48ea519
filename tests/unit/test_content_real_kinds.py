"""The kinds the second batch of real pages taught (tests/fixtures/fulltext/dev, `tune` pages
only), each held by the page that showed it: result lists whose snippets add up to a paper,
free articles that keep a purchase box in their markup, today's Cloudflare interstitial and
email-first log-in pages, bare 403 blocks, purchase words about a printed copy, and short
commentaries that must not be a certain "no"."""

from __future__ import annotations

import pytest

from app.modules.literature.content import ContentAssessment, ContentType, assess_html
from bench.fulltext_quality import DEFAULT_DATA, load_pages, read_html

PAGES = {page.id: page for page in load_pages(DEFAULT_DATA)}


def assess(page_id: str) -> ContentAssessment:
    page = PAGES[page_id]
    assert page.split == "tune", "a held-out page must not be tuned on"
    return assess_html(read_html(page.path))


@pytest.mark.parametrize(
    ("page_id", "content_type"),
    [
        # ACM DL search results 2020: 20 snippets give 13 000 characters, "Introduction" and
        # in-text citations, enough points for a paper; 20 PDF links and no metadata of its own.
        ("rp-acm-search-2020", ContentType.NOT_ARTICLE),
        # IEEE Xplore search results: thirty abstracts in a row are not one paper's abstract.
        ("rp-ieee-search-2020", ContentType.NOT_ARTICLE),
        # ACM search with "Get access" under every result: a list, not a paywall.
        ("fp-acm-search", ContentType.NOT_ARTICLE),
    ],
)
def test_a_list_of_results_is_not_a_paper(page_id: str, content_type: ContentType) -> None:
    result = assess(page_id)
    assert not result.is_full_text
    assert result.content_type is content_type
    assert "list of results" in result.reasoning


def test_a_free_article_with_a_purchase_box_in_its_markup_is_full_text() -> None:
    """JAMA 2009: the whole body (20 000 characters under Methods and Results) is on the page,
    next to the site's purchase box; a preview shows the openings of its sections only."""
    result = assess("rp-jama-archinte-415195")
    assert result.is_full_text
    assert result.content_type is ContentType.FULL_ARTICLE


@pytest.mark.parametrize(
    "page_id",
    [
        "rp-ssrn-cf-challenge",  # "Just a moment...": the words are in <noscript>
        "pk-springernature-login-gateway",  # "Log in, or register": an e-mail field, no password
        "vc-pmc-2674678-403",  # 134 bytes: "403 Forbidden" served to a script
    ],
)
def test_walls_without_prose_are_walls(page_id: str) -> None:
    result = assess(page_id)
    assert not result.is_full_text
    assert result.content_type is ContentType.LOGIN


def test_a_bare_403_is_not_a_certain_wall() -> None:
    """One phrase and nothing else: blocked, probably, but not sure which wall."""
    assert not assess("vc-pmc-2674678-403").certain


def test_buying_a_printed_copy_does_not_make_an_open_article_a_paywall() -> None:
    result = assess("pk-iop-erl-6-3-034004")  # "The following article is Open access"
    assert result.content_type is not ContentType.PAYWALL
    assert result.signals["paywall_phrases"] == 0


def test_a_price_and_a_check_of_access_are_a_paywall() -> None:
    result = assess("rp-springer-s12185-016-1974-6")  # "Buy (PDF) USD 39.95", 2016
    assert result.content_type is ContentType.PAYWALL


def test_a_short_referenced_commentary_is_never_a_certain_no() -> None:
    """Science's 2026 Perspective: 7 000 characters, 32 references, no headings, the DOI only in
    `publication_doi`. Under the bar, so "no", but the AI is asked."""
    result = assess("rp-science-aeg3511-full")
    assert result.signals["doi_declared"] is True
    assert not result.certain


def test_a_captcha_in_a_news_page_is_not_a_challenge() -> None:
    """Barron's: a story with a newsletter captcha below it."""
    result = assess("ae-barrons-com-f8ff62")
    assert result.content_type is ContentType.NOT_ARTICLE


def test_more_paragraphs_than_an_abstract_is_never_a_certain_abstract_page() -> None:
    """AMS 2026 corrigendum: its whole text is eight paragraphs and seven references, under the
    full-text bar; an abstract page it is not, surely."""
    result = assess("b3-ams-jcli-d-25-0547-1-corrigendum")
    assert not result.is_full_text
    assert not result.certain
    assert "more than an abstract" in result.reasoning
