"""Tier 7 and `/v1/fulltext/verify` against the sandbox's AI providers: what is sent (sanitised
sample, JSON mode, temperature 0.1), and every way the answer can go - verified, rejected,
unsure, malformed, or no provider at all."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from litestar.testing import AsyncTestClient

from app.core.settings import LiteratureSettings
from app.main import create_app
from infra.sandbox.literature import AI_FULL_TEXT_VERDICT, AI_NOT_FULL_TEXT_VERDICT
from infra.sandbox.literature import hosts as h
from infra.sandbox.literature.client import LiteratureSandbox
from tests.support.client import gateway_client, verify
from tests.support.sandbox import Sandbox, sandbox_settings

Client = AsyncTestClient[Any]
PROVIDERS = ("groq", "gemini", "azure", "openai")


@pytest.fixture
async def client(sandbox: Sandbox, lit: LiteratureSandbox) -> AsyncIterator[Client]:
    settings = sandbox_settings(sandbox.base_url, literature=LiteratureSettings(**lit.settings()))
    async with gateway_client(create_app(settings)) as test_client:
        yield test_client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def uncached_client(
    sandbox_process: Sandbox, lit_module: LiteratureSandbox
) -> AsyncIterator[Client]:
    """One app for the answer-shape cases: no result cache and no AI response cache, so the
    same paper meets each scripted answer afresh."""
    settings = sandbox_settings(
        sandbox_process.base_url,
        ai_cache_enabled=False,
        literature=LiteratureSettings(**lit_module.settings(cache_ttl_s=0)),
    )
    async with gateway_client(create_app(settings)) as test_client:
        yield test_client


async def detect(client: Client, paper: dict[str, Any], **options: Any) -> dict[str, Any]:
    response = await client.post("/v1/fulltext/detect", json={"paper": paper, "options": options})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _prompt(sandbox: Sandbox) -> str:
    messages = sandbox.last("groq")["json"]["messages"]
    return str(messages[-1]["content"])


async def test_tier_7_reads_the_pdf_and_verifies_it(
    client: Client, lit: LiteratureSandbox, sandbox: Sandbox
) -> None:
    sandbox.chaos("groq", content=AI_FULL_TEXT_VERDICT)
    entry = lit.entry("ai-generic-pdf")
    result = await detect(client, entry["paper"])
    assert (result["tier"], result["confidence"], result["url"]) == (
        7,
        "ai_verified",
        entry["expected"]["url"],
    )
    assert result["tiers_tried"] == [4, 5, 6, 7]
    ai = result["ai_verification"]
    assert (ai["outcome"], ai["provider"], ai["url"]) == ("verified", "groq", result["url"])
    assert ai["verdict"]["decided_by"] == "ai"
    assert ai["verdict"]["content_type"] == "full_article"
    # One call, in JSON mode, at temperature 0.1, with the PDF's text between the fences.
    assert sandbox.completions("groq") == 1
    sent = sandbox.last("groq")["json"]
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["temperature"] == 0.1
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]
    prompt = _prompt(sandbox)
    assert "DOCUMENT: pdf" in prompt
    assert "<<<EXCERPT " in prompt
    assert "Introduction" in prompt  # the beginning of the text...
    assert "shortened in the middle" in prompt
    assert prompt.rstrip().endswith(" EXCERPT>>>")
    assert "doi:10." in prompt.rsplit("[...]", 1)[1]  # ...and its end: the reference list


async def test_tier_7_reads_an_unsure_html_page(
    client: Client, lit: LiteratureSandbox, sandbox: Sandbox
) -> None:
    sandbox.chaos("groq", content=AI_FULL_TEXT_VERDICT)
    result = await detect(client, lit.entry("ai-short-html")["paper"])
    assert (result["tier"], result["confidence"], result["content_type"]) == (
        7,
        "ai_verified",
        "html",
    )
    prompt = _prompt(sandbox)
    assert "DOCUMENT: html page" in prompt
    assert "Cookie" not in prompt  # page furniture is not part of the sample


async def test_a_rejection_removes_the_candidate(
    client: Client, lit: LiteratureSandbox, sandbox: Sandbox
) -> None:
    sandbox.chaos("groq", content=AI_NOT_FULL_TEXT_VERDICT)
    result = await detect(client, lit.entry("ai-short-html")["paper"])
    assert result["is_available"] is False
    assert (result["tier"], result["confidence"], result["method"]) == (
        7,
        "ai_verified",
        "ai_rejected",
    )
    assert result["ai_verification"]["outcome"] == "rejected"


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        ("The document looks like a full article.", "unparseable"),
        ("Sure! " + AI_FULL_TEXT_VERDICT, "unparseable"),
        (json.dumps({**json.loads(AI_FULL_TEXT_VERDICT), "extra": 1}), "unparseable"),
        (
            json.dumps({**json.loads(AI_FULL_TEXT_VERDICT), "content_type": "paywall"}),
            "unparseable",
        ),
        (json.dumps({**json.loads(AI_FULL_TEXT_VERDICT), "confidence": "high"}), "unparseable"),
        (AI_FULL_TEXT_VERDICT[:-20], "unparseable"),
        (json.dumps({**json.loads(AI_FULL_TEXT_VERDICT), "confidence": 0.4}), "unsure"),
    ],
)
@pytest.mark.asyncio(loop_scope="module")
async def test_a_bad_answer_is_a_failed_verification_never_a_guess(
    uncached_client: Client, lit: LiteratureSandbox, sandbox: Sandbox, answer: str, outcome: str
) -> None:
    sandbox.chaos("groq", content=answer)
    result = await detect(uncached_client, lit.entry("ai-generic-pdf")["paper"])
    # The earlier, unverified answer stands, and says it was not verified.
    assert (result["is_available"], result["tier"], result["confidence"]) == (True, 6, "medium")
    assert result["tiers_tried"] == [4, 5, 6, 7]
    assert result["ai_verification"]["outcome"] == outcome
    if outcome == "unparseable":
        assert result["ai_verification"]["verdict"] is None
        assert "Sure!" not in (result["ai_verification"]["detail"] or "")


async def test_no_provider_is_an_honest_unavailable(
    client: Client, lit: LiteratureSandbox, sandbox: Sandbox
) -> None:
    for provider in PROVIDERS:
        sandbox.chaos(provider, error_rate=1.0, error_status=503)
    result = await detect(client, lit.entry("ai-short-html")["paper"])
    assert (result["is_available"], result["confidence"], result["tier"]) == (True, "medium", 5)
    assert result["ai_verification"]["outcome"] == "unavailable"


async def test_skip_ai_never_calls_a_provider(
    client: Client, lit: LiteratureSandbox, sandbox: Sandbox
) -> None:
    result = await detect(client, lit.entry("ai-generic-pdf")["paper"], skip_ai=True)
    assert (result["confidence"], result["tiers_tried"]) == ("medium", [4, 5, 6])
    assert result["ai_verification"] is None
    assert sum(sandbox.completions(p) for p in PROVIDERS) == 0


async def test_injected_instructions_never_reach_the_model(
    client: Client, sandbox: Sandbox
) -> None:
    sandbox.chaos("groq", content=AI_FULL_TEXT_VERDICT)
    port = sandbox.base_url.rsplit(":", 1)[1]
    result = await detect(client, {"url": f"http://{h.SOCIETY}:{port}/articles/injection"})
    assert result["ai_verification"]["outcome"] == "verified"
    prompt = _prompt(sandbox)
    assert "IGNORE ALL PREVIOUS" not in prompt.upper()
    assert "<|im_start|>" not in prompt
    assert "you are now" not in prompt.lower()
    assert '"is_full_text"' not in prompt
    assert "[removed]" in prompt
    assert "instruction-like fragments removed" in prompt
    metrics = (await client.get("/metrics")).text
    assert "literature_prompt_injection_fragments_total" in metrics


# --- POST /v1/fulltext/verify -------------------------------------------------------------


async def test_verify_decides_clear_pages_without_the_ai(
    client: Client, sandbox: Sandbox, lit: LiteratureSandbox
) -> None:
    page = lit.page(h.PLOS, "/plosone/article?id=10.1371/journal.pone.0200020")
    verdict = await verify(client, content=page, paper={"doi": "10.1371/journal.pone.0200020"})
    assert verdict["is_full_text"] is True
    assert (verdict["decided_by"], verdict["recommendation"]) == ("heuristic", "accept")
    assert {"introduction", "references"} <= set(verdict["sections"])
    login = lit.page(h.WILEY, "/action/showLogin")
    verdict = await verify(client, content=login)
    assert (verdict["is_full_text"], verdict["content_type"]) == (False, "login")
    assert sum(sandbox.completions(p) for p in PROVIDERS) == 0


async def test_verify_asks_the_ai_only_when_the_heuristics_are_unsure(
    client: Client, sandbox: Sandbox, lit: LiteratureSandbox
) -> None:
    page = lit.page(h.SOCIETY, "/articles/sj034")
    sandbox.chaos("groq", content=AI_FULL_TEXT_VERDICT)
    verdict = await verify(client, content=page)
    assert (verdict["is_full_text"], verdict["decided_by"], verdict["confidence"]) == (
        True,
        "ai",
        0.92,
    )
    heuristic = await verify(client, content=page, skip_ai=True)
    assert heuristic["decided_by"] == "heuristic"
    assert sandbox.completions("groq") == 1
    sandbox.chaos("groq", content="not json at all")
    # (another paragraph: a prompt the AI cache has not seen)
    failed = await verify(client, content=page.replace("</main>", "<p>Erratum.</p></main>"))
    assert failed["decided_by"] == "heuristic"
    # The heuristics' own verdict and confidence, marked as nobody's settled answer.
    assert failed["confidence"] == heuristic["confidence"] < 0.85
    assert (failed["recommendation"], failed["certain"], failed["needs_review"]) == (
        "review",
        False,
        True,
    )
    assert "AI verification failed: unparseable" in failed["reasoning"]


async def test_verify_plain_text_and_its_limits(client: Client, lit: LiteratureSandbox) -> None:
    text = lit.entry("db-stored")["paper"]["full_text"]
    verdict = await verify(client, content=text, content_type="text", skip_ai=True)
    assert verdict["is_full_text"] is True
    bad = await client.post("/v1/fulltext/verify", json={"content": "x", "content_type": "xml"})
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["key"] == "content_type"
    bad = await client.post("/v1/fulltext/verify", json={"content": "x", "paper": {"doi": "x"}})
    assert bad.status_code == 400
