"""The invariants every chaos scenario must hold, computed only from what is visible from
outside the service: the responses, the sandbox's and the proxies' request counters, the
gateway's /metrics and the ledger database.

Each check returns a `Verdict`; a scenario asserts that all of them held, and the report
prints them. `Expect` states, per scenario, the bounds the checks use and why.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from tests.chaos.harness import PROVIDERS, Observation, Outcome, parse_metrics

# Problem types a caller may get instead of an answer (the `type` URI's last segment).
TYPED_ERRORS = {
    429: {"budget-exceeded", "rate-limited"},
    503: {"all-providers-failed"},
    504: {"deadline-exceeded"},
}
# Gateway overhead on top of a request's deadline: queueing in uvicorn and the loopback.
DEADLINE_MARGIN_S = 0.5
# After a breaker is seen open, calls admitted just before the trip may still be arriving.
TRIP_GRACE_S = 0.3
# How late the watcher (one sample per 100 ms, two HTTP reads) and the paced load (the next
# request must arrive to be the trial) may see a breaker close.
WATCH_SLOP_S = 0.5

# Share of a replica's looks after Redis is back that must say it is up (see
# shared_state_follows).
RESTORED_SHARE = 0.9

Status = Literal["held", "broken", "n/a"]


@dataclass(frozen=True, slots=True)
class Verdict:
    code: str  # one letter in the report's columns, or a short name for extra checks
    name: str
    status: Status
    detail: str = ""

    @property
    def held(self) -> bool:
        return self.status != "broken"


def verdict(code: str, name: str, ok: bool, detail: str) -> Verdict:
    return Verdict(code, name, "held" if ok else "broken", detail)


@dataclass(frozen=True, slots=True)
class BreakerCase:
    """A provider whose upstream fails in this scenario, and when (if) it recovers."""

    provider: str
    reset_timeout_s: float = 1.0
    # Run time when the upstream is healthy again; None: it stays down to the end.
    recovered_at: float | None = None
    # A trial in flight when the upstream recovers may still fail, taking up to this long (its
    # timeout, for faults that are cut by one); the next trial, a reset_timeout later, closes
    # the breaker.
    trial_s: float = 0.2


@dataclass(frozen=True, slots=True)
class Expect:
    """What a scenario promises; each field feeds one invariant."""

    # The attempt bound: the most upstream calls the scenario may cause, and why.
    max_upstream: int
    upstream_why: str
    # Problem types (besides a 200) a caller may get; anything else is an untyped failure.
    allowed_errors: frozenset[str] = frozenset()
    # Share of requests that must succeed; None when the scenario makes no such promise
    # (every provider down, budgets exhausted with no free provider).
    min_success: float | None = 0.999
    breakers: tuple[BreakerCase, ...] = ()
    retry_max: int = 2
    # "exact": every upstream attempt is a ledger row; "at_most": rows may be missing
    # (SIGKILL loses the rows still buffered) but never invented.
    ledger: Literal["exact", "at_most"] = "exact"
    # Phases whose requests may end without an HTTP answer (the service being killed).
    disrupted_phases: frozenset[str] = frozenset()
    deadline_margin_s: float = DEADLINE_MARGIN_S
    # The deadline requests are held to; None: the service's AI_REQUEST_DEADLINE_S.
    deadline_s: float | None = None
    # What a 200 must hold to count as an answer; None: a completion (content and provider).
    answered: Callable[[Outcome], bool] | None = None
    extra: list[Verdict] = field(default_factory=list)


# The report's columns, in order.
CORE = (
    ("T", "typed answer"),
    ("D", "deadline"),
    ("G", "breaker gate"),
    ("C", "breaker closes"),
    ("A", "attempt bound"),
    ("B", "budgets"),
    ("L", "ledger"),
    ("S", "availability"),
)


def check(observation: Observation, expect: Expect, deadline_s: float) -> list[Verdict]:
    """Every core invariant, then the scenario's own checks."""
    return [
        typed_answers(observation, expect),
        deadlines(observation, expect.deadline_s or deadline_s, expect.deadline_margin_s),
        breaker_gate(observation, expect),
        breaker_closes(observation, expect),
        attempt_bound(observation, expect),
        budgets(observation),
        ledger_matches(observation, expect),
        availability(observation, expect),
        *expect.extra,
    ]


def typed_answers(observation: Observation, expect: Expect) -> Verdict:
    """Every request gets a 200 with an answer, or a problem+json error of an allowed type
    (with Retry-After on 429 and 503). No 500, no dropped connection, no untyped body."""
    bad: Counter[str] = Counter()
    disrupted = 0
    answered = expect.answered or _completion
    for o in observation.outcomes:
        if o.status is None:
            if o.phase in expect.disrupted_phases:
                disrupted += 1
            else:
                bad[f"no answer ({o.error})"] += 1
        elif o.status == 200:
            if not answered(o):
                bad["200 without an answer"] += 1
        elif o.problem_type not in TYPED_ERRORS.get(o.status, set()):
            bad[f"{o.status} {o.problem_type or o.content_type}"] += 1
        elif o.problem_type not in expect.allowed_errors:
            bad[f"{o.status} {o.problem_type} (not expected here)"] += 1
        elif "problem+json" not in o.content_type:
            bad[f"{o.status} as {o.content_type}"] += 1
        elif o.status in (429, 503) and not _positive_int(o.retry_after):
            bad[f"{o.status} without Retry-After"] += 1
    detail = ", ".join(f"{n} x {what}" for what, n in bad.most_common(4))
    if disrupted:
        detail = (detail + "; " if detail else "") + f"{disrupted} cut by the kill (allowed)"
    return verdict("T", "typed answer", not bad, detail or "all answered")


def deadlines(observation: Observation, deadline_s: float, margin_s: float) -> Verdict:
    """No request outlives its deadline (the request's own timeout_s or the server's)."""
    late = [
        o
        for o in observation.outcomes
        if o.latency_s > min(deadline_s, o.timeout_s or deadline_s) + margin_s
    ]
    worst = max((o.latency_s for o in observation.outcomes), default=0.0)
    detail = f"slowest {worst:.2f}s vs {deadline_s:g}s + {margin_s:g}s"
    if late:
        detail = f"{len(late)} late; " + detail
    return verdict("D", "deadline", not late, detail)


def breaker_gate(observation: Observation, expect: Expect) -> Verdict:
    """While a breaker is open its upstream gets nothing but the half-open trials.

    For every stretch of samples in which the breaker was open, the calls the network edge
    saw may grow by at most the half-open transitions in that stretch, plus one for the
    sampling (the metrics and the counters are two reads). The first TRIP_GRACE_S after the
    breaker was first seen open are left out: calls admitted just before the trip may still
    be on the wire.
    """
    if not expect.breakers:
        return Verdict("G", "breaker gate", "n/a", "no failing upstream")
    problems: list[str] = []
    parts: list[str] = []
    for case in expect.breakers:
        calls = trials = runs = 0
        samples = observation.samples
        index = 0
        while index < len(samples):
            if samples[index].breaker.get(case.provider) != 1:
                index += 1
                continue
            end = index
            while end + 1 < len(samples) and samples[end + 1].breaker.get(case.provider) == 1:
                end += 1
            first = index
            while first < end and samples[first].t < samples[index].t + TRIP_GRACE_S:
                first += 1
            if first < end:
                a, b = samples[first], samples[end]
                got = b.calls[case.provider] - a.calls[case.provider]
                allowed = b.transitions.get((case.provider, "half_open"), 0) - a.transitions.get(
                    (case.provider, "half_open"), 0
                )
                calls += got
                trials += int(allowed)
                runs += 1
                if got > allowed + 1:
                    problems.append(
                        f"{case.provider}: {got} calls while open at "
                        f"{a.t:.1f}-{b.t:.1f}s, {int(allowed)} trials"
                    )
            index = end + 1
        parts.append(f"{case.provider}: {calls} calls while open, {trials} trials, {runs} spans")
    return verdict("G", "breaker gate", not problems, "; ".join(problems or parts))


def breaker_closes(observation: Observation, expect: Expect) -> Verdict:
    """After the upstream recovers, its breaker is closed within reset_timeout plus one trial
    call (plus the watcher's slop), and stays closed."""
    cases = [c for c in expect.breakers if c.recovered_at is not None]
    if not cases:
        return Verdict("C", "breaker closes", "n/a", "no recovery in this scenario")
    problems: list[str] = []
    parts: list[str] = []
    for case in cases:
        assert case.recovered_at is not None
        bound = case.reset_timeout_s + case.trial_s + WATCH_SLOP_S
        after = [s for s in observation.samples if s.t >= case.recovered_at]
        if not after or after[-1].t < case.recovered_at + bound:
            problems.append(f"{case.provider}: load ended before {bound:.1f}s after recovery")
            continue
        closed_at = next(
            (
                s.t
                for i, s in enumerate(after)
                if all(x.breaker.get(case.provider) == 0 for x in after[i:])
            ),
            None,
        )
        if closed_at is None:
            problems.append(f"{case.provider}: never closed for good after recovery")
            continue
        took = max(0.0, closed_at - case.recovered_at)
        parts.append(f"{case.provider} closed {took:.1f}s after recovery (bound {bound:.1f}s)")
        if took > bound:
            problems.append(parts[-1])
    return verdict("C", "breaker closes", not problems, "; ".join(problems or parts))


def attempt_bound(observation: Observation, expect: Expect) -> Verdict:
    """No retry amplification: total upstream calls stay under the scenario's stated bound,
    and no single request tried one model more than 1 + AI_RETRY_MAX times."""
    total = sum(_calls(observation, name) for name in PROVIDERS)
    over = []
    for o in observation.outcomes:
        per_model = Counter(
            (a.get("provider"), a.get("model")) for a in o.attempts if a.get("outcome") != "skipped"
        )
        if per_model and max(per_model.values()) > 1 + expect.retry_max:
            over.append(o.index)
    detail = f"{total} upstream calls <= {expect.max_upstream} ({expect.upstream_why})"
    if over:
        detail += f"; {len(over)} requests retried past AI_RETRY_MAX"
    return verdict("A", "attempt bound", total <= expect.max_upstream and not over, detail)


def budgets(observation: Observation) -> Verdict:
    """No daily budget is exceeded: neither by the gateway's own account (metrics; with
    several replicas, every live replica's) nor by the ledger's sum of costs."""
    limits = {
        labels["budget"]: value
        for name, labels, value in _samples(observation.metrics, "ai_budget_limit_usd")
        if name == "ai_budget_limit_usd"
    }
    spent = {
        labels["budget"]: value
        for name, labels, value in _samples(observation.metrics, "ai_budget_spent_usd")
        if name == "ai_budget_spent_usd"
    }
    if not observation.metrics:
        return verdict("B", "budgets", False, "no final metrics")
    # Every replica's own account too (the first one's is `spent`).
    accounts = [("metrics", spent)]
    for index, text in enumerate(observation.replica_metrics[1:], start=1):
        accounts.append(
            (
                f"replica metrics #{index + 1}",
                {
                    labels["budget"]: value
                    for name, labels, value in _samples(text, "ai_budget_spent_usd")
                    if name == "ai_budget_spent_usd"
                },
            )
        )
    # The ledger's sums under the budgets' names: per provider, in total and per caller.
    ledger: Counter[str] = Counter()
    for row in observation.ledger:
        cost = float(row["cost_usd"] or 0)
        ledger[row["provider"]] += cost
        ledger["total"] += cost
        ledger[f"caller:{row['user_id']}"] += cost
    over = []
    for budget, limit in limits.items():
        values = [(source, account.get(budget, 0.0)) for source, account in accounts]
        for source, value in (*values, ("ledger", ledger[budget])):
            if value > limit + 1e-9:
                over.append(f"{budget} {source} {value:.6f} > {limit:.6f}")
    used = ", ".join(
        f"{b} {spent.get(b, 0.0):.6f}/{limits[b]:g}" for b in sorted(limits) if spent.get(b)
    )
    return verdict("B", "budgets", not over, "; ".join(over) or used or "nothing spent")


def ledger_matches(observation: Observation, expect: Expect) -> Verdict:
    """Every upstream attempt is one ledger row: per provider, rows equal the calls the
    network edge saw (where it can see them) and the attempts the responses report."""
    rows: Counter[str] = Counter(
        r["provider"] for r in observation.ledger if r["outcome"] != "cache_hit"
    )
    reported: Counter[str] = Counter(
        a["provider"]
        for o in observation.outcomes
        for a in o.attempts
        if a.get("outcome") != "skipped"
    )
    # Only completions report their attempts; other routes (detection batches) do not.
    answered_all = expect.answered is None and all(
        o.status is not None for o in observation.outcomes
    )
    problems = []
    for name in PROVIDERS:
        edge = observation.edge_calls[name]
        expected = edge if edge is not None else observation.gateway_calls[name]
        if expect.ledger == "exact":
            if rows[name] != expected:
                problems.append(f"{name}: {rows[name]} rows vs {expected} calls")
            elif answered_all and rows[name] != reported[name]:
                problems.append(f"{name}: {rows[name]} rows vs {reported[name]} in responses")
        elif rows[name] > expected:
            problems.append(f"{name}: {rows[name]} rows > {expected} calls")
    total = sum(rows.values())
    lost = sum((observation.edge_calls[n] or 0) for n in PROVIDERS) - total
    if expect.ledger == "at_most" and lost > 0:
        observation.notes.append(f"{lost} ledger rows lost (allowed here)")
    detail = "; ".join(problems) or f"{total} rows = upstream calls"
    if expect.ledger == "at_most" and not problems:
        detail = f"{total} rows, {max(lost, 0)} lost (allowed after SIGKILL)"
    return verdict("L", "ledger", not problems, detail)


def availability(observation: Observation, expect: Expect) -> Verdict:
    """With one provider down and another healthy, at least 99.9 % of requests succeed."""
    counted = [o for o in observation.outcomes if o.phase not in expect.disrupted_phases]
    rate = success_rate(counted)
    if expect.min_success is None:
        return Verdict("S", "availability", "n/a", f"{rate:.1%} (no promise here)")
    ok = rate >= expect.min_success
    return verdict("S", "availability", ok, f"{rate:.2%} >= {expect.min_success:.1%}")


def stays_ready(
    observation: Observation, *, min_polls: int = 20, watched: tuple[int, ...] | None = None
) -> Verdict:
    """/health/ready, polled on every live replica, answered 200 every time: losing the shared
    state is every replica's loss, so no replica may leave the load balancer over it.
    `watched`: the replicas that must have been polled `min_polls` times (default: all; a
    replica the scenario kills early is polled only until then)."""
    polls = observation.replica_samples
    bad = [(round(s.t, 2), s.replica, s.ready) for s in polls if s.ready != 200]
    per_replica = Counter(s.replica for s in polls)
    must = watched if watched is not None else tuple(per_replica)
    enough = bool(must) and all(per_replica[r] >= min_polls for r in must)
    return verdict(
        "ready",
        "/health/ready stays 200 on every replica",
        enough and not bad,
        f"{len(polls)} polls over {len(per_replica)} replicas, not 200: {bad[:4] or 'none'}",
    )


def shared_state_follows(
    observation: Observation,
    down_at: float,
    back_at: float,
    *,
    detect_s: float,
    recover_s: float,
    replicas: int,
) -> list[Verdict]:
    """While Redis is away every replica says so (`ai_shared_state_up` 0 and
    /health/ai-providers `shared_state` degraded) from `detect_s` after the fault on, at
    every look: nothing can reach Redis then. After the fault every replica says ok and 1
    again from `recover_s` on: at its last look and at RESTORED_SHARE of its looks (an
    operation over the 50 ms timeout on a loaded machine is a true, brief 0; a replica
    stuck degraded is 0 at every look)."""
    samples = observation.replica_samples
    during = [s for s in samples if down_at + detect_s <= s.t < back_at]
    after = [s for s in samples if s.t >= back_at + recover_s]
    wrong_during = [
        (round(s.t, 2), s.replica, s.shared_up, s.shared_state)
        for s in during
        if s.shared_up != 0 or s.shared_state != "degraded"
    ]
    wrong_after = [
        (round(s.t, 2), s.replica, s.shared_up, s.shared_state)
        for s in after
        if s.shared_up != 1 or s.shared_state != "ok"
    ]
    seen_during = len({s.replica for s in during})
    seen_after = len({s.replica for s in after})
    restored_ok = seen_after == replicas
    for replica in {s.replica for s in after}:
        looks = [s for s in after if s.replica == replica]
        good = [s for s in looks if s.shared_up == 1 and s.shared_state == "ok"]
        last_ok = looks[-1].shared_up == 1 and looks[-1].shared_state == "ok"
        restored_ok = restored_ok and last_ok and len(good) >= RESTORED_SHARE * len(looks)
    # When each replica first said degraded, and first said ok for good after the fault.
    noticed = [s.t - down_at for s in samples if s.t >= down_at and s.shared_up == 0]
    healed = [
        s.t - back_at
        for i, s in enumerate(samples)
        if s.t >= back_at and all(x.shared_up == 1 for x in samples[i:])
    ]
    first_zero = f" (first 0 {noticed[0]:.2f}s after the fault)" if noticed else ""
    for_good = f", 1 for good {healed[0]:.2f}s after" if healed else ", never 1 for good"
    return [
        verdict(
            "degraded",
            "ai_shared_state_up 0 and shared_state degraded while Redis is away",
            seen_during == replicas and not wrong_during,
            f"{len(during)} looks at {seen_during} replicas from {detect_s:g}s after the fault"
            f"{first_zero}" + (f"; otherwise: {wrong_during[:3]}" if wrong_during else ""),
        ),
        verdict(
            "restored",
            "ai_shared_state_up 1 and shared_state ok once Redis is back",
            restored_ok,
            f"{len(after)} looks at {seen_after} replicas from {recover_s:g}s after{for_good}"
            + (f"; {len(wrong_after)} not: {wrong_after[:3]}" if wrong_after else ""),
        ),
    ]


def paid_within_budget(observation: Observation, limits: dict[str, float]) -> Verdict:
    """What the upstream would bill stays under the budget: the calls the network edge saw
    for each paid provider, each at the cheapest cost the gateway answered one with."""
    problems = []
    parts = []
    for provider, limit in limits.items():
        costs = [
            o.cost_usd
            for o in observation.outcomes
            if o.ok and o.body is not None and o.body.get("provider") == provider
        ]
        calls = _calls(observation, provider)
        cheapest = min(costs, default=0.0)
        billed = calls * cheapest
        parts.append(f"{provider}: {calls} calls x {cheapest:.2e} = {billed:.6f} <= {limit:g}")
        if billed > limit + 1e-9 or (calls and not costs):
            problems.append(parts[-1] if costs else f"{provider}: {calls} calls, none answered")
    return verdict(
        "paid",
        "upstream calls x cost within the budget",
        not problems,
        "; ".join(problems or parts),
    )


def outage_shares(
    observation: Observation,
    provider: str,
    limit: float,
    start: float,
    end: float,
    *,
    replicas: int,
    slack_usd: float,
) -> Verdict:
    """While the shared state is unknown a replica spends at most its share of what was
    left (its outage reserve, held on Redis beforehand, is smaller): each replica's spend on
    `provider` for requests sent in [start, end) is at most (limit - what was spent by answers
    that came before `start`) / replicas, plus `slack_usd` (the last view a replica had of
    Redis may miss the other replicas' last reservation). Some replica must have spent from
    its reserve, or nothing was shown."""
    answered = [
        o
        for o in observation.outcomes
        if o.ok and o.body is not None and o.body.get("provider") == provider
    ]
    before = sum(o.cost_usd for o in answered if o.started + o.latency_s < start)
    share = (limit - before) / replicas
    spends = {
        r: sum(o.cost_usd for o in answered if o.replica == r and start <= o.started < end)
        for r in range(replicas)
    }
    over = {r: v for r, v in spends.items() if v > share + slack_usd + 1e-12}
    detail = (
        f"left at the outage {limit - before:.6f}, share {share:.6f} (+{slack_usd:.1e}); "
        + ", ".join(f"replica {r} spent {v:.6f}" for r, v in spends.items())
    )
    return verdict(
        "share",
        "each replica spends at most its share while Redis is away",
        not over and any(v > 0 for v in spends.values()),
        detail,
    )


def success_rate(outcomes: list[Outcome]) -> float:
    return sum(o.ok for o in outcomes) / len(outcomes) if outcomes else 0.0


def trials_bound(reset_timeout_s: float, window_s: float) -> int:
    """Half-open trials a breaker can make in a window: one per reset timeout, plus one."""
    return math.ceil(window_s / reset_timeout_s) + 1


def _completion(outcome: Outcome) -> bool:
    return bool(outcome.body and outcome.body.get("content") and outcome.body.get("provider"))


def _calls(observation: Observation, provider: str) -> int:
    edge = observation.edge_calls[provider]
    return edge if edge is not None else observation.gateway_calls[provider]


def _samples(text: str, name: str) -> list[tuple[str, dict[str, str], float]]:
    return parse_metrics(text, name)


def _positive_int(value: str | None) -> bool:
    return value is not None and value.isdigit() and int(value) >= 1
