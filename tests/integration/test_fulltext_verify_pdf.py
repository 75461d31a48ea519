"""`POST /v1/fulltext/verify` with `content_type: "pdf"`: real PDFs (tests/fixtures/pdf, see its
README) sent as base64 are judged by the same checks the tiers use - the text layer, the page
count, sections and references - and bad base64 is a 400 that says what to send."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from app.core.settings import LiteratureSettings
from app.main import create_app
from infra.sandbox.literature import AI_FULL_TEXT_VERDICT
from infra.sandbox.literature.client import LiteratureSandbox
from tests.support.client import gateway_client, verify
from tests.support.sandbox import Sandbox, sandbox_settings

Client = AsyncTestClient[Any]
PDFS = Path(__file__).resolve().parent.parent / "fixtures" / "pdf"
PROVIDERS = ("groq", "gemini", "azure", "openai")


@pytest.fixture
async def client(sandbox: Sandbox, lit: LiteratureSandbox) -> AsyncIterator[Client]:
    settings = sandbox_settings(sandbox.base_url, literature=LiteratureSettings(**lit.settings()))
    async with gateway_client(create_app(settings)) as test_client:
        yield test_client


def _b64(name: str) -> str:
    return base64.b64encode((PDFS / name).read_bytes()).decode("ascii")


async def test_a_real_article_pdf_is_accepted_without_the_ai(
    client: Client, sandbox: Sandbox
) -> None:
    verdict = await verify(client, content_type="pdf", content=_b64("article.pdf"))
    assert (verdict["is_full_text"], verdict["content_type"]) == (True, "full_article")
    assert (verdict["recommendation"], verdict["certain"], verdict["needs_review"]) == (
        "accept",
        True,
        False,
    )
    assert {"introduction", "references"} <= set(verdict["sections"])
    assert "8 PDF pages" in verdict["reasoning"]
    assert sum(sandbox.completions(p) for p in PROVIDERS) == 0


async def test_a_one_page_abstract_pdf_is_not_full_text(client: Client) -> None:
    verdict = await verify(
        client, content_type="pdf", content=_b64("one_page_abstract.pdf"), skip_ai=True
    )
    assert verdict["is_full_text"] is False
    assert verdict["recommendation"] != "accept"
    assert "1 PDF page" in verdict["reasoning"]


async def test_a_scanned_pdf_without_a_text_layer_is_review_not_accept(
    client: Client, sandbox: Sandbox
) -> None:
    sandbox.chaos("groq", content=AI_FULL_TEXT_VERDICT)
    for skip_ai in (True, False):
        verdict = await verify(
            client, content_type="pdf", content=_b64("scanned.pdf"), skip_ai=skip_ai
        )
        assert (verdict["is_full_text"], verdict["content_type"]) == (False, "unknown")
        assert (verdict["recommendation"], verdict["certain"], verdict["needs_review"]) == (
            "review",
            False,
            True,
        )
        assert "no text layer" in verdict["reasoning"]
    # Nothing to show a model: no AI call is made for an empty sample.
    assert sum(sandbox.completions(p) for p in PROVIDERS) == 0


async def test_wrapped_base64_is_read(client: Client) -> None:
    encoded = _b64("article.pdf")
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    verdict = await verify(client, content_type="pdf", content=wrapped)
    assert verdict["is_full_text"] is True


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("%PDF-1.4 not base64 at all!", "not valid base64"),
        ("JVBERi0xLjQ", "not valid base64"),  # padding missing
        ("w6k=" * 3 + "é", "not valid base64"),
        (base64.b64encode(b"<html><body>a page</body></html>").decode(), "not to a PDF"),
    ],
)
async def test_bad_base64_is_a_clear_400(client: Client, content: str, words: str) -> None:
    response = await client.post(
        "/v1/fulltext/verify", json={"content": content, "content_type": "pdf"}
    )
    assert response.status_code == 400, response.text
    problem = response.json()
    assert words in problem["detail"]
    assert "content_type pdf" in problem["detail"]
