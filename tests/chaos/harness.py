"""What every chaos scenario does: start the gateway as a real process, drive paced concurrent
load through its HTTP API, switch faults at the network edge while the load runs, watch the
breakers and the upstream counters, then stop the service and collect what the invariants
are computed from (responses, the timeline, the sandbox's and the proxies' counters, the
ledger).

Times in a run are seconds since the run started, on the test process's monotonic clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.chaos.proxy import FaultProxy
from tests.support.client import AUTH_HEADERS
from tests.support.ledger import ledger_rows
from tests.support.redis import RedisServer
from tests.support.sandbox import Sandbox, fresh_database_url
from tests.support.service import ServiceProcess, sandbox_env

PROVIDERS = ("groq", "gemini", "azure", "openai")
# Upstream paths below the sandbox's root, per provider (what a base URL points at).
UPSTREAM_PATHS = {
    "groq": "/groq/openai/v1",
    "gemini": "/gemini",
    "azure": "/azure",
    "openai": "/openai/v1",
}
BASE_URL_ENV = {
    "groq": "GROQ_BASE_URL",
    "gemini": "GEMINI_BASE_URL",
    "azure": "AZURE_OPENAI_ENDPOINT",
    "openai": "OPENAI_BASE_URL",
}
# Short enough that a scenario sees breakers open and close within seconds.
FAST_BREAKERS = {
    f"{prefix}_{name}": value
    for prefix in ("GROQ", "GEMINI", "AZURE_OPENAI", "OPENAI")
    for name, value in (("BREAKER_FAIL_MAX", "5"), ("BREAKER_RESET_TIMEOUT_S", "1"))
}
BASE_ENV = {
    # Probes run once at start; during the run only completions reach the upstreams.
    "AI_HEALTH_PROBE_INTERVAL_S": "600",
    "AI_REQUEST_DEADLINE_S": "5",
    **FAST_BREAKERS,
}
WATCH_INTERVAL_S = 0.1

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str, *names: str) -> list[tuple[str, dict[str, str], float]]:
    """The samples of the named families from Prometheus text (cheap: no full parser)."""
    found: list[tuple[str, dict[str, str], float]] = []
    for line in text.splitlines():
        if not line.startswith(names):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, labels, value = match.groups()
        found.append((name, dict(_LABEL.findall(labels or "")), float(value)))
    return found


def stream_summary(text: str) -> dict[str, Any]:
    """A streamed answer read back: its text, who answered, and how it ended (`done` after
    [DONE]; `stream_error` the code of an error event)."""
    pieces: list[str] = []
    provider: str | None = None
    error: str | None = None
    done = False
    for line in text.splitlines():
        if not line.startswith("data: "):
            continue
        data = line.removeprefix("data: ")
        if data == "[DONE]":
            done = True
            continue
        event = json.loads(data)
        if isinstance(event.get("error"), dict):
            error = str(event["error"].get("code"))
            continue
        provider = event.get("provider", provider)
        for choice in event.get("choices") or []:
            pieces.append((choice.get("delta") or {}).get("content") or "")
    return {"content": "".join(pieces), "provider": provider, "stream_error": error, "done": done}


def metric_total(text: str, name: str, **labels: str) -> float:
    """The sum of a family's samples whose labels include `labels`."""
    return sum(
        value
        for sample, have, value in parse_metrics(text, name)
        if sample == name and all(have.get(k) == v for k, v in labels.items())
    )


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request through the gateway, as the caller saw it."""

    index: int
    phase: str
    started: float  # run time the request was sent
    latency_s: float
    status: int | None  # None: no HTTP answer at all
    body: dict[str, Any] | None
    content_type: str
    retry_after: str | None
    error: str | None = None  # the transport error when there was no answer
    timeout_s: float | None = None  # the request's own deadline, if it set one
    replica: int = 0  # which of the run's service processes it was sent to

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def problem_type(self) -> str | None:
        if self.body is None or not isinstance(self.body.get("type"), str):
            return None
        return str(self.body["type"]).rsplit("/", 1)[-1]

    @property
    def cost_usd(self) -> float:
        """What the gateway says the answer cost (0 without an answer)."""
        value = (self.body or {}).get("cost_usd") if self.ok else None
        return float(value) if isinstance(value, int | float) else 0.0

    @property
    def attempts(self) -> list[dict[str, Any]]:
        found = (self.body or {}).get("attempts")
        return found if isinstance(found, list) else []


@dataclass(frozen=True, slots=True)
class Sample:
    """One look at the gateway's breakers and the upstreams' counters."""

    t: float
    breaker: dict[str, int]  # provider -> 0 closed, 1 open, 2 half-open
    transitions: dict[tuple[str, str], float]  # (provider, to_state) -> count so far
    timeout_s: dict[str, float]
    calls: dict[str, int]  # provider -> completion calls seen at the network edge so far


@dataclass(frozen=True, slots=True)
class ReplicaSample:
    """One look at a replica as a load balancer and an SRE see it: readiness, and its view of
    the shared state (Redis). None: that read got no answer."""

    t: float
    replica: int
    ready: int | None  # /health/ready status
    shared_state: str | None  # /health/ai-providers `shared_state`: ok, degraded, disabled
    shared_replicas: int | None  # /health/ai-providers `shared_replicas`
    shared_up: float | None  # the ai_shared_state_up gauge (None also: no such series)


@dataclass
class Observation:
    """Everything a scenario's invariants are computed from."""

    scenario: str
    outcomes: list[Outcome]
    samples: list[Sample]
    events: list[tuple[float, str]]
    edge_calls: dict[str, int | None]  # None: the edge cannot see them (refused, DNS)
    gateway_calls: dict[str, int]  # ai_provider_requests_total per provider
    metrics: str  # the last /metrics text before the service stopped
    ledger: list[dict[str, Any]]
    exit_code: int | None
    duration_s: float
    sandbox_stats: dict[str, Any]
    proxy_stats: dict[str, dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    # With several replicas: each live replica's last /metrics (`metrics` is the first's),
    # and every replica's readiness and shared-state view over the run.
    replica_metrics: tuple[str, ...] = ()
    replica_samples: list[ReplicaSample] = field(default_factory=list)

    def transitions(self, provider: str) -> dict[str, int]:
        return {
            state: int(
                metric_total(
                    self.metrics,
                    "ai_provider_circuit_breaker_transitions_total",
                    provider=provider,
                    to_state=state,
                )
            )
            for state in ("open", "half_open", "closed")
        }

    def latencies_ms(self) -> list[float]:
        return sorted(o.latency_s * 1000 for o in self.outcomes)

    def percentile_ms(self, q: float) -> float:
        values = self.latencies_ms()
        if not values:
            return 0.0
        if len(values) == 1:
            return values[0]
        return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


class AsyncSandbox:
    """The sandbox's chaos controls and counters, from inside a running scenario."""

    def __init__(self, base_url: str) -> None:
        self._client = httpx.AsyncClient(base_url=base_url, timeout=5, trust_env=False)

    async def chaos(self, provider: str, **config: Any) -> None:
        (await self._client.put(f"/_chaos/{provider}", json=config)).raise_for_status()

    async def patch(self, provider: str, **config: Any) -> None:
        (await self._client.patch(f"/_chaos/{provider}", json=config)).raise_for_status()

    async def clear(self, provider: str | None = None) -> None:
        path = f"/_chaos/{provider}" if provider else "/_chaos"
        (await self._client.delete(path)).raise_for_status()

    async def stats(self) -> dict[str, Any]:
        response = await self._client.get("/_stats")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    async def aclose(self) -> None:
        await self._client.aclose()


class SharedRedis:
    """The run's own redis-server (`tests/support/redis.py`) behind a `FaultProxy`: the
    replicas' REDIS_URL names the proxy, so a scenario refuses, slows or cuts Redis at the
    network edge, and `kill` / `restart` give it a Redis that died and came back empty."""

    def __init__(self) -> None:
        self.server = RedisServer()
        self.proxy: FaultProxy | None = None
        # Keys of this run only, should a server ever be shared.
        self.prefix = f"chaos{uuid.uuid4().hex[:8]}:"

    def start(self) -> SharedRedis:
        self.server.start()
        self.proxy = FaultProxy("127.0.0.1", self.server.port).start()
        return self

    @property
    def url(self) -> str:
        assert self.proxy is not None, "start the Redis first"
        return f"redis://127.0.0.1:{self.proxy.port}/0"

    async def kill(self) -> None:
        """SIGKILL the redis-server: everything it held is gone (no persistence)."""
        await asyncio.to_thread(self.server.stop)

    async def restart(self) -> None:
        """Start it again on the same port, empty."""
        await asyncio.to_thread(self.server.start)

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None
        self.server.stop()


Action = Callable[[], Awaitable[None] | None]


class ChaosRun:
    """One scenario's service process, proxies, load and timeline."""

    def __init__(
        self,
        scenario: str,
        sandbox: Sandbox,
        env: dict[str, str],
        proxied: tuple[str, ...] = (),
        edge_blind: tuple[str, ...] = (),
        *,
        replicas: int = 1,
        redis: bool = False,
    ) -> None:
        self.scenario = scenario
        self.sandbox_sync = sandbox
        self.sandbox = AsyncSandbox(sandbox.base_url)
        self.database_url = fresh_database_url()
        sandbox_port = int(sandbox.base_url.rsplit(":", 1)[1])
        self.proxies = {name: FaultProxy("127.0.0.1", sandbox_port).start() for name in proxied}
        self.edge_blind = set(edge_blind)
        routed = {
            BASE_URL_ENV[name]: proxy.url(UPSTREAM_PATHS[name])
            for name, proxy in self.proxies.items()
        }
        self.env = {**BASE_ENV, **routed, **env}
        self.deadline_s = float(self.env["AI_REQUEST_DEADLINE_S"])
        # A detection batch has its own, longer deadline.
        self.client_timeout_s = (
            max(self.deadline_s, float(self.env.get("LITERATURE_BATCH_DEADLINE_S", 0))) + 10
        )
        self.service = ServiceProcess(sandbox_env(sandbox.base_url, self.database_url, **self.env))
        # Several replicas: service processes on one ledger database (and, with `redis`, one
        # Redis); `service` is the first. Load goes round-robin unless a replica is named.
        self.replica_count = replicas
        self.replicas = [self.service]
        self.redis = SharedRedis() if redis else None
        self.replica_samples: list[ReplicaSample] = []
        self._clients: list[httpx.AsyncClient] = []
        self._killed: set[int] = set()
        self._replica_watcher: asyncio.Task[None] | None = None
        self.exit_codes: dict[int, int] = {}
        self.t0 = 0.0
        self.outcomes: list[Outcome] = []
        self.samples: list[Sample] = []
        self.events: list[tuple[float, str]] = []
        self.notes: list[str] = []
        self._watcher: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._counter = 0
        self._retired: list[httpx.AsyncClient] = []
        self.exit_code: int | None = None
        self.last_metrics = ""

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> ChaosRun:
        if self.redis is not None:
            await asyncio.to_thread(self.redis.start)
            self.env = {"REDIS_URL": self.redis.url, "REDIS_KEY_PREFIX": self.redis.prefix} | (
                self.env
            )
        self.service = await self._launch(self.env)
        self.replicas = [self.service]
        # One after the other: the first has run the ledger's migrations.
        for _ in range(1, self.replica_count):
            self.replicas.append(await self._launch(self.env))
        self.t0 = time.monotonic()
        self._clients = [self._new_client(service) for service in self.replicas]
        self._client = self._clients[0]
        self._watcher = asyncio.create_task(self._watch())
        if self.redis is not None or self.replica_count > 1:
            self._replica_watcher = asyncio.create_task(self._watch_replicas())
        return self

    async def _launch(self, env: dict[str, str]) -> ServiceProcess:
        """Start the service; once more on another port if the first start failed (the free
        port it was given can be taken by another process before the service binds it)."""
        for attempt in range(2):
            service = ServiceProcess(
                sandbox_env(self.sandbox_sync.base_url, self.database_url, **env)
            )
            try:
                return await asyncio.to_thread(service.start)
            except RuntimeError:
                if service.process is not None and service.process.poll() is None:
                    await asyncio.to_thread(service.stop, signal.SIGKILL)
                if attempt:
                    raise
                self.notes.append("the service failed to start once; started on another port")
        raise AssertionError("unreachable")

    def _new_client(self, service: ServiceProcess | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=(service or self.service).url,
            headers=AUTH_HEADERS,
            trust_env=False,
            # Far past any deadline: a request that outlives its deadline is measured, not hung.
            timeout=self.client_timeout_s,
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=100),
        )

    async def metrics(self) -> str:
        """The service's /metrics text now."""
        assert self._client is not None
        return (await self._client.get("/metrics")).text

    def now(self) -> float:
        return time.monotonic() - self.t0

    def mark(self, text: str) -> float:
        """Note an event on the run's timeline; returns its time."""
        at = self.now()
        self.events.append((at, text))
        return at

    async def restart(self, sig: signal.Signals, *, env: dict[str, str] | None = None) -> int:
        """Stop the service with `sig` and start it again on the same ledger database."""
        assert self._client is not None
        self.mark(f"service {sig.name}")
        code = await asyncio.to_thread(self.service.stop, sig)
        # Requests still in flight keep their client; it is closed when the run finishes.
        self._retired.append(self._client)
        self.service = await self._launch({**self.env, **(env or {})})
        self.mark("service restarted")
        self._client = self._new_client()
        self.replicas[0] = self.service
        if self._clients:
            self._clients[0] = self._client
        return code

    async def kill(self, replica: int, sig: signal.Signals = signal.SIGKILL) -> int:
        """Stop one replica with `sig` for good (no restart); the others keep serving.
        Requests in flight to it end without an answer; its exit code is returned."""
        self.mark(f"replica {replica} {sig.name}")
        # Counted out first: a look at it still in flight when the signal lands is dropped.
        self._killed.add(replica)
        code = await asyncio.to_thread(self.replicas[replica].stop, sig)
        self.exit_codes[replica] = code
        return code

    def live(self) -> list[int]:
        """The replicas not killed by the scenario."""
        return [i for i in range(len(self.replicas)) if i not in self._killed]

    async def get(self, replica: int, path: str) -> httpx.Response:
        """GET `path` on one replica, as the caller (for /v1/budgets, health)."""
        return await self._clients[replica].get(path)

    async def until_shared(self, timeout_s: float = 15.0) -> float:
        """Wait until every live replica uses Redis and has counted every live replica in
        its heartbeat (so a share taken in an outage is 1/N of what was left), and its
        budgets come from Redis; returns the seconds waited."""
        started = time.monotonic()
        seen: list[tuple[object, ...]] = []
        while time.monotonic() - started < timeout_s:
            seen = []
            for i in self.live():
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                    health = (await self.get(i, "/health/ai-providers")).json()
                    store = (await self.get(i, "/v1/budgets")).json()["store"]
                    seen.append((health["shared_state"], health["shared_replicas"], store))
            want = ("ok", len(self.live()), "redis")
            if len(seen) == len(self.live()) and all(s == want for s in seen):
                return time.monotonic() - started
            await asyncio.sleep(0.05)
        raise AssertionError(f"replicas never all on Redis: {seen}")

    async def finish(self) -> Observation:
        """Stop watching, read the last metrics, stop the service gracefully (the ledger is
        flushed on SIGTERM) and collect the counters and ledger rows."""
        for watcher in (self._watcher, self._replica_watcher):
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
        assert self._client is not None
        if len(self.replicas) == 1:
            with contextlib.suppress(httpx.HTTPError):
                self.last_metrics = (await self._client.get("/metrics")).text
            replica_metrics: tuple[str, ...] = ()
        else:
            texts = []
            for i in self.live():
                with contextlib.suppress(httpx.HTTPError):
                    texts.append((await self._clients[i].get("/metrics")).text)
            replica_metrics = tuple(texts)
            self.last_metrics = texts[0] if texts else ""
        for client in (*self._retired, self._client, *self._clients):
            await client.aclose()  # closing one twice is harmless
        duration = self.now()
        if len(self.replicas) == 1:
            self.exit_code = await asyncio.to_thread(self.service.stop, signal.SIGTERM)
        else:
            live = self.live()
            codes = await asyncio.gather(
                *(asyncio.to_thread(self.replicas[i].stop, signal.SIGTERM) for i in live)
            )
            self.exit_codes.update(zip(live, codes, strict=True))
            self.exit_code = self.exit_codes.get(0)
        if self.redis is not None:
            await asyncio.to_thread(self.redis.close)
        stats = await self.sandbox.stats()
        await self.sandbox.aclose()
        proxy_stats = {name: proxy.snapshot() for name, proxy in self.proxies.items()}
        self.close_proxies()
        edge = self._edge_calls(stats, proxy_stats)
        gateway = {
            name: sum(
                int(metric_total(text, "ai_provider_requests_total", provider=name))
                for text in (replica_metrics or (self.last_metrics,))
            )
            for name in PROVIDERS
        }
        return Observation(
            scenario=self.scenario,
            outcomes=sorted(self.outcomes, key=lambda o: o.index),
            samples=self.samples,
            events=self.events,
            edge_calls=edge,
            gateway_calls=gateway,
            metrics=self.last_metrics,
            ledger=ledger_rows(self.database_url),
            exit_code=self.exit_code,
            duration_s=duration,
            sandbox_stats=stats,
            proxy_stats=proxy_stats,
            notes=self.notes,
            replica_metrics=replica_metrics,
            replica_samples=self.replica_samples,
        )

    def close_proxies(self) -> None:
        for proxy in self.proxies.values():
            proxy.stop()
        self.proxies = {}

    async def abort(self) -> None:
        """Cleanup after a failure: nothing may outlive the test."""
        for watcher in (self._watcher, self._replica_watcher):
            if watcher is not None:
                watcher.cancel()
        for client in (*self._retired, self._client, *self._clients):
            if client is not None:
                await client.aclose()
        services = [self.service, *(r for r in self.replicas if r is not self.service)]
        for service in services:
            if service.process is not None and service.process.poll() is None:
                await asyncio.to_thread(service.stop, signal.SIGKILL)
        with contextlib.suppress(httpx.HTTPError):
            await self.sandbox.aclose()
        self.close_proxies()
        if self.redis is not None:
            await asyncio.to_thread(self.redis.close)

    def _edge_calls(
        self, stats: dict[str, Any], proxies: dict[str, dict[str, Any]]
    ) -> dict[str, int | None]:
        edge: dict[str, int | None] = {}
        for name in PROVIDERS:
            if name in self.edge_blind:
                edge[name] = None
            elif name in proxies:
                edge[name] = int(proxies[name]["requests"].get("POST", 0))
            else:
                edge[name] = int(stats.get(name, {}).get("completions", 0))
        return edge

    # -- load --------------------------------------------------------------------------------

    async def load(
        self,
        requests: int,
        *,
        rate: float,
        concurrency: int = 20,
        phase: str = "load",
        body: Callable[[int], dict[str, Any]] | None = None,
        path: str = "/v1/ai/completions",
        replica: int | None = None,
    ) -> list[Outcome]:
        """`requests` requests paced at `rate` per second, at most `concurrency` in flight;
        to `replica`, or round-robin over the run's replicas (by request index)."""
        assert self._client is not None
        clients = list(self._clients) if len(self._clients) > 1 else [self._client]
        gate = asyncio.Semaphore(concurrency)
        start = time.monotonic()
        tasks: list[asyncio.Task[Outcome]] = []
        make = body or self._default_body
        for _ in range(requests):
            index = self._counter
            self._counter += 1
            delay = start + len(tasks) / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await gate.acquire()
            target = index % len(clients) if replica is None else replica
            tasks.append(
                asyncio.create_task(
                    self._one(clients[target], gate, index, phase, make(index), path, target)
                )
            )
        done = list(await asyncio.gather(*tasks))
        self.outcomes.extend(done)
        return done

    def _default_body(self, index: int) -> dict[str, Any]:
        # Unique prompts: the response cache must never hide an upstream call.
        return {"prompt": f"chaos {self.scenario} request {index}", "max_tokens": 16}

    async def _one(
        self,
        client: httpx.AsyncClient,
        gate: asyncio.Semaphore,
        index: int,
        phase: str,
        body: dict[str, Any],
        path: str,
        replica: int = 0,
    ) -> Outcome:
        sent = self.now()
        started = time.monotonic()
        try:
            response = await client.post(path, json=body)
        except httpx.HTTPError as exc:
            return Outcome(
                index,
                phase,
                sent,
                time.monotonic() - started,
                None,
                None,
                "",
                None,
                error=type(exc).__name__,
                timeout_s=body.get("timeout_s"),
                replica=replica,
            )
        finally:
            gate.release()
        latency = time.monotonic() - started
        content_type = response.headers.get("content-type", "")
        data: dict[str, Any] | None = None
        if content_type.startswith("text/event-stream"):
            data = stream_summary(response.text)
        elif "json" in content_type:
            with contextlib.suppress(ValueError):
                parsed = response.json()
                data = parsed if isinstance(parsed, dict) else None
        return Outcome(
            index,
            phase,
            sent,
            latency,
            response.status_code,
            data,
            content_type,
            response.headers.get("retry-after"),
            timeout_s=body.get("timeout_s"),
            replica=replica,
        )

    async def gather(self, *steps: Awaitable[Any]) -> None:
        """Run load and fault scripts side by side."""
        await asyncio.gather(*steps)

    async def script(self, *steps: tuple[float, str, Action]) -> None:
        """Run `(at, label, action)` steps at those run times, marking each on the timeline."""
        for at, label, action in steps:
            delay = at - self.now()
            if delay > 0:
                await asyncio.sleep(delay)
            result = action()
            if result is not None:
                await result
            self.mark(label)

    # -- watching ----------------------------------------------------------------------------

    async def _watch(self) -> None:
        """Sample breakers and edge counters every WATCH_INTERVAL_S.

        The metrics are read before the counters, so a trial call can only ever be counted in
        a later sample than its half-open transition (the breaker-gate check relies on this).
        """
        async with httpx.AsyncClient(timeout=2, trust_env=False) as client:
            while True:
                await asyncio.sleep(WATCH_INTERVAL_S)
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    text = (await client.get(f"{self._watched().url}/metrics")).text
                    at = self.now()
                    stats = (await client.get(f"{self.sandbox_sync.base_url}/_stats")).json()
                    self.samples.append(self._sample(at, text, stats))

    def _watched(self) -> ServiceProcess:
        """The replica whose breakers are sampled: the first one not killed."""
        live = self.live()
        return self.replicas[live[0]] if live else self.service

    async def _watch_replicas(self) -> None:
        """Every replica's readiness and view of the shared state, every WATCH_INTERVAL_S,
        as a load balancer (/health/ready) and an SRE (/health/ai-providers, the
        ai_shared_state_up gauge) see them."""
        async with httpx.AsyncClient(timeout=2, trust_env=False) as client:
            while True:
                await asyncio.sleep(WATCH_INTERVAL_S)
                looks = await asyncio.gather(
                    *(self._look(client, i) for i in self.live()), return_exceptions=True
                )
                self.replica_samples.extend(
                    s
                    for s in looks
                    if isinstance(s, ReplicaSample) and s.replica not in self._killed
                )

    async def _look(self, client: httpx.AsyncClient, replica: int) -> ReplicaSample:
        url = self.replicas[replica].url
        at = self.now()
        ready: int | None = None
        state: str | None = None
        seen: int | None = None
        up: float | None = None
        with contextlib.suppress(httpx.HTTPError):
            ready = (await client.get(f"{url}/health/ready")).status_code
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
            report = (await client.get(f"{url}/health/ai-providers")).json()
            state = report["shared_state"]
            seen = report["shared_replicas"]
        with contextlib.suppress(httpx.HTTPError):
            text = (await client.get(f"{url}/metrics")).text
            found = parse_metrics(text, "ai_shared_state_up")
            up = next((v for name, _, v in found if name == "ai_shared_state_up"), None)
        return ReplicaSample(at, replica, ready, state, seen, up)

    def _sample(self, at: float, text: str, stats: dict[str, Any]) -> Sample:
        breaker: dict[str, int] = {}
        transitions: dict[tuple[str, str], float] = {}
        timeouts: dict[str, float] = {}
        requests: Counter[str] = Counter()
        for name, labels, value in parse_metrics(
            text,
            "ai_provider_circuit_breaker_state",
            "ai_provider_circuit_breaker_transitions_total",
            "ai_provider_timeout_seconds",
            "ai_provider_requests_total",
        ):
            provider = labels.get("provider", "")
            if name == "ai_provider_circuit_breaker_state":
                breaker[provider] = int(value)
            elif name == "ai_provider_circuit_breaker_transitions_total":
                key = (provider, labels.get("to_state", ""))  # both origins: this replica's view
                transitions[key] = transitions.get(key, 0.0) + value
            elif name == "ai_provider_timeout_seconds":
                timeouts[provider] = value
            elif name == "ai_provider_requests_total":
                requests[provider] += int(value)
        calls: dict[str, int] = {}
        for provider in PROVIDERS:
            if provider in self.edge_blind:
                calls[provider] = requests[provider]  # only the gateway saw these
            elif provider in self.proxies:
                calls[provider] = int(self.proxies[provider].stats.requests.get("POST", 0))
            else:
                calls[provider] = int(stats.get(provider, {}).get("completions", 0))
        return Sample(at, breaker, transitions, timeouts, calls)
