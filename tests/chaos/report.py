"""The chaos table: one row per scenario, what an SRE reads after `make chaos`."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from tests.chaos.harness import PROVIDERS, Observation
from tests.chaos.invariants import CORE, Verdict, success_rate


@dataclass(frozen=True, slots=True)
class ScenarioReport:
    scenario: str
    requests: int
    success_rate: float
    p50_ms: float
    p99_ms: float
    upstream: int
    breakers: str
    verdicts: tuple[Verdict, ...]
    duration_s: float
    notes: tuple[str, ...] = ()
    events: tuple[tuple[float, str], ...] = ()

    @property
    def held(self) -> bool:
        return all(v.held for v in self.verdicts)


def summarise(observation: Observation, verdicts: list[Verdict]) -> ScenarioReport:
    upstream = sum(
        edge
        if (edge := observation.edge_calls[name]) is not None
        else observation.gateway_calls[name]
        for name in PROVIDERS
    )
    moves = []
    for name in PROVIDERS:
        t = observation.transitions(name)
        if any(t.values()):
            moves.append(f"{name} {t['open']}/{t['half_open']}/{t['closed']}")
    return ScenarioReport(
        scenario=observation.scenario,
        requests=len(observation.outcomes),
        success_rate=success_rate(observation.outcomes),
        p50_ms=observation.percentile_ms(0.50),
        p99_ms=observation.percentile_ms(0.99),
        upstream=upstream,
        breakers=", ".join(moves) or "-",
        verdicts=tuple(verdicts),
        duration_s=observation.duration_s,
        notes=tuple(observation.notes),
        events=tuple(observation.events),
    )


def _marks() -> tuple[str, str, str]:
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower()
    if "utf" in encoding:
        return "✓", "✗", "·"
    return "+", "X", "."


def render(reports: list[ScenarioReport]) -> list[str]:
    """The table, a legend, and one line per broken invariant."""
    held, broken, na = _marks()
    mark = {"held": held, "broken": broken, "n/a": na}
    width = max(len("scenario"), *(len(r.scenario) for r in reports))
    codes = " ".join(code for code, _ in CORE)
    header = (
        f"{'scenario':<{width}}  {'req':>4}  {'ok%':>6}  {'p50 ms':>7}  {'p99 ms':>7}  "
        f"{'upstream':>8}  {codes}  {'extra':<5}  {'secs':>5}  breakers (open/half/closed)"
    )
    lines = [
        "",
        "chaos scenarios".center(len(header), "="),
        header,
        "-" * len(header),
    ]
    for r in reports:
        core = {v.code: v for v in r.verdicts}
        cells = " ".join(mark[core[c].status] if c in core else na for c, _ in CORE)
        extra = [v for v in r.verdicts if v.code not in dict(CORE)]
        extra_cell = f"{sum(v.held for v in extra)}/{len(extra)}" if extra else "-"
        lines.append(
            f"{r.scenario:<{width}}  {r.requests:>4}  {r.success_rate * 100:>6.1f}  "
            f"{r.p50_ms:>7.0f}  {r.p99_ms:>7.0f}  {r.upstream:>8}  {cells}  {extra_cell:<5}  "
            f"{r.duration_s:>5.1f}  {r.breakers}"
        )
    lines.append("-" * len(header))
    legend = ", ".join(f"{code} {name}" for code, name in CORE)
    lines.append(f"invariants: {legend}; extra = scenario-specific checks held/total")
    lines.append(f"{held} held   {broken} broken   {na} not applicable")
    failures = [(r, v) for r in reports for v in r.verdicts if not v.held]
    for r, v in failures:
        lines.append(f"BROKEN {r.scenario}: {v.name}: {v.detail}")
    verdict = "every invariant held" if not failures else f"{len(failures)} invariants broken"
    noun = "scenario" if len(reports) == 1 else "scenarios"
    lines.append(f"{len(reports)} {noun}, {verdict}")
    return lines


def details(report: ScenarioReport) -> str:
    """Every verdict of one scenario, for its assertion message."""
    rows = [f"  {'ok ' if v.held else 'BROKEN'} {v.name}: {v.detail}" for v in report.verdicts]
    timeline = "; ".join(f"{at:.1f}s {what}" for at, what in report.events)
    return "\n".join(
        [
            f"{report.scenario}:",
            *rows,
            *(f"  note: {n}" for n in report.notes),
            *([f"  timeline: {timeline}"] if timeline else []),
        ]
    )
