"""A minimal JSON value that fits a response schema, and one that does not.

What a real model does with `response_format: json_schema` (OpenAI, Groq, Azure) or Gemini's
`responseSchema`: answer JSON of that shape. The sandbox answers the smallest such value,
deterministically, so a client's structured-output parser (the openai SDK's `parse`,
LangChain's `with_structured_output`) gets something it can read; the `schema_mismatch`
fault answers JSON of another shape, as a model that ignored the schema would.

Covers the JSON Schema that SDKs generate from Pydantic models (objects, arrays, scalars,
enum, const, anyOf/oneOf/allOf, $ref into $defs/definitions, string and number bounds) and
Gemini's OpenAPI subset (upper-case types, nullable).
"""

from __future__ import annotations

from typing import Any

_MAX_DEPTH = 12


def instance_for(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """The smallest value that fits `schema` (every listed property filled, minimum items)."""
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return None
    if "$ref" in schema:
        return instance_for(_resolve(root, str(schema["$ref"])), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            concrete = [o for o in options if not _is_null(o)] or options
            return instance_for(concrete[0], root, depth + 1)
    if isinstance(schema.get("allOf"), list) and schema["allOf"]:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            part = (
                _resolve(root, part["$ref"]) if isinstance(part, dict) and "$ref" in part else part
            )
            if isinstance(part, dict):
                merged = _merge(merged, part)
        return instance_for(merged, root, depth + 1)
    kind = _type(schema)
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: instance_for(sub, root, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        count = int(schema.get("minItems") or 0)
        return [instance_for(schema.get("items") or {}, root, depth + 1) for _ in range(count)]
    if kind == "string":
        return _string(schema)
    if kind == "integer":
        return int(_number(schema, integer=True))
    if kind == "number":
        return _number(schema, integer=False)
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return {}


def mismatch_for(schema: Any) -> Any:
    """JSON that fits no object, array or scalar schema an SDK generates: a bare value of
    another type than the schema asks for."""
    kind = _type(schema) if isinstance(schema, dict) else None
    if kind in ("array",):
        return {"sandbox": "not the schema"}
    if kind in ("string",):
        return 0
    return ["sandbox: not the schema"]


def _resolve(root: Any, ref: str) -> Any:
    if not ref.startswith("#/"):
        return {}
    node = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return {}
        node = node[part]
    return node


def _is_null(schema: Any) -> bool:
    return isinstance(schema, dict) and _type(schema) == "null"


def _type(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), "null")
    if kind is None and "properties" in schema:
        return "object"
    return str(kind).lower() if kind is not None else None


def _string(schema: dict[str, Any]) -> str:
    formats = {
        "date-time": "2024-01-01T00:00:00Z",
        "date": "2024-01-01",
        "time": "00:00:00",
        "email": "sandbox@example.org",
        "uri": "https://example.org/",
        "uuid": "00000000-0000-4000-8000-000000000000",
    }
    text = formats.get(str(schema.get("format", "")), "sandbox")
    low = int(schema.get("minLength") or 0)
    high = schema.get("maxLength")
    text = text.ljust(low, "x")
    if isinstance(high, int):
        text = text[:high]
    return text


def _number(schema: dict[str, Any], *, integer: bool) -> float:
    low = schema.get("minimum")
    exclusive = schema.get("exclusiveMinimum")
    high = schema.get("maximum")
    value = 0.0
    if isinstance(low, int | float):
        value = float(low)
    if isinstance(exclusive, int | float):
        value = max(value, float(exclusive) + (1 if integer else 0.5))
    if isinstance(high, int | float) and value > high:
        value = float(high)
    if integer:
        value = float(int(value)) if value == int(value) else float(int(value) + 1)
    return value


def _merge(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    merged = {**left, **right}
    if "properties" in left or "properties" in right:
        merged["properties"] = {**left.get("properties", {}), **right.get("properties", {})}
    return merged
