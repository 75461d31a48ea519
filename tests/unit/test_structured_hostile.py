"""A caller's response schema cannot stall the gateway: its regular expressions are never run
(app.modules.ai.structured). Python's `re` has no time limit and holds the interpreter, so a
catastrophic pattern against a provider's answer would stop every caller's requests."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.modules.ai.domain import ResponseSchema
from app.modules.ai.errors import ProviderError
from app.modules.ai.structured import check_answer, schema_problem

CATASTROPHIC = "^(a+)+$"


def test_a_pattern_is_left_to_the_client_so_a_catastrophic_one_never_runs() -> None:
    """A string that does not match the pattern passes: the pattern was not evaluated (with
    `re`, this one backtracks about 2^22 times on this answer, and doubles with each "a")."""
    schema = ResponseSchema(
        "s", {"type": "object", "properties": {"v": {"type": "string", "pattern": CATASTROPHIC}}}
    )
    check_answer(schema, json.dumps({"v": "a" * 22 + "!"}))


def test_the_rest_of_a_patterned_schema_is_still_checked() -> None:
    schema = ResponseSchema(
        "s",
        {
            "type": "object",
            "properties": {"v": {"type": "string", "pattern": CATASTROPHIC}},
            "required": ["v"],
        },
    )
    with pytest.raises(ProviderError):
        check_answer(schema, json.dumps({"v": 3}))
    with pytest.raises(ProviderError):
        check_answer(schema, json.dumps({}))


def _wrapped(node: dict[str, object]) -> st.SearchStrategy[dict[str, object]]:
    """`node` one level down: under a property, an array's items, or a `not`."""
    return st.sampled_from(
        [
            {"type": "object", "properties": {"x": node}},
            {"type": "array", "items": node},
            {"not": node},
        ]
    )


@given(
    st.recursive(
        st.just({"patternProperties": {CATASTROPHIC: {"type": "string"}}}),
        lambda inner: inner.flatmap(_wrapped),
        max_leaves=5,
    )
)
def test_pattern_properties_are_refused_at_any_depth(schema: dict[str, object]) -> None:
    """`additionalProperties` would run them on every key of the answer: refused when the
    request arrives, wherever they stand in the schema."""
    problem = schema_problem(schema)
    assert problem is not None
    assert "patternProperties" in problem


def test_an_ordinary_schema_is_accepted() -> None:
    assert schema_problem({"type": "object", "properties": {"v": {"type": "string"}}}) is None
