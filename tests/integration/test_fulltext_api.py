"""The HTTP surface of full-text detection: input validation as problem+json, batch limits,
NDJSON streaming, the overall batch deadline, the result cache, coalescing duplicates, and the
metrics (with bounded labels only)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from app.core.settings import LiteratureSettings
from app.main import create_app
from infra.sandbox.literature import hosts as h
from infra.sandbox.literature.client import LiteratureSandbox
from tests.support.client import gateway_client
from tests.support.sandbox import Sandbox, sandbox_settings

Client = AsyncTestClient[Any]
BATCH_MAX = 8


async def _app(
    sandbox: Sandbox, lit: LiteratureSandbox, **literature: Any
) -> AsyncIterator[Client]:
    options = {"batch_max_size": BATCH_MAX, **literature}
    settings = sandbox_settings(
        sandbox.base_url, literature=LiteratureSettings(**lit.settings(**options))
    )
    async with gateway_client(create_app(settings)) as client:
        yield client


@pytest.fixture
async def client(sandbox: Sandbox, lit: LiteratureSandbox) -> AsyncIterator[Client]:
    async for test_client in _app(sandbox, lit):
        yield test_client


def _papers(lit: LiteratureSandbox, *ids: str) -> list[dict[str, Any]]:
    return [lit.entry(i)["paper"] for i in ids]


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "key", "says"),
    [
        ({"paper": {"doi": "11.1234/x"}}, "paper.doi", "10.<registrant>/<suffix>"),
        ({"paper": {"title": "Only a title"}}, "paper", "at least one of doi"),
        ({"paper": {"pmcid": "PMCabc"}}, "paper.pmcid", "PMC4267813"),
        ({"paper": {"pmid": "12x"}}, "paper.pmid", "digits"),
        ({"paper": {"url": "ftp://x.org/a"}}, "paper.url", "http(s)"),
        ({"paper": {"doi": "10.1234/x"}, "options": {"max_tier": 9}}, "options.max_tier", ""),
        ({"paper": {"doi": "10.1234/x"}, "options": {"skip_tier": [1]}}, "options.skip_tier", ""),
        ({"paper": {"doi": "10.1234/x"}, "options": {"min_confidence": "sure"}}, "", "min_conf"),
        ({"papers": [{"doi": "10.1234/x"}]}, "papers", ""),
    ],
)
async def test_bad_input_is_a_400_saying_what_to_fix(
    client: Client, body: dict[str, Any], key: str, says: str
) -> None:
    response = await client.post("/v1/fulltext/detect", json=body)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["type"].endswith("/invalid-request")
    assert says in problem["detail"]
    if key:
        assert key in [e["key"] for e in problem["errors"]]


async def test_a_paper_echoes_its_id_or_gets_one(client: Client, lit: LiteratureSandbox) -> None:
    paper = {
        "id": 42,
        "doi": "https://doi.org/10.5555/DB.0001",
        "full_text": "x" * 6000,
        "full_text_status": "available",
        "authors": ["extra fields are ignored"],
    }
    result = (await client.post("/v1/fulltext/detect", json={"paper": paper})).json()
    assert result["paper_id"] == "42"
    del paper["id"]
    result = (await client.post("/v1/fulltext/detect", json={"paper": paper})).json()
    assert result["paper_id"] == "10.5555/db.0001"


async def test_routes_need_a_caller_key(sandbox: Sandbox, lit: LiteratureSandbox) -> None:
    settings = sandbox_settings(sandbox.base_url, literature=LiteratureSettings(**lit.settings()))
    async with AsyncTestClient(app=create_app(settings)) as anonymous:
        for path in ("/v1/fulltext/detect", "/v1/fulltext/detect/batch", "/v1/fulltext/verify"):
            assert (await anonymous.post(path, json={})).status_code == 401


# --- batches ----------------------------------------------------------------------------------


async def test_a_batch_answers_every_paper_in_order(client: Client, lit: LiteratureSandbox) -> None:
    ids = ["pmc-basic", "db-stored", "neg-doi-unknown", "pub-plos"]
    response = await client.post("/v1/fulltext/detect/batch", json={"papers": _papers(lit, *ids)})
    assert response.status_code == 200
    body = response.json()
    assert [r["paper_id"] for r in body["results"]] == ids
    assert [r["tier"] for r in body["results"]] == [3, 1, 5, 5]
    summary = body["summary"]
    assert (summary["total"], summary["available"], summary["errors"]) == (4, 3, 0)
    assert summary["by_tier"] == {"1": 1, "3": 1, "5": 1, "none": 1}


async def test_a_batch_over_the_limit_is_a_413(client: Client, lit: LiteratureSandbox) -> None:
    papers = _papers(lit, "db-stored") * (BATCH_MAX + 1)
    response = await client.post("/v1/fulltext/detect/batch", json={"papers": papers})
    assert response.status_code == 413
    problem = response.json()
    assert problem["type"].endswith("/batch-too-large")
    assert f"at most {BATCH_MAX}" in problem["detail"]
    assert lit.stats()["total"] == 0
    response = await client.post("/v1/fulltext/detect/batch", json={"papers": []})
    assert response.status_code == 400


async def test_one_bad_paper_names_its_index(client: Client, lit: LiteratureSandbox) -> None:
    papers = [*_papers(lit, "db-stored", "pmc-basic"), {"doi": "not-a-doi"}]
    response = await client.post("/v1/fulltext/detect/batch", json={"papers": papers})
    assert response.status_code == 400
    assert "papers.2.doi" in [e["key"] for e in response.json()["errors"]]


async def test_a_batch_streams_results_as_they_complete(
    client: Client, lit: LiteratureSandbox
) -> None:
    ids = ["db-stored", "direct-pdf", "pmc-basic", "up-publisher-pdf", "pub-plos", "neg-news"]
    lines: list[dict[str, Any]] = []
    async with client.stream(
        "POST",
        "/v1/fulltext/detect/batch",
        json={"papers": _papers(lit, *ids)},
        headers={"Accept": "application/x-ndjson"},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        async for line in response.aiter_lines():
            if line.strip():
                lines.append(json.loads(line))
    results = [e for e in lines if e["type"] == "result"]
    progress = [e for e in lines if e["type"] == "progress"]
    assert sorted(e["index"] for e in results) == list(range(len(ids)))
    assert {e["result"]["paper_id"] for e in results} == set(ids)
    assert [p["completed"] for p in progress] == list(range(1, len(ids) + 1))
    assert progress[-1] == {"type": "progress", "completed": 6, "total": 6, "available": 5}
    assert lines[-1]["type"] == "summary"
    assert lines[-1]["total"] == 6
    # The database answer (no I/O) comes out before the publisher's (several requests).
    order = [e["result"]["paper_id"] for e in results]
    assert order.index("db-stored") < order.index("pub-plos")


async def test_the_batch_deadline_answers_for_unfinished_papers(
    sandbox: Sandbox, lit: LiteratureSandbox
) -> None:
    lit.fault(h.PLOS, hang=True)
    async for client in _app(sandbox, lit, batch_deadline_s=0.5):
        started = time.perf_counter()
        response = await client.post(
            "/v1/fulltext/detect/batch", json={"papers": _papers(lit, "pub-plos", "db-stored")}
        )
        elapsed = time.perf_counter() - started
        body = response.json()
        stuck, done = body["results"]
        assert (stuck["paper_id"], stuck["error"], stuck["is_available"]) == (
            "pub-plos",
            "deadline_exceeded",
            False,
        )
        assert (done["tier"], done["error"]) == (1, None)
        assert body["summary"]["errors"] == 1
        assert elapsed < 3


async def test_concurrency_is_bounded(sandbox: Sandbox, lit: LiteratureSandbox) -> None:
    lit.fault(h.PMC, latency_ms=100)
    ids = ["pmc-basic", "pmc-with-doi", "db-short-pmc", "pmc-scanned"]
    async for client in _app(sandbox, lit, batch_concurrency=1):
        started = time.perf_counter()
        await client.post("/v1/fulltext/detect/batch", json={"papers": _papers(lit, *ids)})
        one_at_a_time = time.perf_counter() - started
    lit.reset()
    lit.fault(h.PMC, latency_ms=100)
    async for client in _app(sandbox, lit, batch_concurrency=4):
        started = time.perf_counter()
        await client.post("/v1/fulltext/detect/batch", json={"papers": _papers(lit, *ids)})
        all_at_once = time.perf_counter() - started
    assert one_at_a_time >= 4 * 0.1
    assert all_at_once < one_at_a_time * 0.7


# --- cache, coalescing, metrics --------------------------------------------------------------


async def test_results_are_cached_per_paper(client: Client, lit: LiteratureSandbox) -> None:
    paper = lit.entry("pub-plos")["paper"]
    first = (await client.post("/v1/fulltext/detect", json={"paper": paper})).json()
    requests = lit.stats()["total"]
    again = {**paper, "id": "same-paper-other-id"}
    second = (await client.post("/v1/fulltext/detect", json={"paper": again})).json()
    assert (first["cached"], second["cached"]) == (False, True)
    assert second["paper_id"] == "same-paper-other-id"
    assert (second["url"], second["tier"]) == (first["url"], first["tier"])
    assert lit.stats()["total"] == requests
    metrics = (await client.get("/metrics")).text
    assert 'literature_cache_requests_total{result="hit"} 1.0' in metrics
    assert 'literature_cache_requests_total{result="miss"} 1.0' in metrics


async def test_answers_spoiled_by_a_passing_failure_are_not_cached(
    client: Client, lit: LiteratureSandbox
) -> None:
    """A publisher answering 503 may be back in a minute: that "not available" is asked again;
    a paywall the heuristics are sure of is an answer worth keeping."""
    down = lit.entry("neg-publisher-down")["paper"]
    for _ in range(2):
        result = (await client.post("/v1/fulltext/detect", json={"paper": down})).json()
        assert (result["method"], result["cached"]) == ("publisher_http_503", False)
    assert lit.requests(h.DOWN) == 2
    paywall = lit.entry("neg-paywall")["paper"]
    await client.post("/v1/fulltext/detect", json={"paper": paywall})
    again = (await client.post("/v1/fulltext/detect", json={"paper": paywall})).json()
    assert (again["is_available"], again["cached"]) == (False, True)


async def test_duplicates_in_a_batch_are_fetched_once(
    client: Client, lit: LiteratureSandbox
) -> None:
    paper = lit.entry("pub-plos")["paper"]
    papers = [{**paper, "id": f"copy-{i}"} for i in range(5)]
    body = (await client.post("/v1/fulltext/detect/batch", json={"papers": papers})).json()
    assert [r["paper_id"] for r in body["results"]] == [f"copy-{i}" for i in range(5)]
    assert all((r["tier"], r["is_available"]) == (5, True) for r in body["results"])
    assert lit.path_requests(h.PLOS, "/plosone/article") == 1


async def test_metrics_per_tier_with_bounded_labels(client: Client, lit: LiteratureSandbox) -> None:
    papers = _papers(lit, "db-stored", "direct-404-up", "neg-metadata-ssrf", "pub-arxiv-pdf")
    await client.post("/v1/fulltext/detect/batch", json={"papers": papers})
    text = (await client.get("/metrics")).text
    assert 'literature_tier_attempts_total{outcome="decided",tier="database"} 1.0' in text
    assert 'literature_tier_attempts_total{outcome="not_found",tier="direct_url"} 1.0' in text
    assert 'literature_tier_attempts_total{outcome="decided",tier="unpaywall"} 1.0' in text
    assert 'literature_tier_attempts_total{outcome="refused",tier="publisher"} 1.0' in text
    assert 'literature_tier_duration_seconds_count{tier="publisher"}' in text
    assert 'literature_fetches_total{outcome="2xx",publisher="arxiv"}' in text
    assert "literature_batch_size_paper" in text or "literature_batch_size" in text
    assert re.search(
        r'literature_detections_total\{available="true",confidence="high",'
        r'tier="database"\} 1\.0',
        text,
    )
    for line in text.splitlines():
        if line.startswith("literature_") and "{" in line:
            labels = line.split("{", 1)[1].split("}", 1)[0]
            values = [v for k, v in re.findall(r'(\w+)="([^"]*)"', labels) if k != "le"]
            assert all(re.fullmatch(r"[a-z0-9_]+", v) for v in values), line
