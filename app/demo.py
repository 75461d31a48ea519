"""`make demo`: the sandbox and the real service as two processes on loopback, a short
scenario through the HTTP API (normal calls, Groq failing so the fallback shows, Groq back),
and a readable summary. Exits non-zero if the service did not behave as described."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from app.demo_literature import literature_env, run_literature_demo
from infra.sandbox.process import spawn_sandbox

ROOT = Path(__file__).resolve().parents[1]
BREAKER_RESET_S = 2.0
DEMO_CALLER_KEY = "demo-caller-key"
SANDBOX_KEYS = {
    "GATEWAY_API_KEYS": f"demo:{DEMO_CALLER_KEY}",
    "GROQ_API_KEYS": "gsk-sandbox-1,gsk-sandbox-2",
    "GEMINI_API_KEY": "gemini-sandbox-key",
    "AZURE_OPENAI_API_KEY": "azure-sandbox-key",
    "AZURE_OPENAI_DEPLOYMENT": "gpt-4o-mini",
    "OPENAI_API_KEY": "sk-sandbox-openai",
}


@dataclass
class Step:
    name: str
    expected_provider: str
    providers: Counter[str]
    failures: int
    cost_usd: float
    p50_ms: float


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_http(url: str, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode}")
        try:
            if httpx.get(url, timeout=1.0, trust_env=False).status_code < 500:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer at {url}")


def _start_sandbox(stack: ExitStack) -> str:
    process, base_url = spawn_sandbox()
    stack.callback(_stop, process)
    return base_url


def _start_service(stack: ExitStack, sandbox: str) -> str:
    port = _free_port()
    env = {
        **os.environ,
        **SANDBOX_KEYS,
        "GROQ_BASE_URL": f"{sandbox}/groq/openai/v1",
        "GEMINI_BASE_URL": f"{sandbox}/gemini",
        "AZURE_OPENAI_ENDPOINT": f"{sandbox}/azure",
        "OPENAI_BASE_URL": f"{sandbox}/openai/v1",
        "LOG_LEVEL": "WARNING",
        # Short enough for the demo to show the breaker closing again after Groq is back.
        "GROQ_BREAKER_RESET_TIMEOUT_S": str(BREAKER_RESET_S),
        "GROQ_RPM_PER_KEY": "1000",
        **literature_env(sandbox),
    }
    process = subprocess.Popen(  # noqa: S603 - our own module
        [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
    )
    stack.callback(_stop, process)
    url = f"http://127.0.0.1:{port}"
    _wait_http(f"{url}/health/live", process, "the service")
    return url


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _run_step(client: httpx.Client, name: str, expected: str, calls: int) -> Step:
    providers: Counter[str] = Counter()
    failures = 0
    cost = 0.0
    latencies: list[float] = []
    for i in range(calls):
        response = client.post(
            "/v1/ai/completions",
            json={"prompt": f"Summarise paper {i} in one line.", "intent": "analysis"},
        )
        if response.status_code != 200:
            failures += 1
            continue
        body: dict[str, Any] = response.json()
        providers[body["provider"]] += 1
        cost += body["cost_usd"]
        latencies.append(body["latency_ms"])
    latencies.sort()
    p50 = latencies[len(latencies) // 2] if latencies else 0.0
    return Step(name, expected, providers, failures, cost, p50)


def run_demo() -> int:
    with ExitStack() as stack:
        print("starting the sandbox and the service on 127.0.0.1 ...")
        sandbox = _start_sandbox(stack)
        service = _start_service(stack, sandbox)
        print(f"  sandbox {sandbox}\n  service {service}\n")
        chaos = stack.enter_context(httpx.Client(base_url=sandbox, trust_env=False, timeout=5))
        client = stack.enter_context(
            httpx.Client(
                base_url=service,
                trust_env=False,
                timeout=30,
                headers={"Authorization": f"Bearer {DEMO_CALLER_KEY}"},
            )
        )

        steps = [_run_step(client, "1. normal calls", "groq", 10)]
        chaos.put("/_chaos/groq", json={"error_rate": 1.0, "error_status": 503}).raise_for_status()
        steps.append(_run_step(client, "2. groq answers 503", "gemini", 10))
        breaker_open = _breaker(client, "groq")
        chaos.put(
            "/_chaos/gemini", json={"error_rate": 1.0, "error_status": 429, "retry_after": 30}
        ).raise_for_status()
        steps.append(_run_step(client, "3. gemini also 429", "azure", 10))
        chaos.post("/_chaos/reset").raise_for_status()
        time.sleep(BREAKER_RESET_S + 0.2)  # Groq's breaker now lets one trial call through
        steps.append(_run_step(client, "4. groq back", "groq", 10))
        breaker_closed = _breaker(client, "groq")

        failed = client.post("/v1/ai/completions", json={"prompt": "x", "temperature": 7})
        sdk_line, sdk_ok = _openai_sdk(service, chaos)

        print(f"{'step':<24}{'answered by':<32}{'failed':>7}{'cost USD':>12}{'p50 ms':>9}  ok")
        ok = True
        for step in steps:
            spread = ", ".join(f"{p}={n}" for p, n in step.providers.most_common())
            good = step.failures == 0 and step.providers.get(step.expected_provider) == sum(
                step.providers.values()
            )
            ok &= good
            verdict = "yes" if good else f"NO (expected {step.expected_provider})"
            print(
                f"{step.name:<24}{spread:<32}{step.failures:>7}{step.cost_usd:>12.6f}"
                f"{step.p50_ms:>9.1f}  {verdict}"
            )
        detail = failed.json().get("detail")
        print(f"\nbad input (temperature 7) -> HTTP {failed.status_code}: {detail}")
        print(f"openai SDK via /v1/chat/completions -> {sdk_line}")
        print(f"groq circuit breaker: {breaker_open} after step 2, {breaker_closed} after step 4")
        ok &= failed.status_code == 400 and sdk_ok
        ok &= (breaker_open, breaker_closed) == ("open", "closed")
        print()
        ok &= run_literature_demo(client, chaos)
        print("\ndemo", "passed" if ok else "FAILED")
        return 0 if ok else 1


def _breaker(client: httpx.Client, provider: str) -> str:
    report = client.get("/health/ai-providers").json()
    return str(next(p for p in report["providers"] if p["provider"] == provider)["breaker_state"])


def _openai_sdk(service: str, chaos: httpx.Client) -> tuple[str, bool]:
    """One answer and one stream through the official SDK; the stream must arrive in pieces,
    its first text well before its end."""
    try:
        import openai
    except ImportError:  # the SDK is a dev dependency; the demo works without it
        return "skipped (openai SDK not installed)", True
    client = openai.OpenAI(base_url=f"{service}/v1", api_key=DEMO_CALLER_KEY, max_retries=0)
    reply = client.chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "Say hello"}]
    )
    # Groq trickles its answer over 0.6 s: the pieces should reach us as they come.
    chaos.put("/_chaos/groq", json={"slow_body_ms": 600}).raise_for_status()
    started = time.monotonic()
    first_s = None
    pieces = []
    stream = client.chat.completions.create(
        model="fast",
        messages=[{"role": "user", "content": "Stream a longer answer about CRISPR, please."}],
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first_s = time.monotonic() - started if first_s is None else first_s
            pieces.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    total_s = time.monotonic() - started
    chaos.post("/_chaos/reset").raise_for_status()
    tokens = f"{usage.completion_tokens} tokens" if usage else "no usage"
    streamed = len(pieces) > 1 and first_s is not None and first_s < total_s / 2
    return (
        f"{reply.model}: {reply.choices[0].message.content!r}\n"
        f"openai SDK, stream=True -> {len(pieces)} pieces ({tokens}); first text after "
        f"{(first_s or 0) * 1000:.0f} ms of {total_s * 1000:.0f} ms"
    ), streamed
