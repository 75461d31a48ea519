"""`python -m bench.gateway_overhead` (`make bench`): what the gateway adds to an LLM call.

Starts the sandbox upstreams and the gateway (`python -m app serve`, one uvicorn worker) as
subprocesses, the gateway alone on one core and the sandbox plus this load generator on the
other, then measures at the same fixed rates, in the same run:

- baseline: straight to the sandbox's Groq chat/completions;
- gateway: the gateway's /v1/chat/completions, which goes to that same Groq endpoint;
- shared: the same gateway with `REDIS_URL` (budgets, key and caller limits, breakers and
  cache on a redis-server of the benchmark's own, on the load core), on the gateway's core;
- bare hop: a bare Litestar + httpx hop (`bench.bare_hop`) on the gateway's core, the floor
  any Python gateway of this stack pays on this machine.

The difference at each percentile is what a caller pays for the hop. A closed-loop step
then finds peak throughput of each, and of the shared gateway with two workers (both cores)
against one. Last (skip with --no-tracing), two fresh gateways against their own sandbox,
one exporting every span over OTLP/HTTP to a loopback sink, one with tracing off, show
what tracing costs. See bench/README.md for the method and how to read it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from importlib import metadata
from pathlib import Path

import aiohttp

from bench import services
from bench.loadgen import (
    Limits,
    Samples,
    Target,
    closed_loop,
    make_session,
    open_loop,
    percentile,
)
from bench.report import (
    Check,
    OpenStep,
    Run,
    added,
    checks_table,
    hop_added,
    ms,
    noise_note,
    open_loop_table,
    overhead_table,
    peak_of,
    peak_table,
    table,
    verdict,
)
from bench.services import Memory, Service

OVERHEAD_METRIC = "ai_gateway_overhead_seconds"
SHARED_UP_METRIC = "ai_shared_state_up"
# What app.core.shared logs each time a process loses Redis (an operation over its timeout).
REDIS_LOST_LOG = "shared state (Redis) unreachable"
GATEWAY = "gateway"
SHARED = "gateway (REDIS_URL)"
WORKERS2 = "gateway 2 workers (REDIS_URL)"
HOP = "bare Litestar hop"
PROMPT = "Summarise the main finding of this abstract in one sentence: results were robust."
# The team's targets (see bench/README.md).
TARGET_RATE = 200.0
TARGET_ADDED_P50_S = 0.002
TARGET_ADDED_P99_S = 0.010
TARGET_RSS_MIB = 200.0
TARGET_PEAK_SHARE = 0.90
# The contract for the shared (Redis) mode, against the in-process gateway.
TARGET_SHARED_PEAK_SHARE = 0.80
TARGET_SHARED_ADDED_P50_S = 0.0005


@dataclass(frozen=True, slots=True)
class Cores:
    """Which cores the service under test and the load side may use."""

    service: set[int]
    load: set[int]
    usable: int

    @property
    def pinned(self) -> bool:
        return self.service.isdisjoint(self.load)

    @property
    def both(self) -> set[int]:
        """For the two-worker gateway: every core the benchmark uses."""
        return self.service | self.load


@dataclass(frozen=True, slots=True)
class Processes:
    sandbox: Service
    gateway: Service
    hop: Service | None  # the bare Litestar hop, unless --no-reference
    redis: Service | None = None  # the shared mode's redis-server, unless --no-shared
    shared: Service | None = None  # the gateway with REDIS_URL, one worker

    @property
    def redis_pids(self) -> list[int]:
        return [self.redis.pid] if self.redis is not None else []

    def watch(self, service: Service) -> tuple[Service, Service] | None:
        """(Redis, `service`) when `service` is a shared-mode gateway, for `measured`."""
        if self.redis is None or service in (self.gateway, self.hop, self.sandbox):
            return None
        return (self.redis, service)


@dataclass(slots=True)
class SharedState:
    """How the shared-mode gateways saw Redis over the run (lost = a timeout or failure)."""

    name: str
    lost_warnings: int
    reasons: str  # the exceptions that made it lose Redis, counted
    up_at_end: float | None  # ai_shared_state_up summed over workers at the end


@dataclass(slots=True)
class Results:
    steps: list[OpenStep]
    peaks: list[Run]
    memory_start: Memory
    memory_open: Memory
    memory_peak: Memory
    gateway_cores: set[int]  # read back from /proc after start, not just what was asked
    shared_cores: set[int] | None = None
    workers_cores: set[int] | None = None  # the two-worker gateway, supervisor and workers
    redis_cores: set[int] | None = None
    shared_memory: Memory | None = None
    shared_states: list[SharedState] | None = None
    shared_skipped: str | None = None  # why the shared rows are missing, if they are


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gateway_overhead",
        description="Gateway overhead and throughput against the sandbox.",
    )
    parser.add_argument(
        "--rates", default="100,200,400", help="open-loop rates, requests/s (default 100,200,400)"
    )
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per rate (default 8)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up per target (default 2)")
    parser.add_argument("--peak-duration", type=float, default=8.0, help="closed-loop seconds")
    parser.add_argument("--concurrency", type=int, default=128, help="closed-loop workers (128)")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="sandbox Groq latency")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, s")
    parser.add_argument("--max-requests", type=int, default=20_000, help="hard cap per step")
    parser.add_argument("--pause", type=float, default=0.5, help="quiet seconds between steps")
    parser.add_argument("--no-reference", action="store_true", help="skip the bare Litestar hop")
    parser.add_argument(
        "--no-shared",
        action="store_true",
        help="skip the shared (REDIS_URL) mode, its Redis and the workers rows",
    )
    parser.add_argument(
        "--no-workers", action="store_true", help="skip the 2-workers against 1 peak row"
    )
    parser.add_argument(
        "--redis-timeout-s",
        type=float,
        help="REDIS_TIMEOUT_S for the shared-mode gateways (default: the gateway's own)",
    )
    parser.add_argument(
        "--no-tracing",
        action="store_true",
        help="skip the tracing on/off comparison (a second sandbox and two more gateways)",
    )
    parser.add_argument("--service-core", type=int, help="core for the gateway (default: first)")
    parser.add_argument("--load-core", type=int, help="core for sandbox + load (default: second)")
    args = parser.parse_args(argv)
    args.rate_list = [float(r) for r in args.rates.split(",") if r.strip()]
    if not args.rate_list or min(args.rate_list) <= 0:
        parser.error("--rates needs positive numbers")
    if min(args.duration, args.peak_duration, args.timeout) <= 0 or args.concurrency < 1:
        parser.error("durations, timeout and concurrency must be positive")
    if args.redis_timeout_s is not None and not 0 < args.redis_timeout_s <= 5:
        parser.error("--redis-timeout-s must be in (0, 5], as REDIS_TIMEOUT_S")
    return args


def plan_cores(args: argparse.Namespace) -> Cores:
    """Gateway on one core, everything else on another: "one worker on one core" is measured,
    not a worker competing with its own load generator. With one core, nothing is pinned."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return Cores(set(available), set(available), len(available))
    service = args.service_core if args.service_core is not None else available[0]
    load = args.load_core if args.load_core is not None else available[1]
    if service == load or not {service, load} <= set(available):
        raise SystemExit(f"--service-core/--load-core must be two of {available}")
    return Cores({service}, {load}, len(available))


def chat_body(model: str) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": PROMPT}]}).encode()


def targets(procs: Processes) -> tuple[Target, Target]:
    """The same messages both ways; the baseline names the model "fast" resolves to."""
    json_header = {"content-type": "application/json"}
    baseline = Target(
        "sandbox direct",
        f"{procs.sandbox.base_url}/groq/openai/v1/chat/completions",
        chat_body(services.GROQ_FAST_MODEL),
        {**json_header, "authorization": f"Bearer {services.GROQ_KEYS[0]}"},
    )
    return baseline, gateway_target(GATEWAY, procs.gateway)


def gateway_target(name: str, gateway: Service) -> Target:
    """The gateway's OpenAI-compatible route, with the bench caller's key (auth is on)."""
    return Target(
        name,
        f"{gateway.base_url}/v1/chat/completions",
        chat_body("fast"),
        {
            "content-type": "application/json",
            "authorization": f"Bearer {services.BENCH_CALLER_KEY}",
        },
    )


def hop_target(procs: Processes) -> Target | None:
    if procs.hop is None:
        return None
    return Target(
        HOP,
        f"{procs.hop.base_url}/v1/chat/completions",
        chat_body("fast"),
        {"content-type": "application/json"},
    )


async def start(
    logs: Path,
    cores: Cores,
    latency_ms: float,
    stack: contextlib.ExitStack,
    *,
    hop: bool,
    shared: bool,
    redis_timeout_s: float | None = None,
) -> Processes:
    """Sandbox first (the gateway probes its upstreams at start), then Redis on the load
    core (for the shared mode), then the gateways and the bare hop, all on the service core
    (an idle one costs the measured one next to nothing)."""
    sandbox = await services.start_sandbox(logs, cores.load)
    stack.callback(services.stop, sandbox)
    await services.set_upstream_latency(sandbox, "groq", latency_ms)
    redis = shared_gateway = None
    if shared:
        redis = await services.start_redis(logs, cores.load)
        stack.callback(services.stop, redis)
    env = services.gateway_env(sandbox.base_url, logs)
    gateway = await services.start_http_service(
        "gateway", ["-m", "app", "serve"], env, cores.service, logs
    )
    stack.callback(services.stop, gateway)
    if redis is not None:
        env = services.gateway_env(
            sandbox.base_url,
            logs,
            ledger="gateway-shared.db",
            redis_url=redis.base_url,
            redis_prefix="bench-1w:",
            redis_timeout_s=redis_timeout_s,
        )
        argv = ["-m", "app", "serve", "--workers", "1"]
        shared_gateway = await services.start_http_service(
            "gateway-shared", argv, env, cores.service, logs
        )
        stack.callback(services.stop, shared_gateway)
    bare = None
    if hop:
        upstream = f"{sandbox.base_url}/groq/openai/v1"
        argv = ["-m", "bench.bare_hop", "--upstream", upstream]
        argv += ["--model", services.GROQ_FAST_MODEL]
        bare = await services.start_http_service("bare-hop", argv, os.environ, cores.service, logs)
        stack.callback(services.stop, bare)
    return Processes(sandbox, gateway, bare, redis, shared_gateway)


async def start_workers(
    logs: Path,
    cores: Cores,
    procs: Processes,
    stack: contextlib.ExitStack,
    redis_timeout_s: float | None = None,
) -> Service:
    """The shared-mode gateway with two workers (needs REDIS_URL), allowed on both cores: the
    kernel places the workers, so they share the load core with the generator and Redis.
    Its own ledger, Redis prefix and free metrics ports (the default 9464 may be taken)."""
    assert procs.redis is not None
    env = services.gateway_env(
        procs.sandbox.base_url,
        logs,
        ledger="gateway-2w.db",
        redis_url=procs.redis.base_url,
        redis_prefix="bench-2w:",
        redis_timeout_s=redis_timeout_s,
        metrics_port_base=services.free_ports(2),
    )
    argv = ["-m", "app", "serve", "--workers", "2"]
    workers = await services.start_http_service("gateway-2w", argv, env, cores.both, logs)
    stack.callback(services.stop, workers)
    await services.wait_workers(workers, 2)
    services.pin_tree(workers.pid, cores.both)
    return workers


async def sanity_check(session: aiohttp.ClientSession, target: Target, provider: bool) -> None:
    """One request each way before measuring: a 404 or a fallback must not pass as speed."""
    async with session.post(target.url, data=target.body, headers=target.headers) as response:
        text = await response.text()
        if response.status != 200:
            raise services.ServiceError(f"{target.name}: HTTP {response.status}: {text[:300]}")
    answer = json.loads(text)
    if not answer.get("choices"):
        raise services.ServiceError(f"{target.name}: answer without choices: {text[:300]}")
    if provider and answer.get("provider") != "groq":
        raise services.ServiceError(
            f"{target.name}: answered by {answer.get('provider')}, not groq"
        )


async def measured(
    target: str,
    service_pids: Sequence[int],
    load_pids: Sequence[int],
    load: Callable[[], Awaitable[Samples]],
    redis_pids: Sequence[int] = (),
    watch: tuple[Service, Service] | None = None,
) -> Run:
    """Run one step and the CPU each side spent on it, as a share of one core.

    `service_pids` is the service's process tree (a supervisor and its workers), read once
    before the step; Redis, when it runs, is counted apart from the load side and from other.
    `watch` is (Redis, a shared-mode gateway): the scripts Redis ran during the step and the
    times that gateway lost Redis, which tell whether its requests took the Redis path or the
    local fallback a timeout puts it on.
    """
    if watch is not None:
        scripts_before = await services.redis_script_calls(watch[0])
        lost_before = services.log_count(watch[1], REDIS_LOST_LOG)
    started = time.perf_counter()
    service_before = services.cpu_seconds(service_pids)
    load_before = services.cpu_seconds(load_pids)
    redis_before = services.cpu_seconds(redis_pids)
    system_before = services.system_busy_seconds()
    samples = await load()
    wall = time.perf_counter() - started
    service = services.cpu_seconds(service_pids) - service_before
    load_cpu = services.cpu_seconds(load_pids) - load_before
    redis = services.cpu_seconds(redis_pids) - redis_before
    other = services.system_busy_seconds() - system_before - service - load_cpu - redis
    run = Run(
        target,
        samples,
        service / wall,
        load_cpu / wall,
        max(0.0, other) / wall,
        redis_cpu=redis / wall if redis_pids else None,
    )
    if watch is None:
        return run
    scripts = await services.redis_script_calls(watch[0]) - scripts_before
    lost = services.log_count(watch[1], REDIS_LOST_LOG) - lost_before
    return replace(run, redis_scripts=scripts, redis_lost=lost)


async def open_loop_steps(
    args: argparse.Namespace,
    procs: Processes,
    sessions: dict[str, aiohttp.ClientSession],
    admin: aiohttp.ClientSession,
) -> list[OpenStep]:
    """Baseline, gateway, shared gateway and bare hop interleaved at each rate, so drift
    affects all alike."""
    baseline, gateway = targets(procs)
    hop = hop_target(procs)
    limits = Limits(args.timeout, args.max_requests)
    load_pids = [procs.sandbox.pid, os.getpid()]

    async def gateway_run(target: Target, service: Service) -> Run:
        """A gateway's step, with the mean overhead it reports itself over the step."""
        before = await services.scrape_histogram(admin, service.base_url, OVERHEAD_METRIC)
        run = await measured(
            target.name,
            [service.pid],
            load_pids,
            partial(open_loop, sessions[target.name], target, rate, args.duration, limits),
            procs.redis_pids,
            procs.watch(service),
        )
        after = await services.scrape_histogram(admin, service.base_url, OVERHEAD_METRIC)
        return replace(run, overhead_mean_s=after.mean_since(before))

    steps = []
    for rate in args.rate_list:
        base_run = await measured(
            baseline.name,
            [procs.gateway.pid],
            load_pids,
            partial(open_loop, sessions[baseline.name], baseline, rate, args.duration, limits),
            procs.redis_pids,
        )
        await asyncio.sleep(args.pause)
        gw_run = await gateway_run(gateway, procs.gateway)
        shared_run = None
        if procs.shared is not None:
            await asyncio.sleep(args.pause)
            shared_run = await gateway_run(gateway_target(SHARED, procs.shared), procs.shared)
        hop_run = None
        if hop is not None and procs.hop is not None:
            await asyncio.sleep(args.pause)
            hop_run = await measured(
                hop.name,
                [procs.hop.pid],
                load_pids,
                partial(open_loop, sessions[hop.name], hop, rate, args.duration, limits),
                procs.redis_pids,
            )
        steps.append(OpenStep(rate, base_run, gw_run, hop_run, shared_run))
        await asyncio.sleep(args.pause)
    return steps


async def peak_run(
    args: argparse.Namespace,
    session: aiohttp.ClientSession,
    target: Target,
    service_pid: int,
    load_pids: Sequence[int],
    redis_pids: Sequence[int] = (),
    watch: tuple[Service, Service] | None = None,
) -> Run:
    limits = Limits(args.timeout, args.max_requests * 4)
    run = await measured(
        target.name,
        services.tree(service_pid),
        load_pids,
        partial(closed_loop, session, target, args.concurrency, args.peak_duration, limits),
        redis_pids,
        watch,
    )
    await asyncio.sleep(args.pause)
    return run


def peak_order(
    baseline: Target, gateway: Target, shared: Target | None, workers: Target | None
) -> list[Target]:
    """Baseline, then in-process and shared in ABBA order (gateway, shared, [2 workers],
    shared, gateway), so a drift linear in time hits both modes alike; the two-worker row
    sits between the shared rounds it is compared with."""
    if shared is None:
        return [baseline, gateway]
    middle = [workers] if workers is not None else []
    return [baseline, gateway, shared, *middle, shared, gateway]


async def bench(args: argparse.Namespace, cores: Cores, logs: Path) -> Results:
    shared_skipped = None
    if args.no_shared:
        shared_skipped = "skipped (--no-shared)"
    elif services.REDIS_SERVER is None:
        shared_skipped = "skipped: redis-server is not installed"
    with contextlib.ExitStack() as stack:
        procs = await start(
            logs,
            cores,
            args.latency_ms,
            stack,
            hop=not args.no_reference,
            shared=shared_skipped is None,
            redis_timeout_s=args.redis_timeout_s,
        )
        baseline, gateway = targets(procs)
        shared = gateway_target(SHARED, procs.shared) if procs.shared is not None else None
        hop = hop_target(procs)
        limits = Limits(args.timeout, args.max_requests)
        connections = max(args.concurrency + 16, 1024)
        names = [baseline.name, GATEWAY, SHARED, WORKERS2, HOP]
        async with contextlib.AsyncExitStack() as sessions_stack:
            sessions = {
                name: await sessions_stack.enter_async_context(make_session(limits, connections))
                for name in names
            }
            admin = await sessions_stack.enter_async_context(
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
            )
            await sanity_check(sessions[baseline.name], baseline, provider=False)
            await sanity_check(sessions[GATEWAY], gateway, provider=True)
            if shared is not None:
                await sanity_check(sessions[SHARED], shared, provider=True)
            if hop is not None:
                await sanity_check(sessions[HOP], hop, provider=False)
            memory_start = services.memory(procs.gateway.pid)
            warm_rate = min(args.rate_list)
            for target in (baseline, gateway, shared, hop):
                if target is not None:
                    await open_loop(sessions[target.name], target, warm_rate, args.warmup, limits)
            await asyncio.sleep(args.pause)
            steps = await open_loop_steps(args, procs, sessions, admin)
            memory_open = services.memory(procs.gateway.pid)
            workers: Service | None = None
            workers_target = None
            if shared is not None and not args.no_workers:
                workers = await start_workers(logs, cores, procs, stack, args.redis_timeout_s)
                workers_target = gateway_target(WORKERS2, workers)
                await sanity_check(sessions[WORKERS2], workers_target, provider=True)
                await open_loop(sessions[WORKERS2], workers_target, warm_rate, args.warmup, limits)
                await asyncio.sleep(args.pause)
            load_pids = [procs.sandbox.pid, os.getpid()]
            service_of = {baseline.name: procs.gateway, GATEWAY: procs.gateway}
            if procs.shared is not None:
                service_of[SHARED] = procs.shared
            if workers is not None:
                service_of[WORKERS2] = workers
            peaks = []
            workers_state = workers_cores = None
            for target in peak_order(baseline, gateway, shared, workers_target):
                service = service_of[target.name]
                run = await peak_run(
                    args,
                    sessions[target.name],
                    target,
                    service.pid,
                    load_pids,
                    procs.redis_pids,
                    procs.watch(service) if target.name != baseline.name else None,
                )
                peaks.append(run)
                if workers is not None and service is workers:
                    # Stopped at once: idle, its three processes would still take a few
                    # percent of both cores from the rounds after it.
                    workers_state = await shared_state(admin, workers)
                    workers_cores = services.tree_affinity(workers.pid)
                    await sessions[WORKERS2].close()
                    services.stop(workers)
                    await asyncio.sleep(args.pause)
            memory_peak = services.memory(procs.gateway.pid)
            if hop is not None and procs.hop is not None:
                peaks.append(
                    await peak_run(
                        args, sessions[HOP], hop, procs.hop.pid, load_pids, procs.redis_pids
                    )
                )
            shared_states = None
            if procs.shared is not None:
                shared_states = [await shared_state(admin, procs.shared)]
                if workers_state is not None:
                    shared_states.append(workers_state)
        return Results(
            steps,
            peaks,
            memory_start,
            memory_open,
            memory_peak,
            gateway_cores=services.affinity(procs.gateway.pid),
            shared_cores=services.affinity(procs.shared.pid) if procs.shared else None,
            workers_cores=workers_cores,
            redis_cores=services.affinity(procs.redis.pid) if procs.redis else None,
            shared_memory=services.memory(procs.shared.pid) if procs.shared else None,
            shared_states=shared_states,
            shared_skipped=shared_skipped,
        )


async def shared_state(admin: aiohttp.ClientSession, service: Service) -> SharedState:
    """Whether a shared-mode gateway lost Redis during the run: a lost Redis (an operation
    over REDIS_TIMEOUT_S) puts it on its local fallbacks, so its numbers are not Redis'."""
    up = None
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        up = await services.scrape_total(admin, service.base_url, SHARED_UP_METRIC)
    reasons = services.log_reasons(service, REDIS_LOST_LOG)
    text = ", ".join(f"{name} {count}" for name, count in reasons.most_common())
    return SharedState(service.name, sum(reasons.values()), text, up)


def header(args: argparse.Namespace, cores: Cores, results: Results) -> str:
    cpu = _cpu_model()
    pinning = (
        f"gateway on core {sorted(cores.service)} (its threads: {sorted(results.gateway_cores)}), "
        f"sandbox + load generator on core {sorted(cores.load)}"
        if cores.pinned
        else "NOT pinned (fewer than 2 usable cores): gateway and load share the CPU"
    )
    versions = ", ".join(f"{p} {_version(p)}" for p in ("litestar", "uvicorn", "aiohttp", "httpx"))
    lines = [
        "Literature AI Gateway: overhead and throughput benchmark",
        f"nproc: {os.cpu_count()} (usable {cores.usable}), {cpu}; load average {_loadavg()}",
        f"python: {platform.python_version()} ({sys.executable}), {versions}",
        f"pinning: {pinning}",
    ]
    if results.shared_skipped is not None:
        lines.append(f"shared mode (REDIS_URL): {results.shared_skipped}")
    else:
        lines.append(
            f"shared mode: redis-server {_redis_version()} (no persistence) on core "
            f"{_cores(results.redis_cores)} with the sandbox and the load generator; "
            f"gateway with REDIS_URL, --workers 1, on core {_cores(results.shared_cores)}; "
            f"REDIS_TIMEOUT_S {_redis_timeout(args)}"
        )
    if results.workers_cores is not None:
        lines.append(
            f"2 workers: the gateway with REDIS_URL and --workers 2 (supervisor + workers) may "
            f"run on cores {_cores(results.workers_cores)}; the kernel places the workers, so "
            f"they share core {sorted(cores.load)} with the load generator, the sandbox and "
            "Redis: that row is the whole machine's peak, not one core per worker"
        )
    lines.append(
        f"upstream: sandbox groq, fixed +{args.latency_ms:g} ms per call; "
        f"open loop {args.duration:g} s per rate after {args.warmup:g} s warm-up per target; "
        f"request timeout {args.timeout:g} s"
    )
    return "\n".join(lines)


def _redis_timeout(args: argparse.Namespace) -> str:
    if args.redis_timeout_s is None:
        from app.core.settings import Settings

        return f"the gateway's default ({Settings.model_fields['redis_timeout_s'].default:g} s)"
    return f"{args.redis_timeout_s:g} s (--redis-timeout-s, not the default)"


def _cores(cores: set[int] | None) -> str:
    return str(sorted(cores)) if cores is not None else "?"


def _redis_version() -> str:
    """From `redis-server --version` (`Redis server v=7.0.15 ...`)."""
    if services.REDIS_SERVER is None:
        return "?"
    try:
        out = subprocess.run(
            [services.REDIS_SERVER, "--version"], capture_output=True, text=True, timeout=5
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    found = re.search(r"v=(\S+)", out)
    return found.group(1) if found else "?"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _loadavg() -> str:
    """Shown because another busy process on a 2-core machine skews every number here."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def checks(results: Results) -> list[Check]:
    """The team's targets for the in-process gateway, judged on this run's numbers."""
    found: list[Check] = []
    step = next((s for s in results.steps if s.rate == TARGET_RATE), None)
    for q, limit in ((0.50, TARGET_ADDED_P50_S), (0.99, TARGET_ADDED_P99_S)):
        name = f"added p{q * 100:.0f} at {TARGET_RATE:g}/s < {limit * 1000:g} ms"
        if step is None:
            found.append(Check(name, "rate not run", None))
        else:
            value = added(step, q)
            floor = f" (bare hop: {ms(hop_added(step, q))} ms)" if step.hop is not None else ""
            found.append(Check(name, f"{ms(value)} ms{floor}", value < limit))
    rss = max(results.memory_open.rss_mib, results.memory_peak.rss_mib)
    found.append(
        Check(f"gateway RSS < {TARGET_RSS_MIB:g} MiB", f"{rss:.1f} MiB", rss < TARGET_RSS_MIB)
    )
    gw, hop = peak_of(results.peaks, GATEWAY), peak_of(results.peaks, HOP)
    name = f"gateway peak >= {TARGET_PEAK_SHARE:.0%} of bare Litestar hop"
    if gw is not None and hop is not None and hop.requests_s:
        share = gw.requests_s / hop.requests_s
        found.append(
            Check(
                name,
                f"{share:.0%} ({gw.requests_s:.0f}/{hop.requests_s:.0f} rps)",
                share >= TARGET_PEAK_SHARE,
            )
        )
    else:
        found.append(Check(name, "reference not run", None))
    name = f"gateway CPU/request within {1 - TARGET_PEAK_SHARE:.0%} of bare hop's"
    gw_cpu = gw.cpu_per_request_s if gw is not None else None
    hop_cpu = hop.cpu_per_request_s if hop is not None else None
    if gw_cpu and hop_cpu:
        share = hop_cpu / gw_cpu
        measured = f"{share:.0%} ({ms(gw_cpu)} vs {ms(hop_cpu)} ms)"
        found.append(Check(name, measured, share >= TARGET_PEAK_SHARE))
    else:
        found.append(Check(name, "reference not run", None))
    return found


def shared_comparison(results: Results) -> str:
    """The issue's contract for the shared mode, against the in-process gateway of this run:
    peak ratio and added-p50 difference at every rate, each marked met or not (printed, not
    enforced), with CPU per request and p99 beside them for reading."""
    gw, shared = peak_of(results.peaks, GATEWAY), peak_of(results.peaks, SHARED)
    if gw is None or shared is None:
        return f"Shared mode (REDIS_URL): {results.shared_skipped or 'not run'}"
    headers = ["figure", "in-process", "shared", "shared vs in-process", "target", "verdict"]
    headers += ["shared: redis scripts/req"]

    # A row during which the gateway lost Redis (an operation over REDIS_TIMEOUT_S) served
    # some requests on the local fallback. (Fewer scripts per request at a higher rate is not
    # a sign of it: large limits are taken in leases that grow with the rate.)
    def on_fallback(lost: int | None) -> bool:
        return bool(lost)

    ratio = shared.requests_s / gw.requests_s if gw.requests_s else float("nan")
    starred = on_fallback(shared.redis_lost)
    rows = [
        [
            f"peak requests/s (mean of {gw.rounds}/{shared.rounds} rounds)",
            f"{gw.requests_s:.1f}",
            f"{shared.requests_s:.1f}",
            f"ratio {ratio:.2f}",
            f">= {TARGET_SHARED_PEAK_SHARE:.2f}",
            verdict(ratio >= TARGET_SHARED_PEAK_SHARE if gw.requests_s else None)
            + (" *" if starred else ""),
            shared.redis_path,
        ]
    ]
    limit = TARGET_SHARED_ADDED_P50_S
    for step in results.steps:
        if step.shared is None:
            continue
        for q in (0.50, 0.99):
            in_process, with_redis = added(step, q), added(step, q, step.shared)
            delta = with_redis - in_process
            judged = q == 0.50
            star = " *" if on_fallback(step.shared.redis_lost) else ""
            rows.append(
                [
                    f"added p{q * 100:.0f} at {step.rate:g}/s (ms)",
                    ms(in_process),
                    ms(with_redis),
                    f"{delta * 1000:+.2f} ms",
                    f"<= +{limit * 1000:g} ms" if judged else "-",
                    verdict(delta <= limit) + star if judged else "-",
                    step.shared.redis_path,
                ]
            )
            starred = starred or bool(star)
    gw_cpu, shared_cpu = gw.cpu_per_request_s, shared.cpu_per_request_s
    cpu_ratio = f"ratio {shared_cpu / gw_cpu:.2f}" if gw_cpu and shared_cpu else "-"
    rows.append(
        ["gateway CPU ms/request at peak", ms(gw_cpu), ms(shared_cpu), cpu_ratio, "-", "-", "-"]
    )
    redis_cpu = ms(shared.redis_per_request_s)
    rows.append(["redis-server CPU ms/request at peak", "-", redis_cpu, "-", "-", "-", "-"])
    lines = [
        table(headers, rows),
        "redis scripts/req: Redis round trips per answered request (every process's scripts "
        "over the step, background polls included) and the times this gateway lost Redis "
        "(an operation over REDIS_TIMEOUT_S); large limits are taken in leases that grow with "
        "the rate, so the figure falls as the rate rises.",
    ]
    if starred:
        lines.append(
            "* the gateway lost Redis during this row: some of its requests took the local "
            "fallback, so its verdict is not purely one of the Redis path (see "
            "--redis-timeout-s)."
        )
    for state in results.shared_states or []:
        up = "?" if state.up_at_end is None else f"{state.up_at_end:g}"
        lines.append(
            f"{state.name}: Redis lost {state.lost_warnings} time(s) during the run"
            + (f" ({state.reasons})" if state.reasons else "")
            + " "
            f"(log '{REDIS_LOST_LOG}'); {SHARED_UP_METRIC} at the end: {up}"
        )
    return "\n".join(lines)


def workers_comparison(results: Results) -> str | None:
    """Two workers against one, both with REDIS_URL: requests/s and CPU per request."""
    one, two = peak_of(results.peaks, SHARED), peak_of(results.peaks, WORKERS2)
    if one is None or two is None:
        return None
    headers = ["workers", "cores", "requests/s", "gateway CPU ms/req", "redis ms/req"]
    headers += ["redis scripts/req"]
    rows = [
        [
            label,
            _cores(cores),
            f"{peak.requests_s:.1f}",
            ms(peak.cpu_per_request_s),
            ms(peak.redis_per_request_s),
            peak.redis_path,
        ]
        for label, cores, peak in (
            ("1", results.shared_cores, one),
            ("2", results.workers_cores, two),
        )
    ]
    rps = two.requests_s / one.requests_s if one.requests_s else float("nan")
    cpu = (
        f"{two.cpu_per_request_s / one.cpu_per_request_s:.2f}"
        if one.cpu_per_request_s and two.cpu_per_request_s
        else "-"
    )
    return "\n".join(
        [
            table(headers, rows),
            f"2 workers / 1 worker: requests/s x{rps:.2f}, gateway CPU per request x{cpu} "
            "(gateway CPU: supervisor + workers; 1 worker = the shared rows above, mean of "
            "its rounds)",
        ]
    )


def render(args: argparse.Namespace, cores: Cores, results: Results) -> str:
    base = peak_of(results.peaks, "sandbox direct")
    gw = peak_of(results.peaks, GATEWAY)
    base_peak = base.requests_s if base is not None else 0.0
    ratio = gw.requests_s / base_peak if gw is not None and base_peak else float("nan")
    ceiling = args.concurrency / (args.latency_ms / 1000) if args.latency_ms else float("inf")
    m = results
    order = (
        "; the in-process and shared rows are two rounds each in ABBA order, ratios use their mean"
        if results.shared_skipped is None
        else ""
    )
    shared_memory = (
        f"; shared-mode gateway RSS after peak {m.shared_memory.rss_mib:.1f}"
        if m.shared_memory is not None
        else ""
    )
    sections = [
        header(args, cores, results),
        "",
        "Open loop (latency from each request's intended send time)",
        open_loop_table(results.steps),
        "",
        "Added by the gateway and by the bare hop (minus baseline at the same percentile)",
        overhead_table(results.steps),
        "",
        f"Peak throughput (closed loop, {args.concurrency} workers, {args.peak_duration:g} s; "
        f"ceiling at +{args.latency_ms:g} ms upstream = {ceiling:.0f} rps{order})",
        peak_table(results.peaks),
        f"throughput ratio gateway / sandbox direct: {ratio:.2f}",
        "",
        f"Gateway memory (MiB): RSS after start {m.memory_start.rss_mib:.1f}, "
        f"after open loop {m.memory_open.rss_mib:.1f}, after peak {m.memory_peak.rss_mib:.1f}; "
        f"high-water mark {m.memory_peak.hwm_mib:.1f}{shared_memory}",
        "",
        checks_table(checks(results)),
        "",
        "Shared mode (REDIS_URL, 1 worker) against in-process, same run (printed, not enforced)",
        shared_comparison(results),
    ]
    workers = workers_comparison(results)
    if workers is not None:
        sections += ["", "Workers, shared mode (peak, closed loop)", workers]
    sections += ["", noise_note([run for s in results.steps for run in s.runs] + results.peaks)]
    return "\n".join(sections)


TRACING_OFF = "gateway, tracing off"
TRACING_ON = "gateway, tracing on (OTLP/HTTP)"


@dataclass(slots=True)
class TracingCost:
    """The tracing comparison: open-loop runs at TARGET_RATE (baseline, then off and on in
    ABBA order), a peak each, and what the loopback OTLP sink received."""

    baseline: Run
    steps: dict[str, list[Run]]
    peaks: dict[str, Run]
    exports: int
    export_bytes: int


async def tracing_cost(args: argparse.Namespace, cores: Cores, logs: Path) -> TracingCost:
    """Two fresh gateways on the service core, one exporting every span over OTLP/HTTP to a
    sink on the load core (`bench.otlp_sink`), one without any endpoint (no tracer at all),
    against their own sandbox; the main rows above never run with tracing."""
    logs = logs / "tracing"  # its own port files and logs, not the first sandbox's
    logs.mkdir(exist_ok=True)
    with contextlib.ExitStack() as stack:
        sandbox = await services.start_sandbox(logs, cores.load)
        stack.callback(services.stop, sandbox)
        await services.set_upstream_latency(sandbox, "groq", args.latency_ms)
        sink = await services.start_http_service(
            "otlp-sink", ["-m", "bench.otlp_sink"], os.environ, cores.load, logs
        )
        stack.callback(services.stop, sink)
        gateways: dict[str, Service] = {}
        for name, process, extra in (
            (TRACING_OFF, "gateway-untraced", {}),
            (TRACING_ON, "gateway-traced", {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.base_url}),
        ):
            env = services.gateway_env(sandbox.base_url, logs, ledger=f"{process}.db")
            service = await services.start_http_service(
                process, ["-m", "app", "serve"], {**env, **extra}, cores.service, logs
            )
            stack.callback(services.stop, service)
            gateways[name] = service
        limits = Limits(args.timeout, args.max_requests)
        baseline = Target(
            "sandbox direct",
            f"{sandbox.base_url}/groq/openai/v1/chat/completions",
            chat_body(services.GROQ_FAST_MODEL),
            {
                "content-type": "application/json",
                "authorization": f"Bearer {services.GROQ_KEYS[0]}",
            },
        )
        targets_by_name = {name: gateway_target(name, g) for name, g in gateways.items()}
        load_pids = [sandbox.pid, os.getpid()]
        async with contextlib.AsyncExitStack() as sessions_stack:
            connections = max(args.concurrency + 16, 1024)
            sessions = {
                name: await sessions_stack.enter_async_context(make_session(limits, connections))
                for name in (baseline.name, *gateways)
            }
            for name, target in targets_by_name.items():
                await sanity_check(sessions[name], target, provider=True)
                await open_loop(sessions[name], target, TARGET_RATE, args.warmup, limits)
            await asyncio.sleep(args.pause)
            base_run = await measured(
                baseline.name,
                [gateways[TRACING_OFF].pid],
                load_pids,
                partial(
                    open_loop, sessions[baseline.name], baseline, TARGET_RATE, args.duration, limits
                ),
            )
            steps: dict[str, list[Run]] = {TRACING_OFF: [], TRACING_ON: []}
            for name in (TRACING_OFF, TRACING_ON, TRACING_ON, TRACING_OFF):
                await asyncio.sleep(args.pause)
                target = targets_by_name[name]
                steps[name].append(
                    await measured(
                        name,
                        [gateways[name].pid],
                        load_pids,
                        partial(
                            open_loop, sessions[name], target, TARGET_RATE, args.duration, limits
                        ),
                    )
                )
            peaks = {}
            for name in (TRACING_OFF, TRACING_ON):
                await asyncio.sleep(args.pause)
                peaks[name] = await peak_run(
                    args, sessions[name], targets_by_name[name], gateways[name].pid, load_pids
                )
            async with sessions[baseline.name].get(f"{sink.base_url}/stats") as response:
                sent = json.loads(await response.text())
    return TracingCost(base_run, steps, peaks, int(sent["exports"]), int(sent["bytes"]))


def render_tracing(args: argparse.Namespace, cost: TracingCost) -> str:
    """Added latency (pooled over the two ABBA rounds, minus the direct baseline) and peak,
    tracing off against on."""
    base = cost.baseline.samples.latencies_s
    rows = []
    for name, runs in cost.steps.items():
        latencies = [v for run in runs for v in run.samples.latencies_s]
        peak = cost.peaks[name]
        rows.append(
            [
                name,
                ms(percentile(latencies, 0.50)),
                ms(percentile(latencies, 0.50) - percentile(base, 0.50)),
                ms(percentile(latencies, 0.99) - percentile(base, 0.99)),
                f"{sum(r.service_cpu for r in runs) / len(runs):.0%}",
                f"{peak.samples.throughput:.1f}",
                str(sum(r.samples.errors for r in runs) + peak.samples.errors),
            ]
        )
    headers = ["gateway", "p50 ms", "added p50 ms", "added p99 ms", "svc CPU", "peak rps"]
    return "\n".join(
        [
            f"Tracing off against on (open loop {TARGET_RATE:g} rps, {args.duration:g} s x 2 "
            f"each in ABBA order; peak closed loop {args.concurrency} workers; every span "
            "exported over OTLP/HTTP to a loopback sink on the load core)",
            table([*headers, "errors"], rows),
            f"spans exported: {cost.exports} OTLP requests, {cost.export_bytes / 1024:.0f} KiB",
        ]
    )


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop when installed (it is, with uvicorn[standard]): a cheaper load generator."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cores = plan_cores(args)
    # Before any thread or child exists, so the loop, its executor and the sandbox inherit it.
    os.sched_setaffinity(0, cores.load)
    print(f"running (about {_estimate_s(args):.0f} s)...", file=sys.stderr, flush=True)
    with (
        tempfile.TemporaryDirectory(prefix="bench-") as tmp,
        asyncio.Runner(loop_factory=_loop_factory()) as runner,
    ):
        try:
            results = runner.run(bench(args, cores, Path(tmp)))
        except services.ServiceError as exc:
            print(f"benchmark could not run: {exc}", file=sys.stderr)
            return 1
        print(render(args, cores, results), flush=True)
        if args.no_tracing:
            return 0
        try:
            cost = runner.run(tracing_cost(args, cores, Path(tmp)))
        except services.ServiceError as exc:
            print(f"tracing comparison could not run: {exc}", file=sys.stderr)
            return 1
    print("")
    print(render_tracing(args, cost))
    return 0


def _estimate_s(args: argparse.Namespace) -> float:
    shared = not args.no_shared and services.REDIS_SERVER is not None
    workers = shared and not args.no_workers
    targets = (2 if args.no_reference else 3) + shared
    steps = len(args.rate_list) * targets * (args.duration + args.pause)
    # Baseline, gateway, hop; with the shared mode gateway and shared twice each (ABBA).
    peaks = (targets + 2 * shared + workers) * (args.peak_duration + args.pause)
    start = 8 + 4 * shared + 8 * workers
    tracing = 0.0
    if not args.no_tracing:  # baseline + 4 ABBA steps, 2 peaks, 2 warm-ups, 3 starts
        tracing = 5 * (args.duration + args.pause) + 2 * (args.peak_duration + args.pause)
        tracing += 2 * args.warmup + 12
    return float(start + (targets + workers) * args.warmup + steps + peaks + tracing)


if __name__ == "__main__":
    raise SystemExit(main())
