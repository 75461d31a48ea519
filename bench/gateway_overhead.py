"""`python -m bench.gateway_overhead` (`make bench`): what the gateway adds to an LLM call.

Starts the sandbox upstreams and the gateway (`python -m app serve`, one uvicorn worker) as
subprocesses, the gateway alone on one core and the sandbox plus this load generator on the
other, then measures at the same fixed rates, in the same run:

- baseline: straight to the sandbox's Groq chat/completions;
- gateway: the gateway's /v1/chat/completions, which goes to that same Groq endpoint;
- bare hop: a bare Litestar + httpx hop (`bench.bare_hop`) on the gateway's core, the floor
  any Python gateway of this stack pays on this machine.

The difference at each percentile is what a caller pays for the hop. A closed-loop step
then finds peak throughput of each. See bench/README.md for the method and how to read it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
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
from bench.loadgen import Limits, Samples, Target, closed_loop, make_session, open_loop
from bench.report import (
    Check,
    OpenStep,
    Run,
    added,
    checks_table,
    cpu_per_request_s,
    hop_added,
    ms,
    noise_note,
    open_loop_table,
    overhead_table,
    peak_table,
)
from bench.services import Memory, Service

OVERHEAD_METRIC = "ai_gateway_overhead_seconds"
HOP = "bare Litestar hop"
PROMPT = "Summarise the main finding of this abstract in one sentence: results were robust."
# The team's targets (see bench/README.md).
TARGET_RATE = 200.0
TARGET_ADDED_P50_S = 0.002
TARGET_ADDED_P99_S = 0.010
TARGET_RSS_MIB = 200.0
TARGET_PEAK_SHARE = 0.90


@dataclass(frozen=True, slots=True)
class Cores:
    """Which cores the service under test and the load side may use."""

    service: set[int]
    load: set[int]
    usable: int

    @property
    def pinned(self) -> bool:
        return self.service.isdisjoint(self.load)


@dataclass(frozen=True, slots=True)
class Processes:
    sandbox: Service
    gateway: Service
    hop: Service | None  # the bare Litestar hop, unless --no-reference


@dataclass(slots=True)
class Results:
    steps: list[OpenStep]
    peaks: list[Run]
    memory_start: Memory
    memory_open: Memory
    memory_peak: Memory
    gateway_cores: set[int]  # read back from /proc after start, not just what was asked


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
    parser.add_argument("--service-core", type=int, help="core for the gateway (default: first)")
    parser.add_argument("--load-core", type=int, help="core for sandbox + load (default: second)")
    args = parser.parse_args(argv)
    args.rate_list = [float(r) for r in args.rates.split(",") if r.strip()]
    if not args.rate_list or min(args.rate_list) <= 0:
        parser.error("--rates needs positive numbers")
    if min(args.duration, args.peak_duration, args.timeout) <= 0 or args.concurrency < 1:
        parser.error("durations, timeout and concurrency must be positive")
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
    gateway = Target(
        "gateway",
        f"{procs.gateway.base_url}/v1/chat/completions",
        chat_body("fast"),
        {**json_header, "authorization": f"Bearer {services.BENCH_CALLER_KEY}"},
    )
    return baseline, gateway


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
    logs: Path, cores: Cores, latency_ms: float, stack: contextlib.ExitStack, *, hop: bool
) -> Processes:
    """Sandbox first (the gateway probes its upstreams at start), then the gateway and the
    bare hop, both on the service core (an idle one costs the other nothing)."""
    sandbox = await services.start_sandbox(logs, cores.load)
    stack.callback(services.stop, sandbox)
    await services.set_upstream_latency(sandbox, "groq", latency_ms)
    env = services.gateway_env(sandbox.base_url, logs)
    gateway = await services.start_http_service(
        "gateway", ["-m", "app", "serve"], env, cores.service, logs
    )
    stack.callback(services.stop, gateway)
    if not hop:
        return Processes(sandbox, gateway, None)
    upstream = f"{sandbox.base_url}/groq/openai/v1"
    argv = ["-m", "bench.bare_hop", "--upstream", upstream, "--model", services.GROQ_FAST_MODEL]
    bare = await services.start_http_service("bare-hop", argv, os.environ, cores.service, logs)
    stack.callback(services.stop, bare)
    return Processes(sandbox, gateway, bare)


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
    service_pid: int,
    load_pids: Sequence[int],
    load: Callable[[], Awaitable[Samples]],
) -> Run:
    """Run one step and the CPU each side spent on it, as a share of one core."""
    started = time.perf_counter()
    service_before = services.cpu_seconds([service_pid])
    load_before = services.cpu_seconds(load_pids)
    system_before = services.system_busy_seconds()
    samples = await load()
    wall = time.perf_counter() - started
    service = services.cpu_seconds([service_pid]) - service_before
    load_cpu = services.cpu_seconds(load_pids) - load_before
    other = services.system_busy_seconds() - system_before - service - load_cpu
    return Run(target, samples, service / wall, load_cpu / wall, max(0.0, other) / wall)


async def open_loop_steps(
    args: argparse.Namespace,
    procs: Processes,
    sessions: tuple[aiohttp.ClientSession, aiohttp.ClientSession, aiohttp.ClientSession],
    admin: aiohttp.ClientSession,
) -> list[OpenStep]:
    """Baseline, gateway and bare hop interleaved at each rate, so drift affects all alike."""
    baseline, gateway = targets(procs)
    hop = hop_target(procs)
    base_session, gw_session, hop_session = sessions
    limits = Limits(args.timeout, args.max_requests)
    gw_pid, load_pids = procs.gateway.pid, [procs.sandbox.pid, os.getpid()]
    steps = []
    for rate in args.rate_list:
        base_run = await measured(
            baseline.name,
            gw_pid,
            load_pids,
            partial(open_loop, base_session, baseline, rate, args.duration, limits),
        )
        await asyncio.sleep(args.pause)
        before = await services.scrape_histogram(admin, procs.gateway.base_url, OVERHEAD_METRIC)
        gw_run = await measured(
            gateway.name,
            gw_pid,
            load_pids,
            partial(open_loop, gw_session, gateway, rate, args.duration, limits),
        )
        after = await services.scrape_histogram(admin, procs.gateway.base_url, OVERHEAD_METRIC)
        gw_run = replace(gw_run, overhead_mean_s=after.mean_since(before))
        hop_run = None
        if hop is not None and procs.hop is not None:
            await asyncio.sleep(args.pause)
            hop_run = await measured(
                hop.name,
                procs.hop.pid,
                load_pids,
                partial(open_loop, hop_session, hop, rate, args.duration, limits),
            )
        steps.append(OpenStep(rate, base_run, gw_run, hop_run))
        await asyncio.sleep(args.pause)
    return steps


async def peak_run(
    args: argparse.Namespace,
    session: aiohttp.ClientSession,
    target: Target,
    service_pid: int,
    load_pids: Sequence[int],
) -> Run:
    limits = Limits(args.timeout, args.max_requests * 4)
    return await measured(
        target.name,
        service_pid,
        load_pids,
        partial(closed_loop, session, target, args.concurrency, args.peak_duration, limits),
    )


async def bench(args: argparse.Namespace, cores: Cores, logs: Path) -> Results:
    with contextlib.ExitStack() as stack:
        procs = await start(logs, cores, args.latency_ms, stack, hop=not args.no_reference)
        baseline, gateway = targets(procs)
        hop = hop_target(procs)
        limits = Limits(args.timeout, args.max_requests)
        connections = max(args.concurrency + 16, 1024)
        async with (
            make_session(limits, connections) as base_session,
            make_session(limits, connections) as gw_session,
            make_session(limits, connections) as hop_session,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as admin,
        ):
            await sanity_check(base_session, baseline, provider=False)
            await sanity_check(gw_session, gateway, provider=True)
            if hop is not None:
                await sanity_check(hop_session, hop, provider=False)
            memory_start = services.memory(procs.gateway.pid)
            warm_rate = min(args.rate_list)
            await open_loop(base_session, baseline, warm_rate, args.warmup, limits)
            await open_loop(gw_session, gateway, warm_rate, args.warmup, limits)
            if hop is not None:
                await open_loop(hop_session, hop, warm_rate, args.warmup, limits)
            await asyncio.sleep(args.pause)
            sessions = (base_session, gw_session, hop_session)
            steps = await open_loop_steps(args, procs, sessions, admin)
            memory_open = services.memory(procs.gateway.pid)
            load_pids = [procs.sandbox.pid, os.getpid()]
            peaks = [
                await peak_run(args, base_session, baseline, procs.gateway.pid, load_pids),
                await peak_run(args, gw_session, gateway, procs.gateway.pid, load_pids),
            ]
            memory_peak = services.memory(procs.gateway.pid)
            if hop is not None and procs.hop is not None:
                peaks.append(await peak_run(args, hop_session, hop, procs.hop.pid, load_pids))
        gateway_cores = services.affinity(procs.gateway.pid)
        return Results(steps, peaks, memory_start, memory_open, memory_peak, gateway_cores)


def header(args: argparse.Namespace, cores: Cores, gateway_cores: set[int]) -> str:
    cpu = _cpu_model()
    pinning = (
        f"gateway on core {sorted(cores.service)} (its threads: {sorted(gateway_cores)}), "
        f"sandbox + load generator on core {sorted(cores.load)}"
        if cores.pinned
        else "NOT pinned (fewer than 2 usable cores): gateway and load share the CPU"
    )
    versions = ", ".join(f"{p} {_version(p)}" for p in ("litestar", "uvicorn", "aiohttp", "httpx"))
    return "\n".join(
        [
            "Literature AI Gateway: overhead and throughput benchmark",
            f"nproc: {os.cpu_count()} (usable {cores.usable}), {cpu}; load average {_loadavg()}",
            f"python: {platform.python_version()} ({sys.executable}), {versions}",
            f"pinning: {pinning}",
            f"upstream: sandbox groq, fixed +{args.latency_ms:g} ms per call; "
            f"open loop {args.duration:g} s per rate after {args.warmup:g} s warm-up per target; "
            f"request timeout {args.timeout:g} s",
        ]
    )


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
    """The team's targets, judged on this run's numbers."""
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
    by_name = {run.target: run.samples.throughput for run in results.peaks}
    gateway_peak, hop_peak = by_name.get("gateway", 0.0), by_name.get(HOP)
    name = f"gateway peak >= {TARGET_PEAK_SHARE:.0%} of bare Litestar hop"
    if hop_peak:
        share = gateway_peak / hop_peak
        found.append(
            Check(
                name,
                f"{share:.0%} ({gateway_peak:.0f}/{hop_peak:.0f} rps)",
                share >= TARGET_PEAK_SHARE,
            )
        )
    else:
        found.append(Check(name, "reference not run", None))
    runs = {run.target: run for run in results.peaks}
    gw_cpu = cpu_per_request_s(runs["gateway"]) if "gateway" in runs else None
    hop_cpu = cpu_per_request_s(runs[HOP]) if HOP in runs else None
    name = f"gateway CPU/request within {1 - TARGET_PEAK_SHARE:.0%} of bare hop's"
    if gw_cpu and hop_cpu:
        share = hop_cpu / gw_cpu
        measured = f"{share:.0%} ({ms(gw_cpu)} vs {ms(hop_cpu)} ms)"
        found.append(Check(name, measured, share >= TARGET_PEAK_SHARE))
    else:
        found.append(Check(name, "reference not run", None))
    return found


def render(args: argparse.Namespace, cores: Cores, results: Results) -> str:
    by_name = {run.target: run.samples.throughput for run in results.peaks}
    base_peak = by_name.get("sandbox direct", 0.0)
    ratio = by_name.get("gateway", 0.0) / base_peak if base_peak else float("nan")
    ceiling = args.concurrency / (args.latency_ms / 1000) if args.latency_ms else float("inf")
    m = results
    sections = [
        header(args, cores, results.gateway_cores),
        "",
        "Open loop (latency from each request's intended send time)",
        open_loop_table(results.steps),
        "",
        "Added by the gateway and by the bare hop (minus baseline at the same percentile)",
        overhead_table(results.steps),
        "",
        f"Peak throughput (closed loop, {args.concurrency} workers, {args.peak_duration:g} s; "
        f"ceiling at +{args.latency_ms:g} ms upstream = {ceiling:.0f} rps)",
        peak_table(results.peaks),
        f"throughput ratio gateway / sandbox direct: {ratio:.2f}",
        "",
        f"Gateway memory (MiB): RSS after start {m.memory_start.rss_mib:.1f}, "
        f"after open loop {m.memory_open.rss_mib:.1f}, after peak {m.memory_peak.rss_mib:.1f}; "
        f"high-water mark {m.memory_peak.hwm_mib:.1f}",
        "",
        checks_table(checks(results)),
        "",
        noise_note([run for s in results.steps for run in s.runs] + results.peaks),
    ]
    return "\n".join(sections)


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
    print(render(args, cores, results))
    return 0


def _estimate_s(args: argparse.Namespace) -> float:
    targets = 2 if args.no_reference else 3
    steps = len(args.rate_list) * targets * (args.duration + args.pause)
    peaks = targets * args.peak_duration
    return float(8 + targets * args.warmup + steps + peaks)


if __name__ == "__main__":
    raise SystemExit(main())
