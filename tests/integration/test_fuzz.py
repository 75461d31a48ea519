"""Property-based fuzz of the HTTP API from its own OpenAPI schema, against the real app
wired to the sandbox: no 5xx, and every response matches the schema.

Hypothesis drives schemathesis's per-operation strategies directly (its pytest plugin does
not support pytest 9 yet); each operation gets a bounded number of examples.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from app.main import create_app
from tests.support.live import live_server
from tests.support.sandbox import Sandbox, sandbox_settings

EXAMPLES_PER_OPERATION = 30


@pytest.fixture(scope="module")
def live_url(sandbox_process: Sandbox) -> Iterator[str]:
    sandbox_process.reset()
    with live_server(create_app(sandbox_settings(sandbox_process.base_url))) as url:
        yield url


def test_api_has_no_5xx_and_matches_its_schema(live_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{live_url}/schema/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/ai/completions", "/v1/chat/completions"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def check(case: Any) -> None:
            # Schema-valid bodies may still break rules the schema cannot state (the
            # configured prompt and max_tokens limits, "at least one user message"), so a
            # 400 for them is right: positive_data_acceptance is not applicable.
            case.call_and_validate(base_url=live_url, excluded_checks=[positive_data_acceptance])

        check()
