"""What a model or deployment name may look like before it is routed, configured or sent.

Names reach upstream URL paths (Gemini's `models/{model}:generateContent`, Azure's
`deployments/{deployment}/chat/completions`), where `..`, `/`, `?`, `#`, `%` or a backslash
would move the request to another endpoint of the provider's host with our key attached. So a
name is held to a strict ASCII set, checked on the exact string we are given (no decoding):
each part starts with a letter or digit and continues with letters, digits and `. _ : -`.
That excludes the dot segments `.` and `..`, percent-escapes (`%2e%2e`, `%2F`), `? # \\`,
whitespace and every non-ASCII look-alike (the full stops U+FF0E and U+3002), which some
servers fold to a dot.

A model id holds at most one `/`, and only on providers whose ids have one (Groq serves
`openai/gpt-oss-20b`); those providers carry the id in the JSON body, never in the path.
"""

from __future__ import annotations

import re

# One part of a name: ASCII letters, digits and . _ : -, starting with a letter or digit.
_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")
# Longest name accepted anywhere (the request schemas cap `model` at the same length).
MAX_NAME_CHARS = 200
RULE = "letters, digits and . _ : - (each '/'-separated part starting with a letter or digit)"


def is_part(value: str) -> bool:
    """True when `value` is one part of a name: no '/', no dots alone, nothing outside RULE."""
    return _PART.fullmatch(value) is not None


def model_id_problem(name: str, *, nested: bool) -> str | None:
    """Why `name` cannot be a model id (or Azure deployment), or None when it can.

    `nested`: the provider's ids may hold one '/' (they travel in the body, not the path)."""
    if not name:
        return "is empty"
    if len(name) > MAX_NAME_CHARS:
        return f"is longer than {MAX_NAME_CHARS} characters"
    parts = name.split("/")
    if len(parts) > (2 if nested else 1):
        return "may hold at most one '/'" if nested else "may not contain '/'"
    if not all(is_part(part) for part in parts):
        return f"may only contain {RULE}"
    return None


def check_model_id(name: str, *, nested: bool, setting: str) -> str:
    """`name` if it is a valid model id, else a ValueError naming the `setting` it came from."""
    problem = model_id_problem(name, nested=nested)
    if problem is not None:
        raise ValueError(f"{setting}: a model or deployment name {problem}")
    return name


def model_field_problem(value: str) -> str | None:
    """Why a request's `model` field is not an alias, a model id or `provider/model id`.

    Only the shape is checked here (at most two '/', every part valid); whether the provider
    prefix exists and its ids may hold a '/' is the router's to say."""
    if len(value) > MAX_NAME_CHARS:
        return f"is longer than {MAX_NAME_CHARS} characters"
    parts = value.split("/")
    if len(parts) > 3:
        return "may hold at most two '/' (provider/model, where the model id has at most one)"
    if not all(is_part(part) for part in parts):
        return f"may only contain {RULE}"
    return None
