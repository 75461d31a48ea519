"""Chaos fixtures: a `chaos` harness per scenario, and the report the session prints.

Each scenario starts its own gateway process (fresh breakers, ledger and budgets) against
the session's sandbox, optionally behind fault proxies; the harness tears everything down
even when the scenario fails, and files the scenario's row for the closing table.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.chaos.report import details, render
from tests.chaos.scenario import REPORTS, Chaos
from tests.support.sandbox import Sandbox


@pytest.fixture
async def chaos(sandbox: Sandbox, request: pytest.FixtureRequest) -> AsyncIterator[Chaos]:
    harness = Chaos(sandbox, request)
    try:
        yield harness
    finally:
        await harness.cleanup()


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    """The chaos table; `write_line` shows even under -q, so `make test` prints it too."""
    reports = config.stash.get(REPORTS, [])
    if not reports:
        return
    for line in render(reports):
        terminalreporter.write_line(line)
    # One scenario run by name, or -v: the numbers behind each verdict too.
    if len(reports) == 1 or config.get_verbosity() > 0:
        for report in reports:
            terminalreporter.write_line(details(report))
