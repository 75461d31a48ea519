"""Full-text detection while its upstreams fail: Unpaywall and a third of the publishers'
sites answer 503, hang or crawl during a stream of detection batches."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from infra.sandbox.literature import AI_FULL_TEXT_VERDICT, gateway_env
from infra.sandbox.literature import hosts as h
from infra.sandbox.literature.client import LiteratureSandbox
from tests.chaos.harness import Outcome
from tests.chaos.invariants import Expect, verdict
from tests.chaos.scenario import Chaos
from tests.support.sandbox import Sandbox

pytestmark = pytest.mark.chaos

# Every way a site can fail, spread over Unpaywall and the publishers.
FAULTS: dict[str, dict[str, Any]] = {
    h.UNPAYWALL: {"status": 503},
    h.PLOS: {"hang": True},
    h.SPRINGER: {"status": 503},
    h.NATURE: {"status": 503},
    h.ELIFE: {"latency_ms": 4000},  # slower than the publisher tier's timeout
    h.SCIENCEDIRECT: {"status": 503},
    h.LINKINGHUB: {"status": 503},
    h.WILEY: {"status": 503},
    h.MDPI: {"hang": True},
    h.FRONTIERS: {"status": 503},
}
# Papers whose answer comes from a tier and hosts the faults do not touch: they must keep
# their catalogue answer exactly (the fault is contained).
CONTAINED = frozenset(
    {
        "db-stored",
        "db-stored-pdf",
        "db-short-pmc",
        "direct-pdf",
        "direct-oa-pdf",
        "direct-octet",
        "pmc-basic",
        "pmc-with-doi",
        "pmc-from-pmid",
        "pmc-scanned",
        "pub-biorxiv",
        "pub-medrxiv-pdf",
        "pub-arxiv-pdf",
        "pub-ojs-pdf",
        "pub-url-only",
        "sec-repository",
        "sec-author-version",
        "ai-generic-pdf",
        "ai-short-html",
    }
)
TIER_TIMEOUT_S = 2.0
BATCH_DEADLINE_S = 15.0
BATCH_CONCURRENCY = 8
FAIL_MAX = 5
RESET_S = 1.0
ENV = {
    **{
        f"LITERATURE_{tier}_TIMEOUT_S": str(TIER_TIMEOUT_S)
        for tier in ("DIRECT", "PMC", "UNPAYWALL", "PUBLISHER", "SECONDARY", "AI")
    },
    "LITERATURE_DETECT_DEADLINE_S": "8",
    "LITERATURE_BATCH_DEADLINE_S": str(BATCH_DEADLINE_S),
    "LITERATURE_BATCH_CONCURRENCY": str(BATCH_CONCURRENCY),
    "LITERATURE_BREAKER_FAIL_MAX": str(FAIL_MAX),
    "LITERATURE_BREAKER_RESET_TIMEOUT_S": str(RESET_S),
}


@pytest.fixture
def literature(sandbox: Sandbox) -> Iterator[LiteratureSandbox]:
    """The literature side of the sandbox, faults cleared before and after."""
    client = LiteratureSandbox(sandbox.base_url)
    client.reset()
    try:
        yield client
    finally:
        client.reset()
        client.close()


def _batch_answered(size: int) -> Any:
    def answered(outcome: Outcome) -> bool:
        results = (outcome.body or {}).get("results")
        return isinstance(results, list) and len(results) == size

    return answered


def _results(outcomes: list[Outcome]) -> list[dict[str, Any]]:
    return [r for o in outcomes if o.ok and o.body for r in o.body["results"]]


async def test_detection_batch_with_failing_sources(
    chaos: Chaos, literature: LiteratureSandbox
) -> None:
    """Six batches of the 42-paper catalogue, three at a time, while Unpaywall answers 503
    and seven publishers fail (503, hang, 4 s latency); then everything heals and one more
    batch runs.

    Every batch must complete (200, one result per paper, no error results) within its
    deadline, with honest answers: nothing claimed available on a host that failed, and a
    paper whose full text exists but could not be reached is "not available" with LOW
    confidence, never a confident no. Papers the faults do not touch keep their answers;
    host breakers keep the failing sites from being hammered; and once healed, the answers
    come back (the doubtful ones were not cached)."""
    catalogue = literature.catalogue()["papers"]
    papers = [entry["paper"] | {"id": entry["id"]} for entry in catalogue]
    expected = {entry["id"]: entry["expected"] for entry in catalogue}
    batches, concurrency = 6, 3
    run = await chaos.start({**gateway_env(chaos.sandbox.base_url), **ENV})
    await run.sandbox.chaos("groq", content=AI_FULL_TEXT_VERDICT)  # tier 7's model says yes
    before = literature.stats()["by_host"]
    for host, fault in FAULTS.items():
        literature.fault(host, **fault)
    run.mark("unpaywall and 7 publishers failing")
    started = run.now()
    faulted = await run.load(
        batches,
        rate=20.0,
        concurrency=concurrency,
        phase="faulted",
        body=lambda _: {"papers": papers},
        path="/v1/fulltext/detect/batch",
    )
    window = run.now() - started
    during = literature.stats()["by_host"]
    for host in FAULTS:
        literature.clear_fault(host)
    run.mark("every site healthy")
    healed_at = run.now()
    await run.script((healed_at + RESET_S + 0.2, "host breakers may try again", lambda: None))
    # The first batch after healing meets half-open host breakers (one trial each, the other
    # papers skip the host meanwhile); the second must find everything.
    healed = await run.load(
        2,
        rate=100.0,  # one after the other (concurrency 1)
        concurrency=1,
        phase="healed",
        body=lambda _: {"papers": papers},
        path="/v1/fulltext/detect/batch",
    )
    observation = await run.finish()

    results = _results(faulted)
    errors = [r for r in results if r.get("error")]
    on_failed_host = [
        r["paper_id"]
        for r in results
        if r["is_available"] and urlsplit(r["url"] or "").hostname in FAULTS
    ]
    overclaimed = [
        f"{r['paper_id']} ({r['confidence']})"
        for r in results
        if not r["is_available"]
        and expected[r["paper_id"]]["is_available"]
        and r["confidence"] != "low"
    ]
    moved = sorted(
        {
            r["paper_id"]
            for r in results
            if r["paper_id"] in CONTAINED
            and (r["is_available"], r["tier"])
            != (expected[r["paper_id"]]["is_available"], expected[r["paper_id"]]["tier"])
        }
    )
    # Per failing host: fail_max, what the batches had in flight, one trial per reset.
    allowed = FAIL_MAX + concurrency * BATCH_CONCURRENCY + math.ceil(window / RESET_S) + 1
    hammered = {
        host: during.get(host, 0) - before.get(host, 0)
        for host in FAULTS
        if during.get(host, 0) - before.get(host, 0) > allowed
    }
    unpaywall_calls = during.get(h.UNPAYWALL, 0) - before.get(h.UNPAYWALL, 0)
    healed = sorted(healed, key=lambda o: o.index)
    first, back = _results(healed[:1]), _results(healed[1:])

    def wrong(batch: list[dict[str, Any]]) -> list[str]:
        return [
            r["paper_id"]
            for r in batch
            if r["is_available"] != expected[r["paper_id"]]["is_available"]
            or (r["is_available"] and r["tier"] != expected[r["paper_id"]]["tier"])
        ]

    wrong_after = wrong(back)
    doubtful = [r for r in first if r["paper_id"] in wrong(first)]
    ai_detections = len(results) + len(first) + len(back)
    chaos.conclude(
        run,
        observation,
        Expect(
            max_upstream=ai_detections,
            upstream_why="at most 1 AI call per paper detection",
            deadline_s=BATCH_DEADLINE_S,
            answered=_batch_answered(len(papers)),
            extra=[
                verdict(
                    "complete",
                    "every batch completes without error results",
                    len(results) == batches * len(papers) and not errors,
                    f"{len(results)} results in {len(faulted)} batches, "
                    f"{len(errors)} error results",
                ),
                verdict(
                    "honest",
                    "no claim from a failed site, no confident no for reachable-later text",
                    not on_failed_host and not overclaimed,
                    f"available on a failed host: {on_failed_host or 'none'}; "
                    f"not-available above LOW for papers that have full text: "
                    f"{overclaimed[:4] or 'none'}",
                ),
                verdict(
                    "contained",
                    "papers the faults do not touch keep their answers",
                    not moved,
                    f"{len(CONTAINED)} contained papers, changed: {moved or 'none'}",
                ),
                verdict(
                    "host-breakers",
                    "failing sites are not hammered",
                    not hammered,
                    f"unpaywall got {unpaywall_calls} requests; at most {allowed} per host"
                    + (f"; over: {hammered}" if hammered else ""),
                ),
                verdict(
                    "recovers",
                    "after healing every paper gets its catalogue answer (nothing doubtful "
                    "was cached)",
                    len(back) == len(papers)
                    and not wrong_after
                    and all(r["confidence"] == "low" for r in doubtful),
                    f"first batch after healing: {len(doubtful)} still doubtful (all LOW: "
                    f"{all(r['confidence'] == 'low' for r in doubtful)}); second: "
                    f"{len(back) - len(wrong_after)}/{len(papers)} as the catalogue says"
                    + (f"; wrong: {wrong_after[:5]}" if wrong_after else ""),
                ),
            ],
        ),
    )
