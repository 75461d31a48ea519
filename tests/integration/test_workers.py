"""`python -m app serve --workers N` for real: several processes on one port, each on the
guarded HTTP protocol, every worker's counters in one scrape of /metrics; and several
workers without REDIS_URL refused at start."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.client import AUTH_HEADERS
from tests.support.live import free_port, free_port_pair
from tests.support.redis import RedisServer, needs_redis
from tests.support.sandbox import Sandbox, fresh_database_url
from tests.support.service import ROOT, ServiceProcess, sandbox_env

REQUESTS = 60


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


async def _scrape(url: str) -> str:
    # A new connection per scrape: whichever worker the kernel picks answers it.
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=10) as client:
        response = await client.get("/metrics")
        response.raise_for_status()
        return response.text


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


def test_several_workers_without_redis_refuse_to_start_with_a_clear_message(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--port", str(port), "--workers", "2"],
        cwd=ROOT,
        env={**env, "DATABASE_URL": fresh_database_url()},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "2 workers need REDIS_URL" in result.stderr
    assert "budgets" in result.stderr
    with socket.socket() as sock:  # it never listened
        sock.bind(("127.0.0.1", port))


@needs_redis
async def test_two_workers_serve_and_one_scrape_counts_every_request_served(
    sandbox: Sandbox, redis: RedisServer, tmp_path: Path
) -> None:
    env = sandbox_env(
        sandbox.base_url,
        fresh_database_url(),
        REDIS_URL=redis.url,
        REDIS_TIMEOUT_S="0.5",  # two workers, the sandbox and Redis on two loaded cores
        METRICS_PORT_BASE=str(free_port_pair()),
    )
    service = ServiceProcess(env, log_path=tmp_path / "service.log", serve_args=("--workers", "2"))
    service.start(timeout_s=60)
    try:
        # Both workers are up once a scrape holds both.
        deadline = time.monotonic() + 30
        while True:
            up = _samples(await _scrape(service.url), "gateway_worker_up")
            if sorted((labels["worker"], value) for labels, value in up) == [
                ("0", 1.0),
                ("1", 1.0),
            ]:
                break
            assert time.monotonic() < deadline, f"workers not both up: {up}"
            await asyncio.sleep(0.2)

        async def ask(i: int) -> None:
            # A fresh connection each time, so the kernel spreads them over the workers.
            async with httpx.AsyncClient(
                base_url=service.url, headers=AUTH_HEADERS, trust_env=False, timeout=20
            ) as client:
                response = await client.post("/v1/ai/completions", json={"prompt": f"n {i}"})
                assert response.status_code == 200, response.text

        for start in range(0, REQUESTS, 6):
            await asyncio.gather(*(ask(i) for i in range(start, start + 6)))
        served = sandbox.completions("groq")
        assert served == REQUESTS

        for _ in range(3):  # whichever worker answers the scrape, it counts every request
            requests = _samples(await _scrape(service.url), "ai_provider_requests_total")
            assert sum(value for _, value in requests) == REQUESTS
            per_worker = {
                worker: sum(v for labels, v in requests if labels["worker"] == worker)
                for worker in ("0", "1")
            }
            # Both took requests. (Each on the guarded protocol: it refuses to run under a
            # stock uvicorn server, so a worker without it would have served nothing.)
            assert all(count > 0 for count in per_worker.values()), per_worker
    finally:
        assert service.stop() == 0
