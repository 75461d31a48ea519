"""Plain-text tables for the benchmark's results; nothing here measures anything."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from bench.loadgen import Samples, percentile


@dataclass(frozen=True, slots=True)
class Run:
    """One load step against one target, with what the processes spent meanwhile."""

    target: str
    samples: Samples
    service_cpu: float  # share of one core used by the process on the service core
    load_core_cpu: float  # share of one core used by the sandbox + this load generator
    other_cpu: float  # share of one core used by every other process: noise if not ~0
    overhead_mean_s: float | None = None  # from the gateway's own /metrics, if it is the target
    redis_cpu: float | None = None  # share of one core used by redis-server (shared mode runs)
    # For a shared-mode gateway: the scripts Redis ran during the step (every process's,
    # background included) and how many times this gateway lost Redis (a timeout) meanwhile.
    redis_scripts: int | None = None
    redis_lost: int | None = None

    @property
    def redis_per_request(self) -> float | None:
        """Redis scripts per answered request: the gateway's Redis round trips per request."""
        if self.redis_scripts is None or not self.samples.ok:
            return None
        return self.redis_scripts / self.samples.ok

    @property
    def redis_path(self) -> str:
        """Redis scripts per answered request and losses, e.g. "2.01 (0 lost)"; "-" if the
        run was not a shared-mode gateway's. Fewer scripts than the steady figure means
        requests were served by the local fallback after Redis was lost."""
        per = self.redis_per_request
        return "-" if per is None else f"{per:.2f} ({self.redis_lost} lost)"


@dataclass(frozen=True, slots=True)
class OpenStep:
    rate: float
    baseline: Run
    gateway: Run
    hop: Run | None = None  # the bare Litestar hop at the same rate, if it ran
    shared: Run | None = None  # the gateway with REDIS_URL at the same rate, if it ran

    @property
    def runs(self) -> tuple[Run, ...]:
        shared = (self.shared,) if self.shared else ()
        return (self.baseline, self.gateway, *shared) + ((self.hop,) if self.hop else ())

    @property
    def modes(self) -> tuple[tuple[str, Run], ...]:
        """The gateway's runs at this rate, by mode (in-process; shared, when it ran)."""
        shared = (("shared (REDIS_URL)", self.shared),) if self.shared else ()
        return (("in-process", self.gateway), *shared)


@dataclass(frozen=True, slots=True)
class Check:
    """One of the team's targets and whether this run met it."""

    name: str
    measured: str
    passed: bool | None  # None: not measured in this run


def ms(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "-"
    return f"{seconds * 1000:.2f}"


# Below this share of a core, the process on the service core was idle, not measured.
IDLE_SERVICE_CPU = 0.05
# Other processes using more than this share of a core during a step make it untrustworthy.
NOISY_OTHER_CPU = 0.10


def pct(share: float) -> str:
    return f"{share * 100:.0f}%"


def other(run: Run) -> str:
    """Other processes' CPU, starred when it is enough to distort the step."""
    return pct(run.other_cpu) + (" *" if noisy(run) else "")


def noisy(run: Run) -> bool:
    return run.other_cpu > NOISY_OTHER_CPU


def noise_note(runs: Sequence[Run]) -> str:
    """A warning under the tables if any step shared the machine with something busy."""
    starred = [r for r in runs if noisy(r)]
    if not starred:
        return "other CPU stayed under 10% of a core in every step: the machine was quiet."
    return (
        f"* {len(starred)} step(s) ran while other processes used more than "
        f"{NOISY_OTHER_CPU:.0%} of a core (kernel networking counts there too): "
        "their numbers are pessimistic; rerun on a quiet machine."
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Right-aligned columns (left for the first), widths from the content."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        first, *rest = (str(c) for c in cells)
        parts = [first.ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(rest, widths[1:], strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def _failures(samples: Samples) -> str:
    if not samples.failures:
        return "0"
    detail = ",".join(f"{k}:{v}" for k, v in samples.failures.most_common(2))
    return f"{samples.errors} ({detail})"


def open_loop_table(steps: Sequence[OpenStep]) -> str:
    """Every open-loop run: what was sent, what came back, and who was busy."""
    headers = ["rate/s", "target", "sent", "errors", "achieved/s", "p50 ms", "p99 ms"]
    headers += ["max ms", "send-lag p99 ms", "svc CPU", "load CPU", "other CPU"]
    headers += ["redis scripts/req"]
    rows = []
    for step in steps:
        for run in step.runs:
            s = run.samples
            rows.append(
                [
                    f"{step.rate:g}",
                    run.target,
                    str(s.sent),
                    _failures(s),
                    f"{s.throughput:.1f}",
                    ms(percentile(s.latencies_s, 0.50)),
                    ms(percentile(s.latencies_s, 0.99)),
                    ms(max(s.latencies_s, default=math.nan)),
                    ms(percentile(s.send_lags_s, 0.99)),
                    pct(run.service_cpu),
                    pct(run.load_core_cpu),
                    other(run),
                    run.redis_path,
                ]
            )
    return table(headers, rows)


def added(step: OpenStep, q: float, run: Run | None = None) -> float:
    """Gateway (`run`, the in-process one by default) minus baseline at the same percentile:
    what the hop costs a caller."""
    measured = step.gateway if run is None else run
    return percentile(measured.samples.latencies_s, q) - percentile(
        step.baseline.samples.latencies_s, q
    )


def hop_added(step: OpenStep, q: float) -> float | None:
    """Bare hop minus baseline: the floor the gateway's added latency is compared with."""
    if step.hop is None:
        return None
    return percentile(step.hop.samples.latencies_s, q) - percentile(
        step.baseline.samples.latencies_s, q
    )


def overhead_table(steps: Sequence[OpenStep]) -> str:
    """The added latency per rate and gateway mode, next to the bare hop's and what the
    gateway says it spent."""
    headers = ["rate/s", "gateway", "base p50", "base p99", "gw p50", "gw p99", "added p50"]
    headers += ["added p99", "hop added p50", "hop added p99", "gw self-reported overhead mean"]
    rows = []
    for step in steps:
        base = step.baseline.samples
        for mode, run in step.modes:
            gw = run.samples
            rows.append(
                [
                    f"{step.rate:g}",
                    mode,
                    ms(percentile(base.latencies_s, 0.50)),
                    ms(percentile(base.latencies_s, 0.99)),
                    ms(percentile(gw.latencies_s, 0.50)),
                    ms(percentile(gw.latencies_s, 0.99)),
                    ms(added(step, 0.50, run)),
                    ms(added(step, 0.99, run)),
                    ms(hop_added(step, 0.50)),
                    ms(hop_added(step, 0.99)),
                    ms(run.overhead_mean_s),
                ]
            )
    return table(headers, rows) + "\n(all in ms)"


def cpu_per_request_s(run: Run) -> float | None:
    """CPU seconds the service spent per answered request: its efficiency, which unlike
    requests/s does not depend on whether the load side could saturate it."""
    if run.service_cpu < IDLE_SERVICE_CPU or run.samples.throughput <= 0:
        return None  # the baseline's step: the service core's process was not the target
    return run.service_cpu / run.samples.throughput


def redis_cpu_per_request_s(run: Run) -> float | None:
    """redis-server's CPU seconds per answered request (shared mode runs only)."""
    if run.redis_cpu is None or run.samples.throughput <= 0:
        return None
    return run.redis_cpu / run.samples.throughput


def peak_table(runs: Sequence[Run]) -> str:
    headers = ["target", "requests/s", "ok", "errors", "p50 ms", "p99 ms", "svc CPU"]
    headers += ["svc CPU ms/req", "redis CPU", "redis ms/req", "load CPU", "other CPU"]
    headers += ["redis scripts/req"]
    rows = [
        [
            run.target,
            f"{run.samples.throughput:.1f}",
            str(run.samples.ok),
            _failures(run.samples),
            ms(percentile(run.samples.latencies_s, 0.50)),
            ms(percentile(run.samples.latencies_s, 0.99)),
            pct(run.service_cpu),
            ms(cpu_per_request_s(run)),
            "-" if run.redis_cpu is None else pct(run.redis_cpu),
            ms(redis_cpu_per_request_s(run)),
            pct(run.load_core_cpu),
            other(run),
            run.redis_path,
        ]
        for run in runs
    ]
    return table(headers, rows)


@dataclass(frozen=True, slots=True)
class Peak:
    """A target's closed-loop figures over its rounds (the mean, when it ran more than once:
    rounds in ABBA order cancel a drift that is linear in time)."""

    requests_s: float
    cpu_per_request_s: float | None
    redis_per_request_s: float | None
    rounds: int
    redis_path: str = "-"  # Redis scripts per request over the rounds, and losses
    redis_per_request: float | None = None
    redis_lost: int | None = None  # times the gateway lost Redis over the rounds


def peak_of(runs: Sequence[Run], target: str) -> Peak | None:
    """The mean of `target`'s peak rounds, None if it did not run."""
    mine = [run for run in runs if run.target == target]
    if not mine:
        return None

    def mean(values: Sequence[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return sum(known) / len(known) if known and len(known) == len(values) else None

    path, per, lost = "-", None, None
    scripts = [run.redis_scripts for run in mine if run.redis_scripts is not None]
    ok = sum(run.samples.ok for run in mine)
    if len(scripts) == len(mine) and ok:
        lost = sum(run.redis_lost or 0 for run in mine)
        per = sum(scripts) / ok
        path = f"{per:.2f} ({lost} lost)"
    return Peak(
        sum(run.samples.throughput for run in mine) / len(mine),
        mean([cpu_per_request_s(run) for run in mine]),
        mean([redis_cpu_per_request_s(run) for run in mine]),
        len(mine),
        path,
        per,
        lost,
    )


def verdict(met: bool | None) -> str:
    """For the shared mode's ratios: printed, never a failure of the run."""
    return {True: "met", False: "NOT met", None: "n/a"}[met]


def checks_table(checks: Sequence[Check]) -> str:
    verdict = {True: "PASS", False: "FAIL", None: "n/a"}
    rows = [[c.name, c.measured, verdict[c.passed]] for c in checks]
    return table(["target", "measured", "verdict"], rows)
