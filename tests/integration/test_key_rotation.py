"""Key rotation on a running service (`python -m app serve`, keys from GROQ_API_KEYS_FILE):
after the file is rewritten and SIGHUP sent, the next call goes out with the new key, a call
already in flight with the old key completes with it, and a broken rewrite leaves the keys
in use untouched."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from app.modules.ai.providers.keys import key_id
from tests.support.client import AUTH_HEADERS
from tests.support.sandbox import Sandbox, fresh_database_url
from tests.support.service import ServiceProcess, sandbox_env

OLD, NEW = "gsk-sandbox-1", "gsk-sandbox-2"


async def _until(what: str, check: Callable[[], Any], timeout_s: float = 20.0) -> None:
    """Poll `check` (no fixed sleep decides the outcome: only this overall bound)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def _groq_key_ids(service: ServiceProcess) -> list[str]:
    health = httpx.get(f"{service.url}/health/ai-providers", timeout=5, trust_env=False).json()
    (groq,) = [p for p in health["providers"] if p["provider"] == "groq"]
    return [key["id"] for key in groq["keys"]]


async def test_sighup_after_a_key_file_rewrite_moves_new_calls_and_lets_old_ones_finish(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    keys = tmp_path / "groq_api_keys"
    keys.write_text(f"{OLD}\n")
    env = sandbox_env(
        sandbox.base_url,
        fresh_database_url(),
        GROQ_API_KEYS_FILE=str(keys),
        AI_PROVIDER_PRIORITY="groq,gemini,azure,openai",
    )
    del env["GROQ_API_KEYS"]  # from the file only (both set is refused)
    service = ServiceProcess(env, log_path=tmp_path / "service.log").start()
    assert service.process is not None
    sandbox.chaos("groq", latency_ms=1500)  # long enough to rotate while a call is out
    try:
        assert _groq_key_ids(service) == [key_id(OLD)]
        async with httpx.AsyncClient(
            base_url=service.url, headers=AUTH_HEADERS, timeout=30, trust_env=False
        ) as client:
            in_flight = asyncio.create_task(
                client.post("/v1/ai/completions", json={"prompt": "sent with the old key"})
            )
            await _until(
                "the call to reach groq with the old key",
                lambda: sandbox.stats()["groq"]["by_key"].get(OLD) == 1,
            )
            keys.write_text(f"{NEW}\n")
            service.process.send_signal(signal.SIGHUP)
            await _until("the reload", lambda: _groq_key_ids(service) == [key_id(NEW)])
            assert not in_flight.done()  # still waiting on groq with the old key
            sandbox.clear("groq")
            after = await client.post("/v1/ai/completions", json={"prompt": "a new call"})
            old = await in_flight
            assert old.status_code == 200, old.text
            assert old.json()["provider"] == "groq"
            assert after.status_code == 200, after.text
            assert after.json()["provider"] == "groq"
            assert sandbox.stats()["groq"]["by_key"] == {OLD: 1, NEW: 1}

            # A broken rewrite (empty: a mount mid-update) keeps the keys in use.
            keys.write_text("")
            service.process.send_signal(signal.SIGHUP)
            await _until("the refusal in the log", lambda: "key reload failed" in service.logs())
            again = await client.post("/v1/ai/completions", json={"prompt": "after the refusal"})
            assert again.status_code == 200, again.text
            assert sandbox.stats()["groq"]["by_key"] == {OLD: 1, NEW: 2}
            assert _groq_key_ids(service) == [key_id(NEW)]
        logs = service.logs()
        assert OLD not in logs
        assert NEW not in logs
    finally:
        assert service.stop() in (0, -signal.SIGTERM)
