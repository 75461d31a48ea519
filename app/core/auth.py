"""Callers: bearer keys mapped to caller ids, compared in constant time, and a request rate
limit per caller (GATEWAY_CALLER_RPM), counted in this process or, once `share` is called
with Redis, across every replica (one script per request; each replica's share of the limit
while Redis is away). Keys never reach logs, metrics or error bodies."""

from __future__ import annotations

import hashlib
import hmac
import math
from dataclasses import dataclass

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

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


def openai_duration(seconds: float) -> str:
    """A wait as OpenAI writes it in x-ratelimit-reset-*: "17ms", "1s", "1.5s", "6m0s",
    "1h2m3s" (Go's duration format, which its SDKs and dashboards parse)."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms" if seconds > 0 else "0s"
    millis = math.ceil(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs = f"{millis / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    return f"{minutes}m{secs}" if minutes else secs


RateHeaders = list[tuple[bytes, bytes]]


def rate_limit_headers(limit: int, remaining: float, reset_s: float) -> RateHeaders:
    """OpenAI's request-rate headers: the limit per minute, what is left now, and how long
    until the limit is whole again."""
    return [
        (b"x-ratelimit-limit-requests", str(limit).encode()),
        (b"x-ratelimit-remaining-requests", str(max(0, math.floor(remaining))).encode()),
        (b"x-ratelimit-reset-requests", openai_duration(reset_s).encode()),
    ]


class CallerRateLimited(RateLimitExceeded):
    """A caller over GATEWAY_CALLER_RPM: 429 with Retry-After and OpenAI's rate headers."""

    def __init__(self, detail: str, *, retry_after_s: float, rate: RateHeaders) -> None:
        super().__init__(detail, retry_after_s=retry_after_s)
        self._rate = rate

    def headers(self) -> dict[str, str]:
        return super().headers() | {name.decode(): value.decode() for name, value in self._rate}


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
            raise CallerRateLimited(
                f"caller {found!r} is over its request rate limit (GATEWAY_CALLER_RPM)",
                retry_after_s=wait,
                rate=self.rate_headers(found),
            )
        return Caller(found, admin=found in self._admins)

    def rate_headers(self, caller: str) -> RateHeaders:
        """x-ratelimit-*-requests for `caller` as its limiter stands now (none without
        GATEWAY_CALLER_RPM)."""
        window = self._limiters[caller].request_window() if self._rpm else None
        if window is None or self._rpm is None:
            return []
        remaining, reset_s = window
        return rate_limit_headers(self._rpm, remaining, reset_s)

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
        if scope["type"] != ScopeType.HTTP or scope["path"].startswith(OPEN_PATHS):
            await self._app(scope, receive, send)
            return
        caller = await self._authenticator.authenticate(_authorization(scope))
        scope["user"] = caller
        rate = self._authenticator.rate_headers(caller.id)
        if not rate:
            await self._app(scope, receive, send)
            return

        async def send_with_rate(message: Message) -> None:
            # On the answer's first message, whatever the route answers (errors included).
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *rate]
            await send(message)

        await self._app(scope, receive, send_with_rate)


def _authorization(scope: Scope) -> str | None:
    for name, value in scope["headers"]:  # names arrive lower-cased (ASGI spec)
        if name == b"authorization":
            return value.decode("latin-1")
    return None
