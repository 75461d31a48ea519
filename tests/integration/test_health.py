"""Health that tells the truth: readiness is about this replica, provider health recovers
without caller traffic, and a key refused once comes back.

The app runs in process with the real adapters against the sandbox. Breaker periods, key
re-check intervals and windows run on an injected manual clock (`manual_clock`), so the tests
move time instead of sleeping; the background probe rounds run on the event loop every
AI_HEALTH_PROBE_INTERVAL_S of real time (50 ms here), and the tests wait for the rounds they
need by watching the sandbox's probe counters.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import Callable
from typing import Any

from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from app.core.clock import ManualClock
from app.core.settings import (
    AzureSettings,
    GeminiSettings,
    GroqSettings,
    OpenAISettings,
    Settings,
)
from app.core.version import build_info
from app.main import create_app
from tests.support.client import gateway_client
from tests.support.overrides import manual_clock
from tests.support.sandbox import (
    AZURE_KEY,
    GEMINI_KEY,
    GROQ_KEYS,
    OPENAI_KEY,
    Sandbox,
    sandbox_settings,
)

Client = AsyncTestClient[Any]

PROVIDERS = ("groq", "gemini", "azure", "openai")
PROBE_INTERVAL_S = 0.05  # real seconds between probe rounds
RESET_S = 30.0  # breaker reset timeout, on the manual clock
FAIL_MAX = 3


def _settings(sandbox: Sandbox, **overrides: Any) -> Settings:
    """Every provider configured, breakers opening after three faults, probes every 50 ms."""
    url = sandbox.base_url
    breaker = {"breaker_fail_max": FAIL_MAX, "breaker_reset_timeout_s": RESET_S}
    values: dict[str, Any] = {
        "groq": GroqSettings(
            api_keys=GROQ_KEYS, base_url=f"{url}/groq/openai/v1", rpm_per_key=10_000, **breaker
        ),
        "gemini": GeminiSettings(api_key=GEMINI_KEY, base_url=f"{url}/gemini", **breaker),
        "azure": AzureSettings(
            api_key=AZURE_KEY, endpoint=f"{url}/azure", deployment="gpt-4o-mini", **breaker
        ),
        "openai": OpenAISettings(api_key=OPENAI_KEY, base_url=f"{url}/openai/v1", **breaker),
        "ai_health_probe_interval_s": PROBE_INTERVAL_S,
        # No retry of the last provider: its backoff would move the manual clock.
        "ai_retry_max": 0,
    }
    values.update(overrides)
    return sandbox_settings(url, **values)


async def _eventually(
    check: Callable[[], Any], *, timeout_s: float = 5.0, what: str = "the condition"
) -> Any:
    """Poll `check` (sync or async) until it returns something truthy, in real time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s} s")
        await asyncio.sleep(0.01)


async def _providers(client: Client) -> dict[str, dict[str, Any]]:
    report = (await client.get("/health/ai-providers")).json()
    return {p["provider"]: p for p in report["providers"]}


async def _probe_rounds(sandbox: Sandbox, rounds: int) -> None:
    """Wait until `rounds` whole probe rounds begun after now have ended.

    Rounds run one after another, so a round's probe reaching the sandbox proves the round
    before it has ended; the first probe counted may belong to a round begun before now.
    Hence `rounds` + 2 new probes per provider.
    """
    start = sandbox.stats()
    wanted = rounds + 2
    await _eventually(
        lambda: all(sandbox.stats()[p]["probes"] >= start[p]["probes"] + wanted for p in PROVIDERS),
        what=f"{rounds} probe rounds",
    )


async def _assert_ready(client: Client) -> None:
    ready = await client.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"


async def test_one_second_blip_keeps_ready_and_idle_providers_recover(sandbox: Sandbox) -> None:
    """Every provider fails for a moment (three failed requests open every breaker), then the
    outage ends and no caller comes. /health/ready stays 200 throughout: the outage is every
    replica's, not this one's. Each provider is shown healthy again once its reset timeout is
    over, by the next probe round (which takes the half-open trial), with no caller traffic."""
    clock = ManualClock()
    async with gateway_client(create_app(_settings(sandbox), manual_clock(clock))) as client:
        await _probe_rounds(sandbox, 1)
        await _assert_ready(client)
        for name in PROVIDERS:  # the blip: completions and probes fail alike
            sandbox.chaos(name, error_rate=1.0, error_status=503, affect_probes=True)
        tripped_at = clock.monotonic()
        for _ in range(FAIL_MAX):
            answer = await client.post("/v1/ai/completions", json={"prompt": "blip"})
            assert answer.status_code == 503
            assert answer.json()["type"].endswith("/all-providers-failed")
            await _assert_ready(client)
        health = await _providers(client)
        assert {health[p]["breaker_state"] for p in PROVIDERS} == {"open"}
        assert {health[p]["status"] for p in PROVIDERS} == {"unhealthy"}
        await _assert_ready(client)
        ready = (await client.get("/health/ready")).json()
        assert ready["providers_usable"] == []
        assert "every configured provider is unhealthy" in ready["detail"]

        clock.advance(1.0)  # the blip lasted a second; then the upstreams are back
        for name in PROVIDERS:
            sandbox.clear(name)
        completions = {p: sandbox.completions(p) for p in PROVIDERS}
        # Probe rounds inside the open period leave the breakers alone. (Steps of whole and
        # half seconds: exact in binary, so the period ends exactly when the test says.)
        clock.advance(RESET_S - 1.0 - 0.5)
        await _probe_rounds(sandbox, 2)
        health = await _providers(client)
        assert {health[p]["breaker_state"] for p in PROVIDERS} == {"open"}
        assert all(health[p]["last_check"]["ok"] for p in PROVIDERS)  # probes say ok already
        await _assert_ready(client)

        # The reset timeout is over: the next round's probe is each breaker's trial.
        clock.advance(0.5)
        assert clock.monotonic() - tripped_at == RESET_S

        async def all_healthy() -> dict[str, dict[str, Any]] | None:
            await _assert_ready(client)
            found = await _providers(client)
            return found if all(found[p]["status"] == "healthy" for p in PROVIDERS) else None

        health = await _eventually(all_healthy, timeout_s=20 * PROBE_INTERVAL_S + 2, what="heal")
        # Within reset timeout + one probe interval: the manual clock has not moved since.
        assert clock.monotonic() - tripped_at == RESET_S
        assert {health[p]["breaker_state"] for p in PROVIDERS} == {"closed"}
        assert all(health[p]["reasons"] == [] for p in PROVIDERS)
        # No caller traffic did it: the upstreams saw no completion since the blip.
        assert {p: sandbox.completions(p) for p in PROVIDERS} == completions
        metrics = _families((await client.get("/metrics")).text)
        states = {
            s.labels["provider"]: s.value
            for s in metrics["ai_provider_circuit_breaker_state"].samples
        }
        assert states == dict.fromkeys(PROVIDERS, 0.0)
        # And callers are served again.
        answer = await client.post("/v1/ai/completions", json={"prompt": "after"})
        assert answer.status_code == 200


async def test_a_failed_probe_trial_reopens_the_breaker(sandbox: Sandbox) -> None:
    """The probe's trial goes through the breaker's normal admission: while the provider is
    still down it fails and re-opens the breaker for a fresh period; a later trial closes it."""
    clock = ManualClock()
    settings = _settings(sandbox, ai_provider_priority="groq,gemini")
    async with gateway_client(create_app(settings, manual_clock(clock))) as client:
        await _probe_rounds(sandbox, 1)
        sandbox.chaos("groq", error_rate=1.0, error_status=503, affect_probes=True)
        for _ in range(FAIL_MAX):
            assert (
                await client.post("/v1/ai/completions", json={"prompt": "x"})
            ).status_code == 200
        assert (await _providers(client))["groq"]["breaker_state"] == "open"
        clock.advance(RESET_S)
        await _probe_rounds(sandbox, 2)
        groq = (await _providers(client))["groq"]
        assert groq["breaker_state"] == "open"  # the trial failed: open again
        assert groq["last_check"]["error"] == "upstream_error"
        metrics = _families((await client.get("/metrics")).text)
        moves = {
            (s.labels["to_state"], s.labels["origin"]): s.value
            for s in metrics["ai_provider_circuit_breaker_transitions"].samples
            if s.labels["provider"] == "groq" and s.name.endswith("_total")
        }
        # One trial per reset period, all decided here (no fleet without REDIS_URL).
        assert moves == {("open", "local"): 2.0, ("half_open", "local"): 1.0}
        sandbox.clear("groq")
        clock.advance(RESET_S)
        groq = await _eventually(
            lambda: _healthy(client, "groq"), timeout_s=20 * PROBE_INTERVAL_S + 2, what="heal"
        )
        assert groq["breaker_state"] == "closed"
        await _assert_ready(client)


async def _healthy(client: Client, name: str) -> dict[str, Any] | None:
    found = (await _providers(client))[name]
    return found if found["status"] == "healthy" else None


def _families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def _key_states(text: str, key_id: str) -> dict[str, float]:
    samples = _families(text)["ai_provider_key_state"].samples
    return {s.labels["state"]: s.value for s in samples if s.labels["key_id"] == key_id}


async def test_a_key_refused_once_is_retired_then_probed_back(sandbox: Sandbox) -> None:
    """The sandbox refuses Groq's second key once. The call that met the refusal retires it
    (and is answered with the next key); health shows the key by its short hash as retired,
    never the key. A probe one interval later finds it accepted: it is active again and calls
    use it."""
    refused = GROQ_KEYS[1]
    refused_id = hashlib.sha256(refused.encode()).hexdigest()[:8]
    clock = ManualClock()
    settings = _settings(sandbox, ai_provider_priority="groq")
    async with gateway_client(create_app(settings, manual_clock(clock))) as client:
        await _probe_rounds(sandbox, 1)
        sandbox.chaos("groq", refuse_keys={refused: 1})
        bodies = [
            (await client.post("/v1/ai/completions", json={"prompt": f"k{i}"})).json()
            for i in range(2)
        ]
        # Round-robin: the second call drew the refused key, then answered with the third.
        route = [(a["provider"], a["error_type"]) for a in bodies[1]["attempts"]]
        assert route == [("groq", "auth"), ("groq", None)]
        assert all(b["provider"] == "groq" for b in bodies)

        await _probe_rounds(sandbox, 2)  # rounds inside the interval leave it retired
        response = await client.get("/health/ai-providers")
        groq = {p["provider"]: p for p in response.json()["providers"]}["groq"]
        keys = {k["id"]: k for k in groq["keys"]}
        assert set(keys) == {hashlib.sha256(k.encode()).hexdigest()[:8] for k in GROQ_KEYS}
        assert keys[refused_id]["state"] == "retired"
        assert keys[refused_id]["retired_at"] == clock.now().isoformat()
        assert (groq["keys_total"], groq["keys_available"]) == (3, 2)
        assert groq["status"] == "degraded"
        assert "an API key was refused" in groq["reasons"]
        metrics_text = (await client.get("/metrics")).text
        assert _key_states(metrics_text, refused_id) == {
            "active": 0.0,
            "resting": 0.0,
            "retired": 1.0,
        }
        for text in (response.text, metrics_text):
            assert "gsk-sandbox" not in text  # never the key, nor its masked prefix

        rechecks = sandbox.stats()["groq"]["probes_by_key"].get(refused, 0)
        clock.advance(PROBE_INTERVAL_S)  # the re-check is due
        await _eventually(
            lambda: sandbox.stats()["groq"]["probes_by_key"].get(refused, 0) > rechecks,
            what="a probe with the retired key",
        )
        groq = await _eventually(lambda: _healthy(client, "groq"), what="the key's return")
        keys = {k["id"]: k for k in groq["keys"]}
        assert keys[refused_id] == {"id": refused_id, "state": "active", "retired_at": None}
        assert groq["keys_available"] == 3
        assert _key_states((await client.get("/metrics")).text, refused_id)["active"] == 1.0

        used = sandbox.stats()["groq"]["by_key"].get(refused, 0)
        for i in range(3):  # one full round-robin turn
            answer = await client.post("/v1/ai/completions", json={"prompt": f"again {i}"})
            assert answer.status_code == 200
            assert [a["error_type"] for a in answer.json()["attempts"]] == [None]
        assert sandbox.stats()["groq"]["by_key"][refused] == used + 1


async def test_a_key_still_refused_stays_retired(sandbox: Sandbox) -> None:
    """A re-check the provider refuses again leaves the key retired, and the next re-check
    waits another interval: a revoked key costs one free call per interval."""
    refused = GROQ_KEYS[1]
    clock = ManualClock()
    settings = _settings(sandbox, ai_provider_priority="groq")
    async with gateway_client(create_app(settings, manual_clock(clock))) as client:
        await _probe_rounds(sandbox, 1)
        sandbox.chaos("groq", refuse_keys={refused: 1000})
        for i in range(2):
            await client.post("/v1/ai/completions", json={"prompt": f"k{i}"})
        clock.advance(PROBE_INTERVAL_S)
        await _probe_rounds(sandbox, 3)
        probes = sandbox.stats()["groq"]["probes_by_key"].get(refused, 0)
        assert probes == 1  # one re-check in this interval, however many rounds ran
        groq = (await _providers(client))["groq"]
        states = {k["state"] for k in groq["keys"]}
        assert states == {"active", "retired"}


async def test_ready_answers_for_this_replica_ledger(sandbox: Sandbox) -> None:
    """Readiness is about this replica: its ledger database locked (by another connection)
    until the buffer reaches LEDGER_BUFFER_MAX_ROWS, so further rows would be dropped, makes
    it not ready; once the lock is gone and the writer has caught up it is ready again."""
    settings = sandbox_settings(
        sandbox.base_url,
        ledger_buffer_max_rows=2,
        ledger_flush_interval_s=0.05,
        database_busy_timeout_s=0.05,
    )
    path = make_url(settings.database_url).database
    assert path
    async with gateway_client(create_app(settings)) as client:
        ready = await client.get("/health/ready")
        assert ready.status_code == 200
        assert ready.json()["ledger"] == {
            "writer_alive": True,
            "buffered_rows": 0,
            "buffer_max_rows": 2,
        }
        lock = sqlite3.connect(path, isolation_level=None, timeout=10, check_same_thread=False)
        try:
            lock.execute("BEGIN EXCLUSIVE")
            for i in range(2):
                answer = await client.post("/v1/ai/completions", json={"prompt": f"r{i}"})
                assert answer.status_code == 200
            ready = await client.get("/health/ready")
            assert ready.status_code == 503
            body = ready.json()
            assert body["status"] == "not_ready"
            assert body["ledger"] == {
                "writer_alive": True,
                "buffered_rows": 2,
                "buffer_max_rows": 2,
            }
            assert "ledger buffer is full" in body["detail"]
        finally:
            lock.execute("ROLLBACK")
            lock.close()

        async def ready_again() -> dict[str, Any] | None:
            answer = await client.get("/health/ready")
            return answer.json() if answer.status_code == 200 else None

        body = await _eventually(ready_again, timeout_s=15, what="the ledger catching up")
        assert body["ledger"]["buffered_rows"] == 0


async def test_live_is_minimal(client: Client) -> None:
    """Liveness says the process answers, and which build it is: nothing it depends on."""
    live = await client.get("/health/live")
    assert live.status_code == 200
    build = build_info()
    assert live.json() == {"status": "ok", "version": build.version, "commit": build.commit}
