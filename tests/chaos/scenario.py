"""`Chaos`: what a scenario uses to start its run and have it judged and reported."""

from __future__ import annotations

import os

import pytest

from tests.chaos.harness import ChaosRun, Observation
from tests.chaos.invariants import Expect, check
from tests.chaos.report import ScenarioReport, details, summarise
from tests.support.sandbox import Sandbox

REPORTS = pytest.StashKey[list[ScenarioReport]]()
# CHAOS_SOAK=1 stretches the time-based scenarios (the brownout creeps over a real minute).
SOAK = os.environ.get("CHAOS_SOAK", "") not in ("", "0")


class Chaos:
    """Starts a scenario's run and judges it."""

    def __init__(self, sandbox: Sandbox, request: pytest.FixtureRequest) -> None:
        self.sandbox = sandbox
        self.name = request.node.name.removeprefix("test_")
        self._config = request.config
        self._runs: list[ChaosRun] = []

    async def start(
        self,
        env: dict[str, str] | None = None,
        *,
        proxied: tuple[str, ...] = (),
        edge_blind: tuple[str, ...] = (),
        replicas: int = 1,
        redis: bool = False,
    ) -> ChaosRun:
        """The gateway as a real process; `proxied` providers are reached through a fault
        proxy, `edge_blind` ones cannot be counted at the network edge (refused, DNS).
        `replicas` processes share the ledger; with `redis` they share a redis-server of the
        run's own too, reached through a fault proxy (`run.redis`)."""
        run = ChaosRun(
            self.name, self.sandbox, env or {}, proxied, edge_blind, replicas=replicas, redis=redis
        )
        self._runs.append(run)
        return await run.start()

    def conclude(self, run: ChaosRun, observation: Observation, expect: Expect) -> None:
        """Check every invariant, file the report row, and fail loudly if one broke."""
        verdicts = check(observation, expect, run.deadline_s)
        report = summarise(observation, verdicts)
        self._config.stash.setdefault(REPORTS, []).append(report)
        assert report.held, details(report)

    async def cleanup(self) -> None:
        for run in self._runs:
            await run.abort()
