"""The processes under test: start, pin to a core, wait until ready, observe, stop.

Everything is read from the outside (HTTP, /proc), so the benchmark measures the service
exactly as it is deployed: `python -m app serve`, one uvicorn worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
GROQ_KEYS = ("gsk-sandbox-1", "gsk-sandbox-2", "gsk-sandbox-3")
# The benchmark's own caller key: the gateway is measured with authentication on, as deployed.
BENCH_CALLER = "bench"
BENCH_CALLER_KEY = "bench-caller-key-not-a-secret"
# The first model of the gateway's "fast" chain on Groq: what the baseline asks for directly.
GROQ_FAST_MODEL = "llama-3.1-8b-instant"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
# Variables the gateway reads; inherited values would silently change what is measured.
_GATEWAY_PREFIXES = ("GROQ_", "GEMINI_", "AZURE_OPENAI_", "OPENAI_", "AI_", "GATEWAY_")
_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(slots=True)
class Service:
    """A started subprocess and where it listens."""

    name: str
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        """The end of the process's output, to explain a failed start."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class ServiceError(RuntimeError):
    """A service did not start or answer; the message carries its log tail."""


def free_port() -> int:
    """A port nobody listens on now (uvicorn needs a number, it cannot report port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pin(pid: int, cores: set[int]) -> None:
    """Pin every thread of `pid` to `cores`.

    sched_setaffinity acts on one thread; threads started before the call would keep the
    old mask, so each task of the process is pinned, not just the main one.
    """
    for tid in _threads(pid):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(tid, cores)


def affinity(pid: int) -> set[int]:
    """The union of the cores the threads of `pid` may run on (what was really pinned)."""
    cores: set[int] = set()
    for tid in _threads(pid):
        with contextlib.suppress(ProcessLookupError):
            cores |= os.sched_getaffinity(tid)
    return cores


def _threads(pid: int) -> list[int]:
    try:
        return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        return []


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (a supervisor's workers, their helpers), from /proc.

    Read from each process's parent id, so workers spawned (not forked) are found too.
    """
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tree(pid: int) -> list[int]:
    """`pid` and its descendants: the processes whose CPU is one service's CPU."""
    return [pid, *descendants(pid)]


def pin_tree(pid: int, cores: set[int]) -> None:
    """Pin `pid` and every process below it (workers started after the first pin inherit the
    mask anyway; this also covers one started in between)."""
    for member in tree(pid):
        pin(member, cores)


def tree_affinity(pid: int) -> set[int]:
    """The union of the cores any thread of `pid` or its descendants may run on."""
    cores: set[int] = set()
    for member in tree(pid):
        cores |= affinity(member)
    return cores


def spawn(
    name: str,
    argv: list[str],
    env: Mapping[str, str],
    cores: set[int],
    logs: Path,
    executable: str = sys.executable,
) -> Service:
    """Start `executable argv` (Python by default) with output in a log file, pinned at once
    (before it starts threads)."""
    log_path = logs / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [executable, *argv],
            cwd=ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    if cores:
        pin(process.pid, cores)
    return Service(name, process, "", log_path)


def stop(service: Service) -> None:
    """SIGTERM, then SIGKILL if it does not leave in time; only ever our own child."""
    if service.process.poll() is not None:
        return
    service.process.terminate()
    try:
        service.process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        service.process.kill()
        service.process.wait()


async def start_sandbox(logs: Path, cores: set[int]) -> Service:
    """`python -m infra.sandbox --port 0`; the port comes back through --port-file."""
    port_file = logs / "sandbox.port"
    argv = ["-m", "infra.sandbox", "--host", "127.0.0.1", "--port", "0"]
    argv += ["--port-file", str(port_file), "--log-level", "WARNING"]
    service = spawn("sandbox", argv, os.environ, cores, logs)
    port = await _wait_port_file(service, port_file)
    service.base_url = f"http://127.0.0.1:{port}"
    return service


async def _wait_port_file(service: Service, path: Path) -> int:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise ServiceError(f"{service.name} exited early:\n{service.log_tail()}")
        port = _read_port(path)
        if port is not None:
            return port
        await asyncio.sleep(0.05)
    raise ServiceError(f"{service.name} wrote no port in {START_TIMEOUT_S:.0f}s")


def _read_port(path: Path) -> int | None:
    """The port, once the file is there (it is written atomically)."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def gateway_env(
    sandbox_url: str,
    workdir: Path,
    *,
    ledger: str = "gateway.db",
    redis_url: str | None = None,
    redis_prefix: str = "gw:",
    redis_timeout_s: float | None = None,
    metrics_port_base: int | None = None,
) -> dict[str, str]:
    """The gateway wired to the sandbox, every provider configured, its ledger in `workdir`.

    GROQ_RPM_PER_KEY is raised because the free-tier default (30 rpm per key) would make the
    client-side limiter skip Groq after 90 requests, and the benchmark would measure fallback;
    GATEWAY_CALLER_RPM likewise, or the one bench caller would be answered 429 within a second.
    The usage ledger stays on (it is part of every request) but writes to a throw-away SQLite
    file, never to the project's ./data; each gateway under test gets its own (`ledger`).
    With `redis_url`, budgets, key and caller limits, breakers and the cache are on Redis
    (the shared mode), under `redis_prefix` so two gateways on one Redis do not count each
    other as replicas. `metrics_port_base` is for several workers: free loopback ports, not
    the default 9464 another process on this machine may hold.
    """
    env = {name: value for name, value in os.environ.items() if not _gateway_setting(name)}
    env.update(
        {
            "GROQ_API_KEYS": ",".join(GROQ_KEYS),
            "GROQ_BASE_URL": f"{sandbox_url}/groq/openai/v1",
            "GROQ_RPM_PER_KEY": "1000000",
            "GEMINI_API_KEY": "gemini-sandbox-key",
            "GEMINI_BASE_URL": f"{sandbox_url}/gemini",
            "AZURE_OPENAI_API_KEY": "azure-sandbox-key",
            "AZURE_OPENAI_ENDPOINT": f"{sandbox_url}/azure",
            "AZURE_OPENAI_DEPLOYMENT": "gpt-4o-mini",
            "OPENAI_API_KEY": "sk-sandbox-openai",
            "OPENAI_BASE_URL": f"{sandbox_url}/openai/v1",
            "LOG_LEVEL": "WARNING",
            "GATEWAY_API_KEYS": f"{BENCH_CALLER}:{BENCH_CALLER_KEY}",
            "GATEWAY_CALLER_RPM": "1000000000",
            "DATABASE_URL": f"sqlite+aiosqlite:///{workdir / ledger}",
        }
    )
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
        env["REDIS_KEY_PREFIX"] = redis_prefix
        if redis_timeout_s is not None:
            env["REDIS_TIMEOUT_S"] = str(redis_timeout_s)
    if metrics_port_base is not None:
        env["METRICS_PORT_BASE"] = str(metrics_port_base)
    return env


def _gateway_setting(name: str) -> bool:
    """Whether an inherited variable would configure the gateway (and so skew the run)."""
    return name.startswith(_GATEWAY_PREFIXES) or name.lower() in _settings_fields()


@cache
def _settings_fields() -> frozenset[str]:
    """The gateway's top-level setting names, read from the app so new ones are covered."""
    from app.core.settings import Settings

    return frozenset(Settings.model_fields)


def free_ports(count: int) -> int:
    """The first of `count` consecutive free loopback ports (worker i's metrics: base + i)."""
    for _ in range(100):
        base = free_port()
        if base + count - 1 > 65535:
            continue
        try:
            with contextlib.ExitStack() as held:
                for port in range(base, base + count):
                    sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise ServiceError(f"no {count} consecutive free ports on 127.0.0.1")


async def start_http_service(
    name: str, argv: list[str], env: Mapping[str, str], cores: set[int], logs: Path
) -> Service:
    """Start a server that takes `--host/--port` and wait until /health/live answers 200."""
    port = free_port()
    service = spawn(name, [*argv, "--host", "127.0.0.1", "--port", str(port)], env, cores, logs)
    service.base_url = f"http://127.0.0.1:{port}"
    await wait_ok(service, "/health/live")
    if cores:
        # Threads started while importing (if any), and workers, get the mask too.
        pin_tree(service.pid, cores)
    return service


REDIS_SERVER = shutil.which("redis-server")


async def start_redis(logs: Path, cores: set[int]) -> Service:
    """A redis-server of the benchmark's own on a free loopback port, without persistence
    (nothing written to disk, nothing left behind); `base_url` is its redis:// URL."""
    if REDIS_SERVER is None:
        raise ServiceError("redis-server is not installed")
    port = free_port()
    argv = ["--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    argv += ["--daemonize", "no", "--loglevel", "warning", "--dir", str(logs)]
    service = spawn("redis", argv, os.environ, cores, logs, executable=REDIS_SERVER)
    service.base_url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise ServiceError(f"redis-server exited early:\n{service.log_tail()}")
        with contextlib.suppress(OSError):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"PING\r\n")
            answer = await asyncio.wait_for(reader.readline(), 1.0)
            writer.close()
            if answer.startswith(b"+PONG"):
                if cores:
                    pin(service.pid, cores)  # its background threads too
                return service
        await asyncio.sleep(0.05)
    stop(service)
    raise ServiceError(f"redis-server not ready in {START_TIMEOUT_S:.0f}s")


async def redis_script_calls(redis: Service) -> int:
    """How many scripts (EVALSHA, EVAL) Redis has run so far, from INFO commandstats.

    Every read-modify-write of the shared mode is one script, so the difference over a step
    divided by its requests is the gateway's Redis round trips per request. Plain commands
    are not counted: commandstats cannot tell a client's GET from one inside a script."""
    port = int(redis.base_url.rsplit(":", 1)[1].split("/")[0])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n")
        header = await asyncio.wait_for(reader.readline(), 5)
        if not header.startswith(b"$"):
            raise ServiceError(f"redis INFO answered {header[:80]!r}")
        body = await asyncio.wait_for(reader.readexactly(int(header[1:]) + 2), 5)
    finally:
        writer.close()
    found = re.findall(rb"^cmdstat_(?:evalsha|eval|evalsha_ro|eval_ro):calls=(\d+)", body, re.M)
    return sum(int(calls) for calls in found)


async def wait_workers(service: Service, workers: int) -> None:
    """With several workers, wait until the merged /metrics says every one is up (the first
    /health/live answer only proves that one of them is)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    wanted = [
        re.compile(rf'^gateway_worker_up\{{worker="{i}"\}} 1(?:\.0)?$', re.MULTILINE)
        for i in range(workers)
    ]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while time.monotonic() < deadline:
            if service.process.poll() is not None:
                raise ServiceError(f"{service.name} exited early:\n{service.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(service.base_url + "/metrics") as response:
                    text = await response.text()
                if all(pattern.search(text) for pattern in wanted):
                    return
            await asyncio.sleep(0.2)
    raise ServiceError(f"{service.name}: not all {workers} workers up:\n{service.log_tail()}")


def log_reasons(service: Service, text: str) -> Counter[str]:
    """What follows `text: ` on each log line containing it (e.g. why Redis was lost:
    TimeoutError, MaxConnectionsError), counted."""
    try:
        lines = service.log_path.read_text(errors="replace").splitlines()
    except OSError:
        return Counter()
    reasons: Counter[str] = Counter()
    for line in lines:
        if text in line:
            rest = line.split(text, 1)[1].lstrip(": ").split()
            reasons[rest[0] if rest else "?"] += 1
    return reasons


def log_count(service: Service, text: str) -> int:
    """How many lines of the service's log contain `text` (e.g. Redis lost warnings)."""
    try:
        return sum(
            text in line for line in service.log_path.read_text(errors="replace").splitlines()
        )
    except OSError:
        return 0


async def wait_ok(service: Service, path: str) -> None:
    """Poll until `path` answers 200, failing fast if the process died."""
    deadline = time.monotonic() + START_TIMEOUT_S
    timeout = aiohttp.ClientTimeout(total=2)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while time.monotonic() < deadline:
            if service.process.poll() is not None:
                raise ServiceError(f"{service.name} exited early:\n{service.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(service.base_url + path) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise ServiceError(f"{service.name} not ready in {START_TIMEOUT_S:.0f}s:\n{service.log_tail()}")


async def set_upstream_latency(sandbox: Service, provider: str, latency_ms: float) -> None:
    """A fixed added latency, so connections stay busy as long as a real LLM call would."""
    async with (
        aiohttp.ClientSession() as session,
        session.put(f"{sandbox.base_url}/_chaos/{provider}", json={"latency_ms": latency_ms}) as r,
    ):
        if r.status != 200:
            raise ServiceError(f"sandbox refused the chaos config: {r.status} {await r.text()}")


@dataclass(frozen=True, slots=True)
class Histogram:
    """The _sum and _count of one Prometheus histogram (all label sets added up)."""

    total: float
    count: float

    def mean_since(self, before: Histogram) -> float | None:
        count = self.count - before.count
        return (self.total - before.total) / count if count > 0 else None


async def scrape_histogram(session: aiohttp.ClientSession, base_url: str, name: str) -> Histogram:
    """Read `name`'s _sum and _count from /metrics; diffing two scrapes gives a step's mean."""
    async with session.get(base_url + "/metrics") as response:
        response.raise_for_status()
        text = await response.text()
    return Histogram(_series_total(text, name + "_sum"), _series_total(text, name + "_count"))


async def scrape_total(session: aiohttp.ClientSession, base_url: str, series: str) -> float:
    """One series from /metrics, summed over its label sets (e.g. a gauge per worker)."""
    async with session.get(base_url + "/metrics") as response:
        response.raise_for_status()
        return _series_total(await response.text(), series)


def _series_total(text: str, series: str) -> float:
    pattern = re.compile(rf"^{re.escape(series)}(?:\{{[^}}]*\}})?\s+(\S+)", re.MULTILINE)
    return sum(float(value) for value in pattern.findall(text))


@dataclass(frozen=True, slots=True)
class Memory:
    """Resident set now and its high-water mark, in MiB."""

    rss_mib: float
    hwm_mib: float


def memory(pid: int) -> Memory:
    """VmRSS and VmHWM from /proc/PID/status (kB there)."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return Memory(fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0))


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU time of the given processes so far (all their threads)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            # Fields after the ")" of the command name; utime and stime are 14th and 15th.
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / _CLK_TCK


def system_busy_seconds() -> float:
    """CPU time all processes on the machine spent so far (from /proc/stat), so a step can
    tell how much of the machine something other than the benchmark used meanwhile."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _CLK_TCK
