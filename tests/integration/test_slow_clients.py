"""Slow clients cannot starve the service: a slowloris attack on a real `python -m app serve`.

The service runs with a descriptor limit of 256 and a 2 s header deadline; another process
holds 400 sockets against it (more than the service has descriptors), each sending one more
header line every second and reconnecting whenever the server closes it. Before the fix the
server kept every such socket, reached its descriptor limit and then accepted and dropped
every new connection (libuv's EMFILE handling), so every honest request failed for the whole
attack. Now each probe, on a fresh connection, must be answered well within a bound for the
whole attack window, and the attacker's sockets must be closed by the server.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import httpx

from tests.support.client import AUTH_HEADERS
from tests.support.sandbox import ROOT, Sandbox, fresh_database_url
from tests.support.service import ServiceProcess, sandbox_env

DESCRIPTOR_LIMIT = 256
ATTACK_SOCKETS = 400  # more than the service has descriptors
HEADER_TIMEOUT_S = 2.0
LINE_EVERY_S = 1.0
ATTACK_S = 9.0
PROBE_EVERY_S = 0.2
# A probe answered later than this counts as starved (an idle service answers in ~5 ms).
PROBE_BOUND_S = 2.0
# Scheduling slack on a shared 2-core machine for "closed at the header deadline".
CLOSE_SLACK_S = 1.5


@dataclass
class Probe:
    route: str
    started: float
    elapsed: float
    outcome: str  # the status code, or the transport error's name


async def probe(index: int, url: str) -> Probe:
    """One request on a connection of its own, as a new caller would make it."""
    started = time.monotonic()
    async with httpx.AsyncClient(
        base_url=url, headers=AUTH_HEADERS, timeout=PROBE_BOUND_S + 3, trust_env=False
    ) as client:
        try:
            if index % 2:
                route = "completion"
                response = await client.post(
                    "/v1/ai/completions", json={"prompt": f"slow clients probe {index}"}
                )
                ok = response.status_code == 200 and bool(response.json()["content"])
            else:
                route = "health"
                response = await client.get("/health/live")
                ok = response.status_code == 200
            outcome = str(response.status_code) if ok else f"{response.status_code}!"
        except httpx.TransportError as exc:
            outcome = type(exc).__name__
    return Probe(route, started, time.monotonic() - started, outcome)


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def start_service(sandbox: Sandbox) -> ServiceProcess:
    """The real service, few descriptors, small upstream pools (they are part of the budget)."""
    small_pools = {
        f"{prefix}_MAX_CONNECTIONS": "8"
        for prefix in ("GROQ", "GEMINI", "AZURE_OPENAI", "OPENAI", "LITERATURE")
    }
    return ServiceProcess(
        sandbox_env(
            sandbox.base_url,
            fresh_database_url(),
            HTTP_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S),
            **small_pools,
        ),
        descriptor_limit=DESCRIPTOR_LIMIT,
    ).start()


def start_attacker(port: int, sockets: int, duration_s: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.slowloris",
            f"--port={port}",
            f"--connections={sockets}",
            f"--interval={LINE_EVERY_S}",
            f"--duration={duration_s}",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )


async def attack_report(attacker: subprocess.Popen[bytes], duration_s: float) -> dict[str, Any]:
    out, _ = await asyncio.to_thread(attacker.communicate, timeout=duration_s + 15)
    assert attacker.returncode == 0
    report: dict[str, Any] = json.loads(out)
    return report


def stop(attacker: subprocess.Popen[bytes] | None, service: ServiceProcess) -> None:
    if attacker is not None and attacker.poll() is None:
        attacker.kill()
        attacker.wait()
    service.stop()


async def test_a_slowloris_attack_leaves_the_service_answering_and_its_sockets_closed(
    sandbox: Sandbox,
) -> None:
    service = start_service(sandbox)
    assert service.process is not None
    attacker: subprocess.Popen[bytes] | None = None
    probes: list[Probe] = []
    most_descriptors = 0
    try:
        attack_start = time.monotonic()
        attacker = start_attacker(service.port, ATTACK_SOCKETS, ATTACK_S)
        await asyncio.sleep(1.0)  # the attacker's first sockets are all open by now
        pending: list[asyncio.Task[Probe]] = []
        index = 0
        while time.monotonic() < attack_start + ATTACK_S - 0.5:
            pending.append(asyncio.create_task(probe(index, service.url)))
            most_descriptors = max(most_descriptors, open_descriptors(service.process.pid))
            index += 1
            await asyncio.sleep(PROBE_EVERY_S)
        probes = list(await asyncio.gather(*pending))
        attack = await attack_report(attacker, ATTACK_S)
    finally:
        stop(attacker, service)

    # The attack was real: more sockets than the service has descriptors.
    assert attack["connected"] > DESCRIPTOR_LIMIT, attack
    # Every probe across the attack window was answered, and quickly.
    late_or_failed = [p for p in probes if p.outcome != "200" or p.elapsed > PROBE_BOUND_S]
    assert not late_or_failed, (late_or_failed, attack)
    assert {p.route for p in probes} == {"health", "completion"}
    assert len(probes) >= (ATTACK_S - 1.5) / PROBE_EVERY_S * 0.8
    # The server closed the attacker's sockets (the newest evict the oldest, and none lives
    # past the header deadline).
    assert attack["closed_by_server"] >= ATTACK_SOCKETS, attack
    assert attack["max_lifetime_s"] <= HEADER_TIMEOUT_S + CLOSE_SLACK_S, attack
    assert attack["max_age_at_end_s"] <= HEADER_TIMEOUT_S + CLOSE_SLACK_S, attack
    # And the service never came near its descriptor limit (EMFILE is what starved it).
    assert most_descriptors < DESCRIPTOR_LIMIT - 16, most_descriptors


async def test_a_few_slow_sockets_are_closed_at_the_header_deadline(sandbox: Sandbox) -> None:
    """Below the connection cap nothing is evicted: the header deadline alone closes them,
    however steadily they trickle."""
    service = start_service(sandbox)
    attacker: subprocess.Popen[bytes] | None = None
    duration_s = HEADER_TIMEOUT_S * 2 + 1
    try:
        attacker = start_attacker(service.port, 20, duration_s)
        attack = await attack_report(attacker, duration_s)
    finally:
        stop(attacker, service)

    assert attack["closed_by_server"] >= 20, attack
    assert attack["min_lifetime_s"] >= HEADER_TIMEOUT_S - 0.05, attack
    assert attack["max_lifetime_s"] <= HEADER_TIMEOUT_S + CLOSE_SLACK_S, attack
    assert attack["max_age_at_end_s"] <= HEADER_TIMEOUT_S + CLOSE_SLACK_S, attack
