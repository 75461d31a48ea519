"""The kinds of page issue 15 names, one small synthetic page each (tests/fixtures/fulltext/kinds,
described in its README): modern previews, citing-works pages, essays with Dublin Core tags, news
with a paper's tags, obfuscated challenges, menu words, thesis records, humanities articles and
short communications. Each test holds a kind, not a page."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.modules.literature.content import (
    ContentAssessment,
    ContentType,
    Recommendation,
    assess_html,
)

KINDS = Path(__file__).resolve().parent.parent / "fixtures" / "fulltext" / "kinds"
LANDING_URL = "https://journals.example.org/jde/article/0311"


def assess(name: str) -> ContentAssessment:
    return assess_html((KINDS / name).read_text(encoding="utf-8"), base_url=LANDING_URL)


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        # Abstract, headings with a line under each, an access box in the text, 45 references.
        ("preview_purchase.html", ContentType.PAYWALL),
        # Abstract and thirty citing works with snippets: long prose that is not the paper's.
        ("citing_works.html", ContentType.ABSTRACT_ONLY),
        # 11 000 characters of essay, Dublin Core and bepress title/author tags, four notes.
        ("essay_dublin_core.html", ContentType.NOT_ARTICLE),
        # A news story carrying the paper's citation tags and DOI, declared NewsArticle.
        ("news_with_citation_tags.html", ContentType.NOT_ARTICLE),
        # A bot challenge whose obfuscated script is visible text.
        ("challenge_obfuscated.html", ContentType.LOGIN),
    ],
)
def test_negatives_that_looked_like_full_text(name: str, content_type: ContentType) -> None:
    result = assess(name)
    assert not result.is_full_text
    assert result.content_type is content_type
    assert result.recommendation is not Recommendation.ACCEPT


def test_a_preview_is_not_certain_either_way() -> None:
    """Close to the bar by its points, so the AI is asked; never an accept."""
    result = assess("preview_purchase.html")
    assert not result.certain
    assert "References" not in result.sections  # the count in "References (45)" is read
    assert "references" in result.sections


def test_script_shown_as_text_is_not_prose() -> None:
    result = assess("challenge_obfuscated.html")
    assert result.signals["prose_chars"] < 1000


def test_menu_words_do_not_make_an_open_abstract_a_paywall() -> None:
    result = assess("abstract_menu_words.html")
    assert result.content_type is ContentType.ABSTRACT_ONLY
    assert result.recommendation is Recommendation.RETRY_PDF
    assert result.signals["paywall_phrases"] == 0


def test_a_thesis_record_without_scholarly_tags_is_abstract_only() -> None:
    result = assess("thesis_record.html")
    assert result.content_type is ContentType.ABSTRACT_ONLY
    assert result.recommendation is not Recommendation.REJECT


def test_a_humanities_article_with_works_cited_is_full_text() -> None:
    result = assess("humanities_works_cited.html")
    assert result.is_full_text
    assert result.recommendation is Recommendation.ACCEPT
    # No metadata, no abstract, no paper sections: right, but left for the AI to confirm.
    assert not result.certain


def test_a_letter_with_styled_headings_and_only_methods_is_full_text() -> None:
    result = assess("letter_styled_headings.html")
    assert result.is_full_text
    assert "methods" in result.sections
    assert "references" in result.sections


def test_confidence_grows_with_the_evidence_for_full_text() -> None:
    """The same page with more of its evidence removed is never more confident."""
    html = (KINDS / "letter_styled_headings.html").read_text(encoding="utf-8")
    full = assess_html(html)
    no_meta = assess_html(html.replace('<meta name="citation_', '<meta name="x_'))
    assert full.signals["full_text_points"] > no_meta.signals["full_text_points"]
    assert full.confidence > no_meta.confidence
