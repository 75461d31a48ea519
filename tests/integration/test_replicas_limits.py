"""Two real service processes (`python -m app serve`) on one real redis-server, against the
sandbox: the per-key rpm is the provider's, not twice it (counted at the sandbox), and a key
refused with 401 by one process is never sent by the other."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx

from app.modules.ai.providers.keys import key_id
from tests.support.client import AUTH_HEADERS
from tests.support.redis import RedisServer, needs_redis
from tests.support.sandbox import GROQ_KEYS, Sandbox, fresh_database_url
from tests.support.service import ServiceProcess, sandbox_env

pytestmark = needs_redis


def _start_pair(sandbox: Sandbox, redis_url: str, **extra: str) -> list[ServiceProcess]:
    """Two processes, one Redis namespace, each its own ledger; started side by side."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    processes = [
        ServiceProcess(
            sandbox_env(
                sandbox.base_url,
                fresh_database_url(),
                REDIS_URL=redis_url,
                REDIS_KEY_PREFIX=prefix,
                **extra,
            )
        )
        for _ in range(2)
    ]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda process: process.start(), processes))
    return processes


def _stop(processes: list[ServiceProcess]) -> None:
    for process in processes:
        if process.process is not None:
            process.stop(signal.SIGTERM)


async def _ask_all(urls: list[str], count: int) -> list[httpx.Response]:
    """`count` requests at once, alternating between the processes."""
    clients = [
        httpx.AsyncClient(base_url=url, trust_env=False, timeout=30, headers=AUTH_HEADERS)
        for url in urls
    ]
    try:
        return await asyncio.gather(
            *(
                clients[i % len(clients)].post(
                    "/v1/ai/completions", json={"prompt": f"Question {i}."}
                )
                for i in range(count)
            )
        )
    finally:
        for client in clients:
            await client.aclose()


def test_a_30_rpm_key_is_30_rpm_across_two_processes(
    sandbox: Sandbox, redis_server: RedisServer
) -> None:
    """100 requests split across both processes at once with one Groq key at 30 rpm: the
    sandbox sees 30 Groq completions (one more per 2 s the burst took, the bucket's refill),
    not 60; every other request fails over to the next provider (or is a 503).

    REDIS_TIMEOUT_S is raised from 50 ms: on this test's two shared cores a 100-request
    burst delays both event loops past 50 ms, and that is Redis "away" (each replica its
    share, tested on its own in test_shared_limits), not what this test is about."""
    processes = _start_pair(
        sandbox,
        redis_server.url,
        GROQ_API_KEYS=GROQ_KEYS[0],
        GROQ_RPM_PER_KEY="30",
        REDIS_TIMEOUT_S="0.5",
    )
    try:
        sandbox.reset()  # start-up probes are not completions, but start from zero anyway
        started = time.monotonic()
        responses = asyncio.run(_ask_all([p.url for p in processes], 100))
        elapsed = time.monotonic() - started
    finally:
        _stop(processes)
    assert {r.status_code for r in responses} <= {200, 503}
    answered = [r.json() for r in responses if r.status_code == 200]
    served = Counter(body["provider"] for body in answered)
    groq = sandbox.completions("groq")
    assert served["groq"] == groq
    assert 30 <= groq <= 30 + int(elapsed / 2)
    for body in answered:
        if body["provider"] != "groq":
            assert body["attempts"][0]["error_type"] == "rate_limited_locally"


def test_a_key_refused_on_one_process_is_never_sent_by_the_other(
    sandbox: Sandbox, redis_server: RedisServer
) -> None:
    processes = _start_pair(
        sandbox, redis_server.url, GROQ_API_KEYS=",".join(GROQ_KEYS[:2]), REDIS_TIMEOUT_S="0.5"
    )
    try:
        sandbox.reset()
        sandbox.chaos("groq", refuse_keys={GROQ_KEYS[0]: 1})  # one 401, then accepted
        first = asyncio.run(_ask_all([processes[0].url], 1))[0].json()
        time.sleep(0.3)  # the retirement reaches the other process in milliseconds
        rest = asyncio.run(_ask_all([processes[1].url], 6))
        report = httpx.get(f"{processes[1].url}/health/ai-providers", trust_env=False).json()
    finally:
        _stop(processes)
    assert [a["error_type"] for a in first["attempts"]] == ["auth", None]
    assert [r.json()["provider"] for r in rest] == ["groq"] * 6
    assert sandbox.stats()["groq"]["by_key"] == {GROQ_KEYS[0]: 1, GROQ_KEYS[1]: 7}
    groq = next(p for p in report["providers"] if p["provider"] == "groq")
    states = {k["id"]: k["state"] for k in groq["keys"]}
    assert states == {key_id(GROQ_KEYS[0]): "retired", key_id(GROQ_KEYS[1]): "active"}
