"""Structured output: the caller's JSON Schema (`response_format: json_schema`), sent to
each provider in its own dialect and checked on the way back.

- OpenAI, Groq and Azure take OpenAI's `response_format` as the caller sent it.
- Gemini takes `responseMimeType: application/json` and a `responseSchema` in its OpenAPI
  subset: `gemini_schema` inlines `$ref`s, turns `anyOf [X, null]` into `nullable`,
  upper-cases types and drops what Gemini refuses (`additionalProperties`, `$defs`,
  `title`, `default`, ...).
- Every answer is parsed and validated against the caller's schema (`check_answer`) before
  it is returned: one that does not fit is the provider's bad response, so the request fails
  over to the next provider as for a malformed body. A model's text never reaches the error.

Schemas are checked when the request arrives (`schema_problem`); `$ref`s are resolved only
inside the schema (the `jsonschema` package never fetches a remote one unless told to).

A caller's regular expressions are never run here: Python's `re` has no time limit and holds
the interpreter while it backtracks, so a pattern like `^(a+)+$` against a long answer would
stall the event loop, and every caller with it. `pattern` is passed to the provider and left
unchecked by the gateway (the client's own parse still checks it);
`patternProperties` is refused when the request arrives, since even `additionalProperties`
runs those expressions on every key of the answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from typing import Any

from jsonschema import exceptions, validators

from app.modules.ai.domain import ResponseSchema
from app.modules.ai.errors import FailureKind, ProviderError

# Keywords of Gemini's Schema object (the OpenAPI 3.0 subset it accepts).
_GEMINI_KEYS = frozenset(
    {
        "type",
        "format",
        "description",
        "nullable",
        "enum",
        "maxItems",
        "minItems",
        "properties",
        "required",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "pattern",
        "anyOf",
        "propertyOrdering",
        "items",
        "minimum",
        "maximum",
    }
)
# A schema nested deeper than this is refused (Pydantic models stay far below it).
MAX_SCHEMA_DEPTH = 32


def schema_problem(schema: Any) -> str | None:
    """Why `schema` is not a JSON Schema we can check answers against, or None."""
    if not isinstance(schema, dict):
        return "json_schema.schema must be an object"
    if _has_key(schema, "patternProperties"):
        return (
            "json_schema.schema uses patternProperties, which the gateway does not run "
            "(a regular expression could stall it); name the properties instead"
        )
    try:
        validators.validator_for(schema).check_schema(schema)
    except exceptions.SchemaError as exc:
        return f"json_schema.schema is not a valid JSON Schema: {exc.message}"
    except RecursionError:
        return "json_schema.schema is nested too deeply"
    if _depth(schema) > MAX_SCHEMA_DEPTH:
        return f"json_schema.schema is nested more than {MAX_SCHEMA_DEPTH} levels"
    return None


def check_answer(response_schema: ResponseSchema, content: str) -> None:
    """Raise the provider's BAD_RESPONSE unless `content` is JSON that fits the schema."""
    try:
        value = json.loads(content)
    except ValueError:
        raise ProviderError(
            FailureKind.BAD_RESPONSE, "the answer is not JSON (a response schema was asked)"
        ) from None
    validator = _unpatterned(validators.validator_for(response_schema.schema))
    error = next(iter(validator(response_schema.schema).iter_errors(value)), None)
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "the root"
        raise ProviderError(
            FailureKind.BAD_RESPONSE,
            f"the answer does not fit the response schema at {where} ({error.validator})",
        )


@cache
def _unpatterned(cls: Any) -> Any:
    """`cls` (a jsonschema validator class) with `pattern` left unchecked (module docstring)."""
    return validators.extend(cls, {"pattern": _unchecked})  # type: ignore[no-untyped-call]


def _unchecked(*_: Any) -> Iterator[Any]:
    return iter(())


def _has_key(node: Any, key: str, level: int = 0) -> bool:
    """Whether `key` is a keyword anywhere in the schema (bounded like `_depth`)."""
    if level > MAX_SCHEMA_DEPTH:
        return False
    if isinstance(node, dict):
        return key in node or any(_has_key(v, key, level + 1) for v in node.values())
    if isinstance(node, list):
        return any(_has_key(v, key, level + 1) for v in node)
    return False


def openai_response_format(response_schema: ResponseSchema) -> dict[str, Any]:
    """OpenAI's `response_format`, as the caller sent it."""
    spec: dict[str, Any] = {"name": response_schema.name, "schema": response_schema.schema}
    if response_schema.strict is not None:
        spec["strict"] = response_schema.strict
    if response_schema.description:
        spec["description"] = response_schema.description
    return {"type": "json_schema", "json_schema": spec}


def gemini_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The caller's JSON Schema in Gemini's OpenAPI subset (see the module docstring)."""
    converted = _gemini(schema, schema, 0)
    return converted if isinstance(converted, dict) else {}


def _gemini(node: Any, root: dict[str, Any], depth: int) -> Any:
    if not isinstance(node, dict) or depth > MAX_SCHEMA_DEPTH:
        return {}
    if "$ref" in node:
        return _gemini(_resolve(root, str(node["$ref"])), root, depth + 1)
    if isinstance(node.get("allOf"), list) and len(node["allOf"]) == 1:
        return _gemini(node["allOf"][0], root, depth + 1)
    options = node.get("anyOf") or node.get("oneOf")
    if isinstance(options, list):
        concrete = [o for o in options if not _is_null(o)]
        if len(concrete) == 1:  # Optional[X]: X, nullable
            inner = _gemini(concrete[0], root, depth + 1)
            return {**inner, "nullable": True} if len(concrete) < len(options) else inner
        return {"anyOf": [_gemini(o, root, depth + 1) for o in concrete]}
    out: dict[str, Any] = {}
    kind = node.get("type")
    if isinstance(kind, list):  # ["string", "null"]
        concrete_types = [k for k in kind if k != "null"]
        if len(concrete_types) < len(kind):
            out["nullable"] = True
        kind = concrete_types[0] if concrete_types else "null"
    if "const" in node:
        out["enum"] = [node["const"]]
    for key, value in node.items():
        if key not in _GEMINI_KEYS or key == "type":
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: _gemini(sub, root, depth + 1) for name, sub in value.items()}
        elif key == "items":
            out[key] = _gemini(value, root, depth + 1)
        elif key == "anyOf":
            continue
        else:
            out[key] = value
    if isinstance(kind, str):
        out["type"] = kind.upper()
    elif "properties" in out:
        out["type"] = "OBJECT"
    if "enum" in out:
        # Gemini's enum is for strings only; another enum is left to the answer check.
        if all(isinstance(v, str) for v in out["enum"]):
            out["type"] = "STRING"
        else:
            del out["enum"]
    return out


def _resolve(root: dict[str, Any], ref: str) -> Any:
    if not ref.startswith("#/"):
        return {}
    node: Any = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return {}
        node = node[part]
    return node


def _is_null(node: Any) -> bool:
    return isinstance(node, dict) and node.get("type") == "null"


def _depth(node: Any, level: int = 0) -> int:
    if level > MAX_SCHEMA_DEPTH:
        return level
    if isinstance(node, dict):
        return max((_depth(v, level + 1) for v in node.values()), default=level)
    if isinstance(node, list):
        return max((_depth(v, level + 1) for v in node), default=level)
    return level
