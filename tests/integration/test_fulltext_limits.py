"""Bounded work on every outbound request: body size caps, redirect caps, content types, per-tier
timeouts, circuit breakers per publisher host and rate limits per publisher. Time that matters
(breaker cooldowns, rate windows) moves on a manual clock."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from app.core.clock import ManualClock
from app.core.settings import LiteratureSettings
from app.main import create_app
from infra.sandbox.literature import hosts as h
from infra.sandbox.literature.client import LiteratureSandbox
from tests.support.client import gateway_client
from tests.support.overrides import manual_clock
from tests.support.sandbox import Sandbox, sandbox_settings

Client = AsyncTestClient[Any]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


async def _client(
    sandbox: Sandbox, lit: LiteratureSandbox, clock: ManualClock, **literature: Any
) -> AsyncIterator[Client]:
    settings = sandbox_settings(
        sandbox.base_url,
        # No result cache: these tests ask the same paper again on purpose.
        literature=LiteratureSettings(**lit.settings(cache_ttl_s=0, **literature)),
    )
    async with gateway_client(create_app(settings, manual_clock(clock))) as client:
        yield client


@pytest.fixture
async def client(
    sandbox: Sandbox, lit: LiteratureSandbox, clock: ManualClock
) -> AsyncIterator[Client]:
    async for test_client in _client(sandbox, lit, clock, max_redirects=5, max_html_bytes=2**20):
        yield test_client


async def detect(client: Client, paper: dict[str, Any], **options: Any) -> dict[str, Any]:
    response = await client.post("/v1/fulltext/detect", json={"paper": paper, "options": options})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_page_larger_than_the_cap_is_cut_off(
    client: Client, lit: LiteratureSandbox
) -> None:
    started = time.perf_counter()
    result = await detect(client, lit.entry("neg-huge-page")["paper"])
    assert (result["is_available"], result["method"]) == (False, "publisher_too_large")
    assert lit.requests(h.HUGE) == 1
    assert time.perf_counter() - started < 5  # 1 MiB read, not 12
    metrics = (await client.get("/metrics")).text
    assert 'literature_fetches_total{outcome="too_large",publisher="other"}' in metrics


async def test_pdf_probes_read_only_the_first_bytes(client: Client, lit: LiteratureSandbox) -> None:
    """A PDF link is verified by its first bytes; the rest is never downloaded."""
    result = await detect(client, lit.entry("direct-pdf")["paper"])
    assert (result["tier"], result["content_type"]) == (2, "pdf")


async def test_redirects_are_capped(client: Client, lit: LiteratureSandbox) -> None:
    result = await detect(client, lit.entry("neg-redirect-loop")["paper"])
    assert (result["is_available"], result["method"]) == (False, "publisher_too_many_redirects")
    # doi.org, then 5 more hops (the cap) inside the loop, then it stops.
    assert lit.requests(h.DOI_RESOLVER) == 1
    assert lit.requests(h.LOOP) == 5


async def test_unexpected_content_types_are_not_read(
    client: Client, lit: LiteratureSandbox, sandbox: Sandbox
) -> None:
    port = sandbox.base_url.rsplit(":", 1)[1]
    url = f"http://{h.SOCIETY}:{port}/files/not-a-pdf.pdf"  # text/plain
    result = await detect(client, {"pdf_url": url}, max_tier=2)
    assert result["is_available"] is False
    metrics = (await client.get("/metrics")).text
    assert 'literature_fetches_total{outcome="content_type",publisher="other"}' in metrics


async def test_a_hung_publisher_costs_one_tier_timeout(
    client: Client, lit: LiteratureSandbox
) -> None:
    lit.fault(h.PLOS, hang=True)
    started = time.perf_counter()
    result = await detect(client, lit.entry("pub-plos")["paper"], tier_timeout_s=0.5)
    elapsed = time.perf_counter() - started
    assert (result["is_available"], result["method"]) == (False, "publisher_timeout")
    assert 5 in result["tiers_tried"]
    assert elapsed < 3


async def test_each_publisher_host_has_its_own_breaker(
    sandbox: Sandbox, lit: LiteratureSandbox, clock: ManualClock
) -> None:
    async for client in _client(
        sandbox, lit, clock, breaker_fail_max=2, breaker_reset_timeout_s=30
    ):
        paper = lit.entry("neg-publisher-down")["paper"]  # its publisher answers 503
        for _ in range(2):
            assert (await detect(client, paper))["method"] == "publisher_http_503"
        assert lit.requests(h.DOWN) == 2
        # Open: the host is not asked any more...
        assert (await detect(client, paper))["method"] == "publisher_breaker_open"
        assert lit.requests(h.DOWN) == 2
        # ...while other publishers are unaffected.
        assert (await detect(client, lit.entry("pub-plos")["paper"]))["is_available"] is True
        # After the cooldown one trial request goes through.
        clock.advance(30)
        assert (await detect(client, paper))["method"] == "publisher_http_503"
        assert lit.requests(h.DOWN) == 3


async def test_publishers_are_rate_limited(
    sandbox: Sandbox, lit: LiteratureSandbox, clock: ManualClock
) -> None:
    async for client in _client(
        sandbox, lit, clock, publisher_rpm_overrides={"plos": 1}, rate_limit_max_wait_s=0
    ):
        paper = lit.entry("pub-plos")["paper"]
        assert (await detect(client, paper))["method"] == "publisher_html"
        limited = await detect(client, paper)
        assert (limited["is_available"], limited["method"]) == (False, "publisher_rate_limited")
        assert lit.requests(h.PLOS) == 1
        clock.advance(60)
        assert (await detect(client, paper))["method"] == "publisher_html"
        assert lit.requests(h.PLOS) == 2


async def test_a_short_wait_for_a_rate_limit_slot_is_taken(
    sandbox: Sandbox, lit: LiteratureSandbox, clock: ManualClock
) -> None:
    """Within `rate_limit_max_wait_s` (and the tier's deadline) the request waits, on the
    clock, instead of failing; a wait past the tier's deadline is not even started."""
    async for client in _client(
        sandbox, lit, clock, publisher_rpm_overrides={"plos": 6}, rate_limit_max_wait_s=40
    ):
        paper = lit.entry("pub-plos")["paper"]
        for _ in range(7):
            result = await detect(client, paper)
            assert (result["is_available"], result["method"]) == (True, "publisher_html")
        # The seventh request waited 10 s (6 a minute) for its slot.
        assert clock.monotonic() == pytest.approx(1010.0)
    async for client in _client(
        sandbox, lit, clock, publisher_rpm_overrides={"plos": 1}, rate_limit_max_wait_s=40
    ):
        assert (await detect(client, paper))["is_available"] is True
        # The next slot is 60 s away, past the publisher tier's 15 s: refused at once.
        limited = await detect(client, paper)
        assert limited["method"] == "publisher_rate_limited"
        assert clock.monotonic() == pytest.approx(1010.0)
