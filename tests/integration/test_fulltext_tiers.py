"""Each tier of the waterfall against the sandbox (real HTTP, real guard, real pages), the early
stop, options that shape the waterfall, and candidates carried from one tier to the next."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from litestar.testing import AsyncTestClient

from app.core.settings import LiteratureSettings, Settings
from app.main import create_app
from infra.sandbox.literature import AI_FULL_TEXT_VERDICT
from infra.sandbox.literature import hosts as h
from infra.sandbox.literature.catalogue.real_pdfs import HOST as REAL_PDF_HOST
from infra.sandbox.literature.catalogue.real_pdfs import REAL_PDFS
from infra.sandbox.literature.client import LiteratureSandbox
from tests.support.client import gateway_client
from tests.support.sandbox import Sandbox, sandbox_settings

Client = AsyncTestClient[Any]


def _app_settings(sandbox: Sandbox, lit: LiteratureSandbox) -> Settings:
    return sandbox_settings(sandbox.base_url, literature=LiteratureSettings(**lit.settings()))


@pytest.fixture
async def client(sandbox: Sandbox, lit: LiteratureSandbox) -> AsyncIterator[Client]:
    async with gateway_client(create_app(_app_settings(sandbox, lit))) as test_client:
        yield test_client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_client(
    sandbox_process: Sandbox, lit_module: LiteratureSandbox
) -> AsyncIterator[Client]:
    """One app for the read-only checks below (starting an app per case costs more than the
    case); its result cache is off so every case runs the waterfall."""
    settings = sandbox_settings(
        sandbox_process.base_url,
        literature=LiteratureSettings(**lit_module.settings(cache_ttl_s=0)),
    )
    async with gateway_client(create_app(settings)) as test_client:
        yield test_client


async def detect(client: Client, paper: dict[str, Any], **options: Any) -> dict[str, Any]:
    response = await client.post("/v1/fulltext/detect", json={"paper": paper, "options": options})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize(
    "entry_id",
    [
        "db-stored",  # 1: stored text
        "db-stored-pdf",
        "direct-pdf",  # 2: known PDF URLs
        "direct-octet",
        "pmc-basic",  # 3: PMC
        "pmc-from-pmid",
        "pmc-scanned",
        "up-publisher-pdf",  # 4: Unpaywall
        "up-first-broken",
        "up-landing-only",
        "pub-plos",  # 5: publisher pages
        "pub-elsevier-oa",
        "pub-medrxiv-pdf",
        "pub-arxiv-pdf",
        "pub-ojs-pdf",
        "pub-url-only",
        "sec-arxiv",  # 6: secondary links
        "sec-citation-pdf",
        "sec-author-version",
    ],
)
@pytest.mark.asyncio(loop_scope="module")
async def test_each_tier_decides_its_papers(
    shared_client: Client, lit_module: LiteratureSandbox, entry_id: str
) -> None:
    entry = lit_module.entry(entry_id)
    expected = entry["expected"]
    result = await detect(shared_client, entry["paper"])
    assert result["paper_id"] == entry_id
    assert result["is_available"] is True
    assert (result["tier"], result["url"], result["content_type"]) == (
        expected["tier"],
        expected["url"],
        expected["content_type"],
    )
    assert result["confidence"] == "high"
    assert result["tiers_tried"][-1] == expected["tier"]
    assert result["duration_ms"] > 0


async def test_the_database_tier_makes_no_request(client: Client, lit: LiteratureSandbox) -> None:
    result = await detect(client, lit.entry("db-stored-pdf")["paper"])
    assert (result["tier"], result["method"], result["tiers_tried"]) == (
        1,
        "stored_full_text",
        [1],
    )
    assert lit.stats()["total"] == 0


async def test_the_waterfall_stops_at_the_first_confident_answer(
    client: Client, lit: LiteratureSandbox
) -> None:
    paper = {**lit.entry("direct-pdf")["paper"], "doi": "10.1371/journal.pone.0200020"}
    result = await detect(client, paper)
    assert (result["tier"], result["tiers_tried"]) == (2, [2])
    # Nothing from the later tiers was asked: no Unpaywall, no doi.org, no publisher.
    assert lit.requests(h.UNPAYWALL) == 0
    assert lit.requests(h.DOI_RESOLVER) == 0
    assert lit.requests(h.PLOS) == 0
    pmc = await detect(client, lit.entry("pmc-with-doi")["paper"])
    assert (pmc["tier"], pmc["tiers_tried"]) == (3, [3])
    assert lit.requests(h.UNPAYWALL) == 0


async def test_tiers_without_their_inputs_are_not_tried(
    client: Client, lit: LiteratureSandbox
) -> None:
    result = await detect(client, lit.entry("pub-url-only")["paper"])
    assert result["tiers_tried"] == [5]  # no full text, PDF URL, PMCID or DOI


async def test_a_failing_tier_hands_over_to_the_next(
    client: Client, lit: LiteratureSandbox
) -> None:
    # The PDF link is gone (404), Unpaywall knows the publisher's PDF.
    result = await detect(client, lit.entry("direct-404-up")["paper"])
    assert (result["tier"], result["tiers_tried"]) == (4, [2, 4])
    # The open_access_pdf leads to a login page; the publisher's own page is open.
    result = await detect(client, lit.entry("direct-login-pub")["paper"])
    assert (result["tier"], result["tiers_tried"]) == (5, [2, 4, 5])


async def test_candidates_found_on_one_tier_are_followed_on_the_next(
    client: Client, lit: LiteratureSandbox
) -> None:
    entry = lit.entry("sec-repository")
    result = await detect(client, entry["paper"])
    assert (result["tier"], result["method"], result["url"]) == (
        6,
        "citation_pdf_url",
        entry["expected"]["url"],
    )
    # Tier 5 found the repository link on the paywalled page; tier 6 opened the repository
    # record (depth 1) and took its citation_pdf_url (depth 2).
    assert lit.path_requests(h.REPOSITORY, "/handle/1234/2030") == 1
    assert result["tiers_tried"] == [4, 5, 6]


async def test_alternatives_list_the_other_known_copies(
    client: Client, lit: LiteratureSandbox
) -> None:
    result = await detect(client, lit.entry("pub-plos")["paper"])
    assert result["content_type"] == "html"
    assert any("type=printable" in url for url in result["alternative_urls"])
    assert result["url"] not in result["alternative_urls"]


@pytest.mark.parametrize(
    ("options", "tried", "available"),
    [
        ({"skip_tiers": [5]}, [4, 6], False),
        ({"max_tier": 4}, [4], False),
        ({"skip_tiers": [4]}, [5], True),
    ],
)
async def test_options_shape_the_waterfall(
    client: Client,
    lit: LiteratureSandbox,
    options: dict[str, Any],
    tried: list[int],
    available: bool,
) -> None:
    result = await detect(client, lit.entry("pub-plos")["paper"], **options)
    assert result["tiers_tried"] == [t for t in result["tiers_tried"] if t in tried]
    assert set(result["tiers_tried"]) <= set(tried)
    assert result["is_available"] is available


async def test_a_lower_wanted_confidence_stops_earlier_and_skips_the_ai(
    client: Client, lit: LiteratureSandbox, sandbox: Sandbox
) -> None:
    sandbox.chaos("groq", content=AI_FULL_TEXT_VERDICT)
    paper = lit.entry("ai-short-html")["paper"]
    medium = await detect(client, paper, min_confidence="medium")
    assert (medium["tier"], medium["confidence"], medium["tiers_tried"]) == (5, "medium", [5])
    assert medium["ai_verification"] is None
    assert sandbox.completions("groq") == 0
    high = await detect(client, paper)
    assert (high["tier"], high["confidence"]) == (7, "ai_verified")
    assert sandbox.completions("groq") == 1


async def test_negative_answers_say_why(client: Client, lit: LiteratureSandbox) -> None:
    paywall = await detect(client, lit.entry("neg-paywall")["paper"])
    assert paywall["is_available"] is False
    # Certain paywall page, and Unpaywall knows the DOI as closed.
    assert (paywall["confidence"], paywall["method"]) == ("high", "publisher_paywall")
    assert paywall["url"] is None
    assert paywall["alternative_urls"] == []
    unknown = await detect(client, lit.entry("neg-doi-unknown")["paper"])
    assert (unknown["confidence"], unknown["method"]) == ("low", "doi_not_found")
    down = await detect(client, lit.entry("neg-publisher-down")["paper"])
    assert down["method"] == "publisher_http_503"


ARTICLE_TITLE = "Bi-criteria Algorithm for Scheduling Jobs on Cluster Platforms"
ABSTRACT_TITLE = "Interference of single photons from dissimilar single photon sources"


@pytest.mark.parametrize(
    ("name", "title", "confidence"),
    [
        # 8 pages with a text layer, larger than the probe (so it is read whole): the paper
        ("article", ARTICLE_TITLE, "high"),
        # the same file for a paper of another title: a PDF, but perhaps not this paper's
        ("article", "Urban tree canopy and land-surface temperature", "medium"),
        # an image without a text layer: nothing can be checked
        ("scanned", "Coral bleaching surveys, 1998", "low"),
        # a one-page conference abstract
        ("one_page_abstract", ABSTRACT_TITLE, "low"),
    ],
)
@pytest.mark.asyncio(loop_scope="module")
async def test_a_fetched_pdf_is_checked_like_verify_checks_it(
    shared_client: Client, sandbox_process: Sandbox, name: str, title: str, confidence: str
) -> None:
    """Real PDFs (tests/fixtures/pdf) behind a paper's pdf_url: a PDF is high confidence only
    when its own text reads as a certain full text of that paper (page count, text layer,
    sections, references, title), not because the body starts with %PDF-."""
    port = sandbox_process.base_url.rsplit(":", 1)[1].strip("/")
    url = f"http://{REAL_PDF_HOST}:{port}{REAL_PDFS[name]}"
    paper = {"id": f"real-{name}", "title": title, "pdf_url": url}
    result = await detect(shared_client, paper, skip_ai=True)
    assert (result["tier"], result["url"], result["content_type"]) == (2, url, "pdf")
    assert result["confidence"] == confidence
    assert result["certain"] is (confidence == "high")
    assert result["needs_review"] is (confidence != "high")
