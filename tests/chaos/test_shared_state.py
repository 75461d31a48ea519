"""Shared state on Redis under faults: two gateway replicas on one Redis (`REDIS_URL` through
a fault proxy in front of a redis-server of the run's own) and one ledger database.

Redis dies and comes back empty; Redis gets slow (latency at the proxy, above
`REDIS_TIMEOUT_S`) and fast again; a replica is SIGKILLed with calls held upstream. In each,
the replicas keep serving from local state, stay ready, say that the shared state is degraded,
never let the budget pass (counted at the sandbox, in the ledger and in each replica's
account), and reconcile once Redis is back: each call counted once, a Redis that came back
empty rebuilt from the ledger, a dead replica's holds released by their lease.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
from collections.abc import Callable
from typing import Any

import pytest

from tests.chaos.harness import ChaosRun, Observation, Outcome
from tests.chaos.invariants import (
    Expect,
    Verdict,
    outage_shares,
    paid_within_budget,
    shared_state_follows,
    stays_ready,
    verdict,
)
from tests.chaos.scenario import Chaos
from tests.support.ledger import ledger_rows
from tests.support.redis import needs_redis

pytestmark = [pytest.mark.chaos, needs_redis]

PAID = "openai"
INPUT, OUTPUT = 0.15, 0.60  # gpt-4o-mini (the `fast` alias on OpenAI), USD per 1M tokens
MAX_TOKENS = 16
# Every answer is cut at max_tokens, so each paid call costs about the same (3/4 of its
# worst case: the worst case counts every prompt byte as a token).
LONG_ANSWER = "word " * 200
HEARTBEAT_S = 0.2  # REDIS_HEARTBEAT_S: a lost Redis is confirmed after max(1 s, 2 beats)
REDIS_TIMEOUT_S = 0.05  # the default, stated so the bounds below can use it
LEASE_MARGIN_S = 5.0  # a reservation's lease: the call's deadline plus this (README)
# From a fault to every replica saying so: one heartbeat (or an operation) failing, plus the
# watcher's 100 ms between looks and the loaded machine.
DETECT_S = HEARTBEAT_S + REDIS_TIMEOUT_S + 0.45
# From Redis answering again to every replica saying ok: the next heartbeat, plus slop.
RECOVER_S = HEARTBEAT_S + 0.8
# Injected one way at Redis' proxy in `redis_slow`. CHAOS_REDIS_LATENCY_S overrides it: 0.015
# makes round trips hover around REDIS_TIMEOUT_S (see "What the suite found" in README.md).
SLOW_LATENCY_S = float(os.environ.get("CHAOS_REDIS_LATENCY_S", "0.2"))
SHARED_ENV = {
    "AI_PROVIDER_PRIORITY": f"{PAID},groq",  # paid first; the free Groq takes what it cannot
    "REDIS_HEARTBEAT_S": str(HEARTBEAT_S),
    "LEDGER_FLUSH_INTERVAL_S": "0.1",  # the seed's lag after Redis comes back empty: 1 s
    # Half of what is left kept in outage reserves (the default 0.1 of these small budgets
    # would not pay for one call, and the outage would show no spending at all).
    "BUDGET_OUTAGE_SHARE": "0.5",
}


def prompt(scenario: str, index: int) -> str:
    return f"chaos {scenario} request {index:05d}"  # one length: one worst case


def bodies(scenario: str) -> Callable[[int], dict[str, Any]]:
    return lambda index: {"prompt": prompt(scenario, index), "max_tokens": MAX_TOKENS}


def worst_case(scenario: str) -> float:
    """The gateway's documented worst case: every prompt byte a token, plus 8, and the whole
    max_tokens at the output price."""
    size = len(prompt(scenario, 0).encode()) + 8
    return (size * INPUT + MAX_TOKENS * OUTPUT) / 1_000_000


def cost(scenario: str) -> float:
    """What one paid call really costs with the sandbox's token counts (len / 4 + 4 for the
    prompt, max_tokens for the long answer)."""
    tokens = len(prompt(scenario, 0)) // 4 + 4
    return (tokens * INPUT + MAX_TOKENS * OUTPUT) / 1_000_000


def paid(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.ok and o.body is not None and o.body["provider"] == PAID]


async def _budget(run: ChaosRun, replica: int) -> tuple[str, float]:
    """Where a replica's budget numbers come from now, and today's spend on PAID."""
    budgets = (await run.get(replica, "/v1/budgets")).json()
    spent = next(
        x["spent_usd"] for x in budgets["budgets"] if x["budget"] == PAID and x["period"] == "day"
    )
    return str(budgets["store"]), float(spent)


async def reconciled(run: ChaosRun, timeout_s: float = 6.0) -> Verdict:
    """Once Redis is back, every replica's account of today's spend is the ledger's: the
    outage's local spend added once (not zero times, not twice), and a Redis that came back
    empty rebuilt from the ledger. Polled, since ledger rows and settles are both written
    in the background."""
    spent: list[float] = []
    stores: list[str] = []
    in_ledger = 0.0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        in_ledger = sum(float(r["cost_usd"]) for r in ledger_rows(run.database_url))
        seen = [await _budget(run, i) for i in run.live()]
        stores = [store for store, _ in seen]
        spent = [value for _, value in seen]
        ok = set(stores) == {"redis"} and all(abs(s - in_ledger) < 1e-9 for s in spent)
        if ok or loop.time() > deadline:
            break
        await asyncio.sleep(0.1)
    return verdict(
        "reconciled",
        "after the outage each replica's spend is the ledger's (counted once)",
        ok,
        f"ledger {in_ledger:.6f}, replicas "
        + ", ".join(f"{s:.6f}" for s in spent)
        + f" (stores {stores})",
    )


def exhausted(outcomes: list[Outcome], limit: float) -> Verdict:
    """The budget really ran out, so the scenario tested a budget under pressure (the load
    would have passed it several times over), not one with room to spare."""
    spent = sum(o.cost_usd for o in paid(outcomes))
    return verdict(
        "exhausted",
        "the load really spent the budget (it would have passed it several times over)",
        spent >= 0.8 * limit,
        f"{spent:.6f} of {limit:g} spent by {len(paid(outcomes))} paid answers "
        f"for {len(outcomes)} requests",
    )


async def _redis_outage(chaos: Chaos, *, shared: bool = True) -> None:
    """The body of `redis_down`; `shared=False` runs the same two replicas without
    REDIS_URL (the misconfiguration its invariants must catch)."""
    name = chaos.name
    requests, rate, down_after, back_after = 180, 20.0, 1.5, 5.0
    # ~45 paid calls: the 180 requests would pay for four times that.
    limit = round(45 * cost(name), 9)
    run = await chaos.start(
        {**SHARED_ENV, f"DAILY_BUDGET_USD_{PAID.upper()}": repr(limit)},
        replicas=2,
        redis=shared,
    )
    await run.sandbox.chaos(PAID, content=LONG_ANSWER)
    if shared:
        await run.until_shared()
    times: dict[str, float] = {}

    async def down() -> None:
        times["down"] = run.now()
        if run.redis is not None:
            assert run.redis.proxy is not None
            run.redis.proxy.set(refuse=True)  # connections reset, connects refused
            await run.redis.kill()  # and everything it held gone

    async def back() -> None:
        if run.redis is not None:
            assert run.redis.proxy is not None
            await run.redis.restart()  # empty
            run.redis.proxy.clear()
        times["back"] = run.now()

    start = run.now()
    await run.gather(
        run.load(requests, rate=rate, concurrency=20, body=bodies(name)),
        run.script(
            (start + down_after, "Redis killed; its address refuses", down),
            (start + back_after, "Redis back, empty", back),
        ),
    )
    await asyncio.sleep(0.5)  # the last settles and ledger rows on their way
    settled = await reconciled(run)
    observation = await run.finish()
    chaos.conclude(
        run,
        observation,
        Expect(
            max_upstream=requests,
            upstream_why="1 call per request: a budget refusal is a skip without a call",
            extra=outage_checks(observation, name, limit, (times["down"], times["back"]), settled),
        ),
    )


def outage_checks(
    observation: Observation,
    scenario: str,
    limit: float,
    fault: tuple[float, float],
    settled: Verdict,
    *more: Verdict,
) -> list[Verdict]:
    """What must hold around a Redis fault from `fault[0]` to `fault[1]`: ready throughout,
    shared state degraded and restored, the budget never passed in total nor beyond each
    replica's share, spend reconciled, and the budget really used up."""
    start, end = fault
    return [
        stays_ready(observation),
        *shared_state_follows(
            observation, start, end, detect_s=DETECT_S, recover_s=RECOVER_S, replicas=2
        ),
        *more,
        paid_within_budget(observation, {PAID: limit}),
        outage_shares(
            observation,
            PAID,
            limit,
            start,
            end,
            replicas=2,
            slack_usd=worst_case(scenario),
        ),
        settled,
        exhausted(observation.outcomes, limit),
    ]


async def test_redis_down(chaos: Chaos) -> None:
    """Two replicas under paced load spend a paid budget the load would pass four times over.
    Redis dies mid-run (its address refuses, its process killed) and comes back empty 3.5 s
    later. The replicas keep answering (the free Groq takes what the budget refuses), stay
    ready, say degraded while Redis is away and ok after; each spends at most its share of
    what was left; the budget is never passed, counted at the sandbox, in the ledger and in
    each replica's account; when Redis is back it is rebuilt from the ledger and the
    outage's spend is counted once; every upstream call is a ledger row."""
    await _redis_outage(chaos)


async def _redis_latency(
    chaos: Chaos, *, timeout_s: float = REDIS_TIMEOUT_S, latency: float = SLOW_LATENCY_S
) -> None:
    """The body of `redis_slow`; a `timeout_s` above the injected latency is the
    misconfiguration (a Redis timeout longer than Redis is slow) its invariants must catch."""
    name = chaos.name
    requests, rate, slow_after, fast_after = 180, 20.0, 2.0, 6.0
    limit = round(55 * cost(name), 9)
    run = await chaos.start(
        {
            **SHARED_ENV,
            f"DAILY_BUDGET_USD_{PAID.upper()}": repr(limit),
            "REDIS_TIMEOUT_S": str(timeout_s),
        },
        replicas=2,
        redis=True,
    )
    await run.sandbox.chaos(PAID, content=LONG_ANSWER)
    await run.until_shared()
    assert run.redis is not None
    assert run.redis.proxy is not None
    proxy = run.redis.proxy
    times: dict[str, float] = {}

    def slow() -> None:
        times["slow"] = run.now()
        proxy.set(latency_s=latency)  # each way: a round trip takes 0.4 s

    def fast() -> None:
        proxy.clear()
        times["fast"] = run.now()

    start = run.now()
    await run.gather(
        run.load(requests, rate=rate, concurrency=20, body=bodies(name)),
        run.script(
            (start + slow_after, f"Redis {latency * 1000:.0f} ms slower each way", slow),
            (start + fast_after, "Redis fast again", fast),
        ),
    )
    await asyncio.sleep(0.5)
    settled = await reconciled(run)
    observation = await run.finish()
    # Warm-up excluded from the baseline: the first requests open connections.
    before = [o for o in observation.outcomes if start + 0.5 <= o.started < times["slow"]]
    during = [o for o in observation.outcomes if times["slow"] <= o.started < times["fast"]]
    chaos.conclude(
        run,
        observation,
        Expect(
            max_upstream=requests,
            upstream_why="1 call per request: a budget refusal is a skip without a call",
            extra=outage_checks(
                observation,
                name,
                limit,
                (times["slow"], times["fast"]),
                settled,
                bounded(before, during, timeout_s),
            ),
        ),
    )


# Scheduling noise on a loaded 2-core machine, on top of the bound on the slowest request.
SLOP_S = 0.2


def bounded(before: list[Outcome], during: list[Outcome], timeout_s: float) -> Verdict:
    """A slow Redis is not a slow gateway: once an operation has timed out the replica knows
    Redis is away and the request path reads local memory, so a request pays at most one
    Redis timeout, never one per operation. The median request during the slowness is
    within one timeout of the median before it, and the slowest within two of the slowest
    before (requests in flight at the switch each pay one)."""
    if len(before) < 10 or len(during) < 10:
        return verdict("bounded", "Redis timeouts do not stack", False, "too few requests")
    base = [o.latency_s for o in before]
    slow = [o.latency_s for o in during]
    p50_ok = statistics.median(slow) <= statistics.median(base) + timeout_s
    max_ok = max(slow) <= max(base) + 2 * timeout_s + SLOP_S
    return verdict(
        "bounded",
        "Redis timeouts do not stack on a request",
        p50_ok and max_ok,
        f"median {statistics.median(base) * 1000:.0f} -> {statistics.median(slow) * 1000:.0f}"
        f" ms (bound +{timeout_s * 1000:.0f}), slowest {max(base) * 1000:.0f} -> "
        f"{max(slow) * 1000:.0f} ms (bound +{(2 * timeout_s + SLOP_S) * 1000:.0f})",
    )


async def test_redis_slow(chaos: Chaos) -> None:
    """Redis answers 0.4 s late (0.2 s each way at the proxy, eight times REDIS_TIMEOUT_S)
    for 4 s of a 9 s paced load on two replicas, then is fast again. Requests keep their
    latency (a request pays at most one Redis timeout, never one per operation), the
    replicas stay ready and say degraded, then ok; budgets are taken from local shares and
    never passed; once Redis is fast the spend is reconciled, each call counted once."""
    await _redis_latency(chaos)


async def _sandbox_calls(run: ChaosRun) -> int:
    return int((await run.sandbox.stats())[PAID]["completions"])


async def _until_calls(run: ChaosRun, count: int, timeout_s: float) -> int:
    """Wait until the sandbox has seen `count` paid calls (or `timeout_s` passed); returns
    how many it has seen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        seen = await _sandbox_calls(run)
        if seen >= count or loop.time() > deadline:
            return seen
        await asyncio.sleep(0.02)


async def _replica_killed(chaos: Chaos, *, shared: bool = True, deadline_s: float = 3.0) -> None:
    """The body of `replica_killed`; `shared=False` (no REDIS_URL) or a deadline that makes
    the lease outlive the scenario are the misconfigurations its invariants must catch."""
    name = chaos.name
    held_calls, b_requests, b_rate = 4, 48, 4.0
    lease_s = deadline_s + LEASE_MARGIN_S
    # Room for A's holds and half a call more: while they are held B has none.
    limit = round((held_calls + 0.5) * worst_case(name), 9)
    run = await chaos.start(
        {
            **SHARED_ENV,
            "AI_PROVIDER_PRIORITY": PAID,  # no free fallback: a refusal is B's 429
            f"DAILY_BUDGET_USD_{PAID.upper()}": repr(limit),
            "AI_REQUEST_DEADLINE_S": str(deadline_s),
        },
        replicas=2,
        redis=shared,
    )
    if shared:
        await run.until_shared()
    await run.sandbox.chaos(PAID, content=LONG_ANSWER, latency_ms=30_000)
    sent_at = run.now()
    on_a = asyncio.create_task(
        run.load(
            held_calls,
            rate=1000.0,
            concurrency=held_calls,
            phase="held-on-A",
            body=bodies(name),
            replica=0,
        )
    )
    seen = await _until_calls(run, held_calls, timeout_s=5.0)
    held_at = run.mark(f"A's {seen} calls held upstream")
    on_b = asyncio.create_task(
        run.load(b_requests, rate=b_rate, concurrency=4, phase="B", body=bodies(name), replica=1)
    )
    await asyncio.sleep(0.5)
    code = await run.kill(0, signal.SIGKILL)
    await run.sandbox.chaos(PAID, content=LONG_ANSWER)  # B's calls are answered at once
    run.mark("upstream fast again")
    await asyncio.gather(on_a, on_b)
    observation = await run.finish()

    b = [o for o in observation.outcomes if o.phase == "B"]
    a_cut = all(o.status is None for o in observation.outcomes if o.phase == "held-on-A")
    b_attempts = sum(1 for o in b for a in o.attempts if a.get("outcome") != "skipped")
    rows = [r for r in observation.ledger if r["outcome"] != "cache_hit"]
    edge = observation.edge_calls[PAID] or 0
    # A's reservations were made between sending and the sandbox seeing the calls, each
    # with a lease of its deadline plus the margin.
    lease_ends = (sent_at + lease_s, held_at + lease_s)
    chaos.conclude(
        run,
        observation,
        Expect(
            max_upstream=held_calls + b_requests,
            upstream_why="A's held calls + at most 1 call per B request",
            allowed_errors=frozenset({"budget-exceeded"}),
            min_success=None,  # no free provider: B is refused while the money is held
            ledger="at_most",  # A's calls died with A, before any row
            disrupted_phases=frozenset({"held-on-A"}),
            deadline_s=deadline_s,
            extra=[
                verdict(
                    "killed",
                    "A died of SIGKILL with its calls held upstream",
                    code == -signal.SIGKILL and a_cut,
                    f"exit code {code}; A's requests all cut: {a_cut}",
                ),
                stays_ready(observation, watched=(1,)),
                *recovery(b, lease_ends, b_rate, spendable(name, limit)),
                verdict(
                    "b-ledger",
                    "B's ledger rows are complete (A's calls have none)",
                    len(rows) == b_attempts == edge - held_calls,
                    f"{len(rows)} rows, {b_attempts} attempts in B's answers, "
                    f"{edge} calls upstream - {held_calls} of A's",
                ),
            ],
        ),
    )


def spendable(scenario: str, limit: float) -> int:
    """Calls a budget pays for with nothing held: each needs room for its worst case and
    then costs `cost`."""
    return int((limit - worst_case(scenario)) // cost(scenario)) + 1


# A B request reaches its reservation this long after it is sent (loaded machine).
REACH_S = 0.25
# Retry-After of a 429 held only by calls in flight (README: "Retry-After: 2").
HELD_WAIT = "2"


def recovery(
    b: list[Outcome], lease_ends: tuple[float, float], b_rate: float, spendable_calls: int
) -> list[Verdict]:
    """B is held back while A's leases run, and spends the whole budget once they end.

    `held`: every B request sent before the earliest end of A's leases is a 429 saying the
    money is held by calls in flight, with Retry-After 2. `recovers`: B's first answer was
    sent after the earliest end and no later than the latest end plus one of B's intervals
    (and slop); B then got as many calls as the budget pays for with nothing held (what A
    held came back whole), then 429s that say spent, not held."""
    earliest, latest = lease_ends
    before = [o for o in b if o.started < earliest - REACH_S]
    held_back = [
        o
        for o in before
        if o.status == 429 and "held by calls" in _detail(o) and o.retry_after == HELD_WAIT
    ]
    served = [o for o in b if o.ok]
    after = [o for o in b if served and o.started > served[-1].started]
    spent_after = all(o.status == 429 and "held by calls" not in _detail(o) for o in after)
    first = served[0].started if served else None
    on_time = first is not None and earliest - REACH_S <= first <= latest + 1 / b_rate + 1.0
    return [
        verdict(
            "held",
            "while A's leases run, B is refused (429: held by calls in flight)",
            bool(before) and len(held_back) == len(before),
            f"{len(held_back)} of {len(before)} B requests sent before "
            f"{earliest - REACH_S:.1f}s held back",
        ),
        verdict(
            "recovers",
            "A's holds end with their lease and B spends what A held",
            on_time and len(served) == spendable_calls and bool(after) and spent_after,
            (
                f"B's first answer sent at {first:.2f}s, A's leases end {earliest:.2f}-"
                f"{latest:.2f}s; B served {len(served)} (the budget pays {spendable_calls}),"
                f" then {len(after)} refused as spent: {spent_after}"
            )
            if first is not None
            else f"B never served; A's leases ended {earliest:.2f}-{latest:.2f}s",
        ),
    ]


def _detail(outcome: Outcome) -> str:
    return str((outcome.body or {}).get("detail", ""))


async def test_replica_killed(chaos: Chaos) -> None:
    """Two replicas on one Redis, a budget with room for A's four calls and half a call
    more. A's four calls are held upstream (the sandbox answers in 30 s) when A is
    SIGKILLed. B keeps answering: typed 429s (held by calls in flight) while A's
    reservations live, until their lease (A's 3 s deadline + 5 s) ends; then B spends the
    whole budget (what A held came back), then 429s as spent. B's ledger rows are all
    there."""
    await _replica_killed(chaos)
