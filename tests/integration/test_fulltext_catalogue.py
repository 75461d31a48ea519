"""The issue's "done" criteria: a batch of the sandbox catalogue gives the expected answers; and
content verification holds up on the labelled development set."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from app.core.settings import LiteratureSettings
from app.main import create_app
from bench.fulltext_quality import load_pages, read_html
from infra.sandbox.literature import AI_FULL_TEXT_VERDICT
from infra.sandbox.literature.client import LiteratureSandbox
from tests.support.client import gateway_client
from tests.support.sandbox import Sandbox, sandbox_settings

ROOT = Path(__file__).resolve().parents[2]
DEV_SET = ROOT / "tests" / "fixtures" / "fulltext" / "dev"


async def test_the_catalogue_batch_gives_the_expected_answers(sandbox: Sandbox) -> None:
    lit = LiteratureSandbox(sandbox.base_url)
    try:
        lit.reset()
        catalogue = lit.catalogue()
        entries = catalogue["papers"]
        sandbox.chaos("groq", content=catalogue["ai_full_text_verdict"])
        assert catalogue["ai_full_text_verdict"] == AI_FULL_TEXT_VERDICT
        settings = sandbox_settings(
            sandbox.base_url, literature=LiteratureSettings(**lit.settings())
        )
        async with gateway_client(create_app(settings)) as client:
            response = await client.post(
                "/v1/fulltext/detect/batch", json={"papers": [e["paper"] for e in entries]}
            )
    finally:
        lit.close()
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(entries) >= 30
    wrong: list[str] = []
    for entry, result in zip(entries, results, strict=True):
        expected: dict[str, Any] = entry["expected"]
        got = {
            "is_available": result["is_available"],
            "tier": result["tier"] if result["is_available"] else None,
            "content_type": result["content_type"],
            "url": result["url"],
        }
        if got != expected:
            wrong.append(f"{entry['id']}: expected {expected}, got {got} ({result['method']})")
    assert wrong == []
    decided = Counter(r["tier"] for r in results if r["is_available"])
    assert set(decided) == {1, 2, 3, 4, 5, 6, 7}  # every tier decides some paper


def _dev_set() -> list[tuple[str, str, str]]:
    if not (DEV_SET / "labels.csv").exists():
        return []
    return [(page.id, page.label, read_html(page.path)) for page in load_pages(DEV_SET)]


@pytest.mark.skipif(not _dev_set(), reason="the shared development set is not on this machine")
async def test_verification_on_the_development_set(sandbox: Sandbox) -> None:
    """Every labelled page through `POST /v1/fulltext/verify`: the yes/no and the content type
    match the label on nearly every page, and the AI is asked about few of them."""
    settings = sandbox_settings(sandbox.base_url)
    right = 0
    wrong: list[str] = []
    pages = _dev_set()
    async with gateway_client(create_app(settings)) as client:
        for page_id, label, html in pages:
            response = await client.post("/v1/fulltext/verify", json={"content": html})
            assert response.status_code == 200, page_id
            verdict = response.json()
            expected = {
                "full_article": {"full_article"},
                "abstract_only": {"abstract_only", "metadata"},
                "paywall_or_login": {"paywall", "login"},
                "not_article": {"not_article"},
            }[label]
            right += verdict["content_type"] in expected
            if verdict["is_full_text"] != (label == "full_article"):
                wrong.append(page_id)
    # 346 pages: four are a miss today, all uncertain verdicts the sandbox's AI did not turn:
    # a held-out bioRxiv abstract tab read as full text; a Nature Comment, a Science
    # Perspective and an AMS corrigendum (short, referenced, no sections) read as not full text.
    assert len(wrong) <= 4, wrong
    assert right / len(pages) >= 0.95, right / len(pages)
    assert sandbox.completions("groq") <= len(pages) // 10
