"""The full-text heuristics: verdicts on synthetic pages, the dev set, PDFs, and hostile input."""

from __future__ import annotations

import dataclasses
import os
import textwrap
import time
from pathlib import Path

import pytest

from app.modules.literature.content import (
    ContentAssessment,
    ContentType,
    Recommendation,
    assess_html,
    assess_pdf_bytes,
    assess_text,
    extract_text,
)
from bench.fulltext_quality import DEFAULT_DATA, held_out_ids, load_pages, right, run, scores

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "fulltext"
ARTICLE_TITLE = "Soil moisture memory shapes seedling survival in semi-arid grasslands"
ARTICLE_DOI = "10.5555/jde.2021.0142"
LANDING_URL = "https://journals.example.org/cpl/article/0077/abstract"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def assess_fixture(name: str, **kwargs: str) -> ContentAssessment:
    return assess_html(fixture(name), **kwargs)


def count(result: ContentAssessment, signal: str) -> int:
    """A numeric signal, checked to be one (signals are typed as any scalar)."""
    value = result.signals[signal]
    assert isinstance(value, int)
    return value


# --- verdicts on the synthetic pages ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content_type", "recommendation"),
    [
        ("full_article.html", ContentType.FULL_ARTICLE, Recommendation.ACCEPT),
        ("full_article_plain.html", ContentType.FULL_ARTICLE, Recommendation.ACCEPT),
        ("full_essay.html", ContentType.FULL_ARTICLE, Recommendation.ACCEPT),
        ("abstract_landing.html", ContentType.ABSTRACT_ONLY, Recommendation.RETRY_PDF),
        ("paywall.html", ContentType.PAYWALL, Recommendation.REJECT),
        ("login.html", ContentType.LOGIN, Recommendation.REJECT),
        ("cloudflare.html", ContentType.LOGIN, Recommendation.REJECT),
        ("news.html", ContentType.NOT_ARTICLE, Recommendation.REJECT),
        ("toc.html", ContentType.NOT_ARTICLE, Recommendation.REJECT),
        ("record.html", ContentType.METADATA, Recommendation.RETRY_HTML),
    ],
)
def test_fixture_verdict(
    name: str, content_type: ContentType, recommendation: Recommendation
) -> None:
    result = assess_fixture(name, base_url=LANDING_URL)
    assert result.content_type is content_type, result.reasoning
    assert result.is_full_text is (content_type is ContentType.FULL_ARTICLE)
    assert result.recommendation is recommendation
    assert 0.0 <= result.confidence <= 1.0
    assert result.reasoning


def test_full_article_is_certain_despite_wall_phrases_in_its_sidebar() -> None:
    result = assess_fixture("full_article.html")
    assert result.certain
    assert result.confidence >= 0.85
    assert count(result, "paywall_phrases") > 0  # "Buy this article" sits in the sidebar
    for section in ("abstract", "introduction", "methods", "results", "discussion", "references"):
        assert section in result.sections
    assert result.reference_count == 22
    assert result.text_length > 5_000


def test_old_style_article_without_metadata_is_full_text() -> None:
    """Headings as <p><b>, references as paragraphs, no meta tags at all (2000s-era pages)."""
    result = assess_fixture("full_article_plain.html")
    assert result.is_full_text
    assert {"introduction", "methods", "results", "discussion"} <= set(result.sections)
    assert result.reference_count >= 15


def test_essay_without_paper_sections_is_full_text_by_its_paragraphs() -> None:
    """Numbered headings of its own, notes and a short reference list, and the whole page
    wrapped in a search <form> (as some old journal sites do): the form is not furniture."""
    result = assess_fixture("full_essay.html")
    assert result.is_full_text
    assert not {"introduction", "methods", "results"} & set(result.sections)
    assert count(result, "long_blocks") >= 12
    assert "What the office learned" in extract_text(fixture("full_essay.html"))


def test_reference_list_on_a_paywalled_page_does_not_make_it_full_text() -> None:
    result = assess_fixture("paywall.html")
    assert result.reference_count >= 15
    assert not result.is_full_text
    assert result.certain


def test_cookie_banner_on_a_landing_page_is_not_a_wall() -> None:
    result = assess_fixture("abstract_landing.html", base_url=LANDING_URL)
    assert count(result, "cookie_phrases") > 0
    assert result.content_type is ContentType.ABSTRACT_ONLY


def test_cloudflare_challenge_is_a_certain_wall() -> None:
    result = assess_fixture("cloudflare.html")
    assert result.certain
    assert count(result, "challenge_elements") > 0


def test_encyclopedia_entry_is_not_full_text() -> None:
    result = assess_fixture("encyclopedia.html")
    assert not result.is_full_text
    assert result.reference_count >= 15  # it has the apparatus, just not a paper's identity


def test_long_cited_prose_without_paper_identity_is_left_to_the_ai() -> None:
    """An encyclopedia-like page long enough to reach the full-text bar on prose and citations
    alone: no scholarly metadata and no paper sections, so it must not be accepted as certain."""
    html = fixture("encyclopedia.html")
    start, end = html.index("<h2>Morphology</h2>"), html.index("<h2>See also</h2>")
    long_html = html[:start] + html[start:end] * 8 + html[end:]
    result = assess_html(long_html)
    assert count(result, "full_text_points") >= 6
    assert not result.is_full_text
    assert not result.certain


def test_title_and_doi_match_raise_confidence_and_a_wrong_title_removes_certainty() -> None:
    right = assess_fixture(
        "full_article.html", title=ARTICLE_TITLE, doi=f"https://doi.org/{ARTICLE_DOI}"
    )
    assert right.signals["title_match"] is True
    assert right.signals["doi_match"] is True
    assert right.certain

    wrong = assess_fixture(
        "full_article.html", title="Grain boundary diffusion in nanocrystalline nickel alloys"
    )
    assert wrong.signals["title_match"] is False
    assert not wrong.certain
    assert wrong.confidence < right.confidence


def test_title_match_survives_case_punctuation_and_accents() -> None:
    result = assess_fixture(
        "full_article.html",
        title="SOIL MOISTURE MEMORY SHAPES SEEDLING SURVIVAL IN SEMI-ARID GRASSLANDS.",
    )
    assert result.signals["title_match"] is True


def test_assessment_is_immutable() -> None:
    result = assess_fixture("news.html")
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.is_full_text = True  # type: ignore[misc]


# --- extract_text ------------------------------------------------------------------------------


def test_extract_text_strips_navigation_and_boilerplate() -> None:
    text = extract_text(fixture("full_article.html"))
    assert "Seedling establishment is the bottleneck" in text
    assert "Materials and Methods" in text
    for furniture in (
        "Current issue",  # <nav>
        "Submit a manuscript",  # <nav> inside <header>
        "Privacy policy",  # <footer>
        "Related articles",  # <aside class="sidebar">
        "window.dataLayer",  # <script>
        "display:flex",  # <style>
        "Home >",  # breadcrumb
    ):
        assert furniture not in text, furniture


def test_extract_text_keeps_one_block_per_line_and_respects_max_chars() -> None:
    html = fixture("full_article.html")
    full = extract_text(html, max_chars=1_000_000)
    assert "\n" in full
    assert all(line == line.strip() and line for line in full.split("\n"))
    short = extract_text(html, max_chars=1_000)
    assert 500 < len(short) <= 1_000
    assert full.startswith(short)


def test_extract_text_joins_inline_markup_within_a_paragraph() -> None:
    html = "<p>Water <em>moves</em> through <a href='#'>soil</a> pores<sup>1</sup>.</p><p>Next.</p>"
    assert extract_text(html) == "Water moves through soil pores1.\nNext."


# --- PDF links ---------------------------------------------------------------------------------


def test_pdf_links_put_citation_pdf_url_first_and_resolve_relative_links() -> None:
    html = """
    <html><head>
      <meta name="citation_pdf_url" content="/content/article.pdf">
      <meta name="citation_title" content="A paper">
    </head><body>
      <a href="/about">About</a>
      <a href="../files/supplement.PDF?download=1">Supplement</a>
      <a href="/doi/pdf/10.5555/x">Download PDF</a>
      <a href="javascript:void(0)">PDF</a>
      <a href="/content/article.pdf">PDF (again)</a>
      <a href="https://cdn.example.net/reader?id=7">View PDF</a>
    </body></html>
    """
    result = assess_html(html, base_url="https://pub.example.org/journal/issue/article")
    assert result.pdf_links == (
        "https://pub.example.org/content/article.pdf",
        "https://pub.example.org/journal/files/supplement.PDF?download=1",
        "https://pub.example.org/doi/pdf/10.5555/x",
        "https://cdn.example.net/reader?id=7",
    )


def test_pdf_links_fall_back_to_the_pages_canonical_url() -> None:
    html = (
        '<html><head><link rel="canonical" href="https://site.example.com/a/b/page">'
        '</head><body><a href="paper.pdf">Full text</a></body></html>'
    )
    assert assess_html(html).pdf_links == ("https://site.example.com/a/b/paper.pdf",)


def test_relative_pdf_links_are_dropped_when_no_base_is_known() -> None:
    html = '<a href="/paper.pdf">PDF</a><a href="https://x.example.org/p.pdf">PDF</a>'
    assert assess_html(html).pdf_links == ("https://x.example.org/p.pdf",)


# --- PDF bytes and plain text ------------------------------------------------------------------


def build_pdf(pages: list[list[str]]) -> bytes:
    """A minimal valid PDF, written byte by byte: one Helvetica text line per list entry."""
    objects: list[bytes] = [b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    content_ids = []
    for lines in pages:
        ops = ["BT", "/F1 9 Tf", "11 TL", "40 800 Td"]
        for line in lines:
            escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(f"({escaped}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1", "replace")
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
        content_ids.append(len(objects))
    pages_id = len(objects) + len(pages) + 1
    page_ids = []
    for content_id in content_ids:
        objects.append(
            b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 595 842] /Contents %d 0 R "
            b"/Resources << /Font << /F1 1 0 R >> >> >>" % (pages_id, content_id)
        )
        page_ids.append(len(objects))
    kids = b" ".join(b"%d 0 R" % page_id for page_id in page_ids)
    objects.append(b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(page_ids)))
    objects.append(b"<< /Type /Catalog /Pages %d 0 R >>" % pages_id)
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        len(objects),
        xref,
    )
    return bytes(out)


def article_as_pdf_pages(lines_per_page: int = 70) -> list[list[str]]:
    """The full-article fixture typeset as a PDF would be: a header, lines wrapped at ~95."""
    lines = [f"Journal of Dryland Ecology (2021) https://doi.org/{ARTICLE_DOI}", ARTICLE_TITLE]
    for block in extract_text(fixture("full_article.html"), max_chars=100_000).splitlines():
        lines.extend(textwrap.wrap(block, 95))
    return [lines[i : i + lines_per_page] for i in range(0, len(lines), lines_per_page)]


def test_pdf_of_a_full_article_is_full_text() -> None:
    pages = article_as_pdf_pages()
    assert len(pages) >= 2
    result = assess_pdf_bytes(build_pdf(pages), title=ARTICLE_TITLE, doi=ARTICLE_DOI)
    assert result.content_type is ContentType.FULL_ARTICLE, result.reasoning
    assert result.recommendation is Recommendation.ACCEPT
    assert result.signals["title_match"] is True
    assert result.signals["doi_match"] is True
    assert "references" in result.sections
    assert result.reference_count >= 15


def test_pdf_reading_stops_at_max_pages() -> None:
    pages = article_as_pdf_pages(lines_per_page=25)
    data = build_pdf(pages)
    everything = assess_pdf_bytes(data)
    first_page = assess_pdf_bytes(data, max_pages=1)
    assert first_page.text_length < everything.text_length / 2
    assert not first_page.is_full_text


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not a pdf at all",
        b"%PDF-1.4\n1 0 obj << /Type /Catalog",
        os.urandom(4096),
        build_pdf([["Abstract", "A line of text."]])[:200],
    ],
)
def test_unreadable_pdf_is_unknown_and_never_raises(data: bytes) -> None:
    result = assess_pdf_bytes(data)
    assert result.content_type is ContentType.UNKNOWN
    assert not result.is_full_text
    assert not result.certain
    assert result.reasoning


def test_pdf_without_text_is_unknown() -> None:
    result = assess_pdf_bytes(build_pdf([[], []]))
    assert result.content_type is ContentType.UNKNOWN
    assert "2 pages but no text layer" in result.reasoning
    assert (result.signals["pdf_pages"], result.signals["pdf_text_layer"]) == (2, False)


def test_assess_text_of_a_short_abstract_is_not_full_text() -> None:
    text = "Abstract\n" + fixture("abstract_landing.html").split("<h2>Abstract</h2>")[1][:900]
    result = assess_text(text)
    assert not result.is_full_text
    assert "abstract" in result.sections


# --- the development set -----------------------------------------------------------------------

# The set is tests/fixtures/fulltext/dev (346 pages, 122 held out). Floors at what the
# heuristics reach today (all: precision 0.992, recall 0.977; tuned part: 1.0, 0.965; held out:
# 0.979, 1.0; no certain verdict wrong), so a regression fails; raise them as the heuristics
# improve (issue 15 aims at 0.98 / 0.95 held out).
DEV_MIN_PRECISION = 0.99
DEV_MIN_RECALL = 0.97
TUNED_MIN_PRECISION = 1.0
TUNED_MIN_RECALL = 0.96
HELD_OUT_MIN_PRECISION = 0.97
HELD_OUT_MIN_RECALL = 1.0


def test_dev_set_precision_and_recall() -> None:
    if not (DEFAULT_DATA / "labels.csv").is_file():
        pytest.skip(f"development set not found at {DEFAULT_DATA}")
    pages = load_pages(DEFAULT_DATA)
    results = run(pages)
    overall = scores(results)
    assert overall.precision >= DEV_MIN_PRECISION, overall
    assert overall.recall >= DEV_MIN_RECALL, overall
    held = held_out_ids(pages)
    tuned = scores(r for r in results if r.page.id not in held)
    assert tuned.precision >= TUNED_MIN_PRECISION, tuned
    assert tuned.recall >= TUNED_MIN_RECALL, tuned
    held_out = scores(r for r in results if r.page.id in held)
    assert held_out.precision >= HELD_OUT_MIN_PRECISION, held_out
    assert held_out.recall >= HELD_OUT_MIN_RECALL, held_out
    # A certain verdict skips the AI: none may be wrong, in either part.
    wrong = [r.page.id for r in results if r.assessment.certain and not right(r)]
    assert wrong == []


def test_held_out_split_is_stratified_and_stable() -> None:
    if not (DEFAULT_DATA / "labels.csv").is_file():
        pytest.skip(f"development set not found at {DEFAULT_DATA}")
    pages = load_pages(DEFAULT_DATA)
    held = held_out_ids(pages)
    assert held == held_out_ids(list(reversed(pages)))
    assert 0.2 <= len(held) / len(pages) <= 0.4
    assert {p.label for p in pages if p.id in held} == {p.label for p in pages}


# --- hostile and broken input ------------------------------------------------------------------


@pytest.mark.parametrize(
    "html",
    [
        "",
        "   \n\t ",
        "\x00" * 1000,
        "<html><body></body></html>",
        "<<<>>></p></div><div",
        os.urandom(200_000).decode("latin-1"),
        "\ufffd" * 10_000,
    ],
    ids=["empty", "blank", "nul", "empty-body", "broken-tags", "binary-junk", "replacement-chars"],
)
def test_junk_input_gives_a_negative_verdict(html: str) -> None:
    result = assess_html(html)
    assert not result.is_full_text
    assert result.content_type in (ContentType.NOT_ARTICLE, ContentType.UNKNOWN)
    assert isinstance(extract_text(html), str)


def test_five_megabyte_page_is_capped_and_fast() -> None:
    paragraph = "<div class='x'><p>" + "lorem ipsum dolor sit amet " * 40 + "</p></div>"
    html = "<html><body>" + paragraph * (5_000_000 // len(paragraph)) + "</body></html>"
    assert len(html) > 4_900_000
    start = time.perf_counter()
    result = assess_html(html)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.5, f"{elapsed:.2f} s"
    assert result.signals["input_truncated"] is True
    assert result.text_length < 3_000_000


@pytest.mark.parametrize(
    "html",
    [
        "<p>start</p>" + "<div>" * 100_000 + "deep" + "</div>" * 100_000,
        "<p>start</p>" + "<div><div></div>" * 60_000,
        "<table><tr><td>" * 20_000 + "cell",
        "<font size=2><b>text</b> " * 50_000,
    ],
    ids=["nested-divs", "interleaved-divs", "nested-tables", "unclosed-fonts"],
)
def test_deeply_nested_html_is_cut_and_fast(html: str) -> None:
    start = time.perf_counter()
    result = assess_html(html)
    text = extract_text(html)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"{elapsed:.2f} s"
    assert result.signals["input_truncated"] is True
    assert not result.is_full_text
    assert isinstance(text, str)


def test_huge_plain_text_is_bounded() -> None:
    text = ("A sentence of ordinary prose that goes on for a while. " * 20 + "\n") * 5_000
    start = time.perf_counter()
    result = assess_text(text)
    assert time.perf_counter() - start < 2.0
    assert result.signals["input_truncated"] is True
