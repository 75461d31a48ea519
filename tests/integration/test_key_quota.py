"""Per-key daily quotas, caller limits and key rests through the whole app against the
sandbox: in one process (the embedded default) and with two apps (two replicas) on one
real redis-server, where the quota, the caller's rpm and a 429's rest are the gateway's,
not each replica's. The usage gauge shows used today over the quota per key id."""

from __future__ import annotations

import asyncio
import re
import uuid
from contextlib import AsyncExitStack
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from app.core.settings import GroqSettings
from app.main import create_app
from app.modules.ai.providers.keys import key_id
from tests.support.client import gateway_client
from tests.support.redis import RedisServer, needs_redis
from tests.support.sandbox import (
    GEMINI_KEY,
    GROQ_KEYS,
    Sandbox,
    fresh_database_url,
    sandbox_settings,
)

Client = AsyncTestClient[Any]


def _groq(sandbox: Sandbox, keys: list[str], **overrides: Any) -> GroqSettings:
    values: dict[str, Any] = {
        "api_keys": keys,
        "base_url": f"{sandbox.base_url}/groq/openai/v1",
        "rpm_per_key": 10_000,
    }
    return GroqSettings(**(values | overrides))


async def _ask(client: Client) -> Any:
    return await client.post("/v1/ai/completions", json={"prompt": "Summarise."})


def _ratio(metrics: str, key: str) -> float | None:
    pattern = r'ai_provider_key_usage_ratio\{key_id="' + key_id(key) + r'",provider="groq"\} (\S+)'
    found = re.search(pattern, metrics)
    return None if found is None else float(found.group(1))


async def test_a_key_at_its_daily_quota_is_skipped_and_the_gauge_says_so(
    sandbox: Sandbox,
) -> None:
    settings = sandbox_settings(sandbox.base_url, groq=_groq(sandbox, GROQ_KEYS[:2], rpd_per_key=2))
    async with gateway_client(create_app(settings)) as client:
        before = (await client.get("/metrics")).text
        bodies = [(await _ask(client)).json() for _ in range(6)]
        after = (await client.get("/metrics")).text
    assert [b["provider"] for b in bodies] == ["groq"] * 4 + ["gemini"] * 2
    assert bodies[-1]["attempts"][0]["error_type"] == "rate_limited_locally"
    assert sandbox.stats()["groq"]["by_key"] == {"gsk-sandbox-1": 2, "gsk-sandbox-2": 2}
    assert _ratio(before, GROQ_KEYS[0]) == 0.0
    assert _ratio(after, GROQ_KEYS[0]) == 1.0
    assert _ratio(after, GROQ_KEYS[1]) == 1.0
    assert GROQ_KEYS[0] not in after
    # Gemini has no quota: nothing to divide by, so no series (not a ratio of 0).
    assert 'ai_provider_key_usage_ratio{key_id="' + key_id(GEMINI_KEY) not in after


# -- two replicas, one Redis --------------------------------------------------------------


class Replicas:
    """Two apps (two replicas in this process) on one Redis, each its own ledger."""

    def __init__(self, sandbox: Sandbox, redis_url: str, **overrides: Any) -> None:
        prefix = f"t{uuid.uuid4().hex[:8]}:"
        self.settings = [
            sandbox_settings(
                sandbox.base_url,
                redis_url=redis_url,
                redis_key_prefix=prefix,
                database_url=fresh_database_url(),
                **overrides,
            )
            for _ in range(2)
        ]

    async def __aenter__(self) -> tuple[Client, Client]:
        self._stack = AsyncExitStack()
        a = await self._stack.enter_async_context(gateway_client(create_app(self.settings[0])))
        b = await self._stack.enter_async_context(gateway_client(create_app(self.settings[1])))
        return a, b

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@needs_redis
async def test_two_replicas_share_one_daily_quota_and_both_gauges_show_it(
    sandbox: Sandbox, redis_url: str
) -> None:
    replicas = Replicas(sandbox, redis_url, groq=_groq(sandbox, GROQ_KEYS[:1], rpd_per_key=3))
    async with replicas as (a, b):
        first = [(await _ask(a)).json()["provider"] for _ in range(2)]
        second = [(await _ask(b)).json()["provider"] for _ in range(2)]
        b_metrics = (await b.get("/metrics")).text
        a_ratio = None
        for _ in range(40):  # a learns the count from the key-state poll (once a second)
            a_ratio = _ratio((await a.get("/metrics")).text, GROQ_KEYS[0])
            if a_ratio == 1.0:
                break
            await asyncio.sleep(0.1)
    assert first + second == ["groq", "groq", "groq", "gemini"]
    assert sandbox.completions("groq") == 3
    assert _ratio(b_metrics, GROQ_KEYS[0]) == 1.0
    assert a_ratio == 1.0


@needs_redis
async def test_a_callers_rpm_is_the_gateways_not_each_replicas(
    sandbox: Sandbox, redis_url: str
) -> None:
    async with Replicas(sandbox, redis_url, gateway_caller_rpm=3) as (a, b):
        codes = [(await _ask(client)).status_code for client in (a, b, a)]
        limited = await _ask(b)
    assert codes == [200, 200, 200]
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert sandbox.completions("groq") == 3


@needs_redis
async def test_a_key_rested_by_a_429_on_one_replica_is_not_used_by_the_other(
    sandbox: Sandbox, redis_url: str
) -> None:
    sandbox.chaos("groq", rate_limited_keys=[GROQ_KEYS[0]], retry_after=30)
    async with Replicas(sandbox, redis_url, groq=_groq(sandbox, GROQ_KEYS[:2])) as (a, b):
        body = (await _ask(a)).json()
        assert [x["error_type"] for x in body["attempts"]] == ["rate_limited", None]
        sandbox.clear("groq")  # the key would be accepted again: only the rest keeps it out
        await asyncio.sleep(0.2)  # far more than the rest takes to reach b (pub/sub)
        served = [(await _ask(b)).json()["provider"] for _ in range(4)]
        report = (await b.get("/health/ai-providers")).json()
    assert served == ["groq"] * 4
    assert sandbox.stats()["groq"]["by_key"] == {"gsk-sandbox-1": 1, "gsk-sandbox-2": 5}
    groq = next(p for p in report["providers"] if p["provider"] == "groq")
    assert [k["state"] for k in groq["keys"]] == ["resting", "active"]


@needs_redis
async def test_with_redis_gone_a_replica_sends_only_its_share_and_stays_ready(
    sandbox: Sandbox,
) -> None:
    """Two replicas alive, one Groq key at 4 rpm: replica a sends 2 through Redis, its share
    (4/2). Then Redis stops: a does not send a third (one process alone would send 4), it
    fails over; and /health/ready stays 200."""
    server = RedisServer().start()
    try:
        replicas = Replicas(sandbox, server.url, groq=_groq(sandbox, GROQ_KEYS[:1], rpm_per_key=4))
        async with replicas as (a, _):
            for _ in range(40):  # a's next heartbeat sees b
                report = (await a.get("/health/ai-providers")).json()
                if report.get("shared_replicas") == 2:
                    break
                await asyncio.sleep(0.1)
            before = [(await _ask(a)).json()["provider"] for _ in range(2)]
            server.stop()
            after = [await _ask(a) for _ in range(2)]
            ready = await a.get("/health/ready")
    finally:
        server.stop()
    assert before == ["groq", "groq"]
    assert sandbox.completions("groq") == 2
    assert {r.status_code for r in after} <= {200, 503}
    for response in after:
        assert response.json()["attempts"][0]["error_type"] == "rate_limited_locally"
    assert ready.status_code == 200
