"""Request bodies: refused early when they are too big, and never a 500 when they are bad.

Parsing is the one piece of work a caller controls before any guard of ours has looked at the
request, and it runs on the event loop: a 10 MB body of 300 000 tiny messages costs about a
second of pydantic validation, during which no other request (health included) is served. So
each route gets a body limit that fits it, checked on `Content-Length` before a byte is read
and on the bytes actually received otherwise, and the one list a route is made of (messages,
papers) is counted on the decoded JSON before any item is validated.

Litestar lets two decode failures escape as 500s with a traceback (msgspec raises
`UnicodeDecodeError` for invalid UTF-8 and `RecursionError` for deeply nested JSON):
`GatewayRequest` turns them, and malformed JSON, into a 400 that says what to fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from litestar import Request
from litestar.exceptions import SerializationException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge

from app.core.errors import InvalidRequest, PayloadTooLarge


class InvalidBody(InvalidRequest):
    """The body is not UTF-8 JSON we can read."""

    slug = "invalid-body"
    title = "Invalid request body"


class GatewayRequest(Request[Any, Any, Any]):
    """Litestar's request, with body and JSON failures mapped to our error tree."""

    async def body(self) -> bytes:
        try:
            return await super().body()
        except RequestEntityTooLarge:
            limit = self.route_handler.resolve_request_max_body_size()
            raise PayloadTooLarge(f"the request body is larger than {limit} bytes") from None

    async def json(self) -> Any:
        try:
            return await super().json()
        except UnicodeDecodeError:
            raise InvalidBody("the request body is not valid UTF-8") from None
        except RecursionError:
            raise InvalidBody("the JSON body is nested too deeply") from None
        except SerializationException as exc:
            raise InvalidBody(f"the request body is not valid JSON: {exc}") from None


@dataclass(frozen=True, slots=True)
class BodyRule:
    """What one route accepts: bytes, and the most items in its top-level list field."""

    max_bytes: int
    setting: str  # the variable that raises the byte limit, named in the 413
    list_field: str | None = None
    max_items: int = 0
    items_setting: str = ""
    too_many: type[PayloadTooLarge] = PayloadTooLarge  # the error a module gives an overlong list


class BodyLimits:
    """A `before_request` hook enforcing each route's `BodyRule`, keyed by path.

    It runs before Litestar extracts the handler's arguments; the body and its decoded JSON are
    cached on the request, so the handler's own parsing does not read or decode them again.
    """

    def __init__(self, rules: Mapping[str, BodyRule]) -> None:
        self._rules = dict(rules)

    @property
    def largest(self) -> int:
        """The app-wide cap: what any route may read while a chunked body streams in."""
        return max((rule.max_bytes for rule in self._rules.values()), default=1024 * 1024)

    async def __call__(self, request: Request[Any, Any, Any]) -> None:
        rule = self._rules.get(request.scope["path"])
        if rule is None:
            return
        declared = request.content_length
        if declared is not None and declared > rule.max_bytes:
            raise _too_large(declared, rule)
        body = await request.body()
        if len(body) > rule.max_bytes:  # chunked, or a Content-Length that lied
            raise _too_large(len(body), rule)
        if rule.list_field is None or not body:
            return
        data = await request.json()
        items = data.get(rule.list_field) if isinstance(data, dict) else None
        if isinstance(items, list) and len(items) > rule.max_items:
            raise rule.too_many(
                f"'{rule.list_field}' holds {len(items)} items; send at most {rule.max_items} "
                f"per request (split it, or raise {rule.items_setting})"
            )


def _too_large(size: int, rule: BodyRule) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request body is {size} bytes; this route accepts at most {rule.max_bytes} "
        f"({rule.setting})"
    )
