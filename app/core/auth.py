"""Callers: bearer keys mapped to caller ids, compared in constant time, and a request rate
limit per caller (GATEWAY_CALLER_RPM), counted in this process or, once `share` is called
with Redis, across every replica (one script per request; each replica's share of the limit
while Redis is away). Keys never reach logs, metrics or error bodies."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from app.core.clock import Clock
from app.core.errors import RateLimitExceeded, Unauthorized
from app.core.resilience.ratelimit import Limiter, make_limiter
from app.core.resilience.shared_limits import SharedLimits
from app.core.settings import Settings
from app.core.shared import SharedState

# Path prefixes that stay open: liveness, readiness, metrics and the API docs.
OPEN_PATHS = ("/health", "/metrics", "/schema")
ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling, as the ledger and budgets know them. `admin` callers
    (GATEWAY_ADMIN_CALLERS) may see other callers' budgets."""

    id: str
    admin: bool = False


class CallerAuthenticator:
    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.enabled = settings.gateway_auth == "enabled"
        self._keys = [
            (name, hashlib.sha256(key.get_secret_value().encode()).digest())
            for name, key in settings.gateway_api_keys.items()
        ]
        self._admins = frozenset(settings.gateway_admin_callers)
        self._clock = clock
        self._rpm = settings.gateway_caller_rpm
        self._limiters: dict[str, Limiter] = {
            name: make_limiter(clock, rpm=self._rpm, tpm=None) for name, _ in self._keys
        }

    def share(self, shared: SharedState) -> None:
        """Count each caller's requests on Redis from now on, so GATEWAY_CALLER_RPM holds
        for the whole gateway rather than for each of its processes."""
        if self._rpm is None:
            return
        limits = SharedLimits(shared, self._clock)
        self._limiters = {
            name: limits.limiter(("caller", name), rpm=self._rpm) for name, _ in self._keys
        }

    async def authenticate(self, authorization: str | None) -> Caller:
        """The caller a bearer header belongs to, or Unauthorized; RateLimitExceeded when
        that caller is over its request rate."""
        found = self._find(authorization)
        wait = await self._limiters[found].acquire(0)
        if wait > 0:
            raise RateLimitExceeded(
                f"caller {found!r} is over its request rate limit", retry_after_s=wait
            )
        return Caller(found, admin=found in self._admins)

    def _find(self, authorization: str | None) -> str:
        """The caller name a bearer header belongs to, or Unauthorized."""
        if not authorization:
            raise Unauthorized("send 'Authorization: Bearer <key>'; this route needs a caller key")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <key>'")
        digest = hashlib.sha256(token.strip().encode()).digest()
        found: str | None = None
        for name, known in self._keys:  # every key compared, in constant time each
            if hmac.compare_digest(digest, known):
                found = name
        if found is None:
            raise Unauthorized("unknown API key")
        return found


class CallerAuthMiddleware:
    """Sets `scope["user"]` to the Caller, or raises Unauthorized / RateLimitExceeded (rendered
    by the app's exception handlers, in the route's own error shape).

    A plain ASGI middleware: Litestar's AbstractAuthenticationMiddleware builds a connection
    object and runs the exclude regexes on every request, a measurable share of the gateway's
    own cost; this reads one header from the scope and tests one prefix tuple.
    """

    def __init__(self, app: ASGIApp, authenticator: CallerAuthenticator) -> None:
        self._app = app
        self._authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and not scope["path"].startswith(OPEN_PATHS):
            scope["user"] = await self._authenticator.authenticate(_authorization(scope))
        await self._app(scope, receive, send)


def _authorization(scope: Scope) -> str | None:
    for name, value in scope["headers"]:  # names arrive lower-cased (ASGI spec)
        if name == b"authorization":
            return value.decode("latin-1")
    return None
