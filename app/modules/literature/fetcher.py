"""SafeFetcher: the only way the literature module talks to the network.

Per request, in order:

1. `safety.check_url` (scheme, credentials, parser traps, the host normalised every way a
   client normalises it - percent-decoding, NFKC, IDNA - then classified: IP literals in every
   spelling, the egress allowlist) - refusals here never reach a socket;
2. a rate-limit slot for the host's publisher (waits at most `rate_limit_max_wait_s`, never
   past the caller's deadline) and the host's circuit breaker;
3. the connection: aiohttp asks `resolver.GuardedResolver` for the host's addresses, and
   connects only to the addresses it checked (no second lookup to rebind); every socket it
   opens goes through `resolver.SocketGuard`, which checks the socket address itself (aiohttp
   asks no resolver about IP literals);
4. redirects are never followed by the client: each `Location` goes through 1-3 again, up to
   `max_redirects` hops (requests go straight to the transport, so httpx never parses a
   `Location` itself: one it cannot parse is our refusal, not the redirecting host's fault);
5. the body is streamed and cut at a cap chosen by its content type; content types outside
   the request's policy are refused before the body is read.

The breaker sees only the host's own faults (5xx, timeouts, connection errors); refusals,
our own cancellations, a timeout at the caller's deadline (its `tier_timeout_s` or the
paper's overall deadline, shorter than the configured tier timeout: `deadline_is_callers`)
and time spent waiting for a connection of our own pool are released unreported: a host is
judged only on the time it was given in full.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar
from urllib.parse import urljoin

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver
from httpx_aiohttp import AiohttpTransport

from app.core.clock import Clock
from app.core.http import WatchedConnector
from app.core.resilience.bounds import Bound, CallBounds
from app.core.settings import LiteratureSettings
from app.modules.literature.hostguards import HostGuards, RatePlan, RateRule
from app.modules.literature.metrics import LiteratureMetrics
from app.modules.literature.resolver import BlockedAddress, GuardedResolver, SocketGuard
from app.modules.literature.safety import (
    EgressPolicy,
    Refusal,
    Target,
    UnsafeTarget,
    check_url,
    sanitize_html,
)

_E = TypeVar("_E", bound=BaseException)

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_PDF_TYPES = frozenset({"application/pdf", "application/x-pdf"})
# Servers that send PDFs without saying so; accepted only if the body starts with %PDF-.
_OPAQUE_TYPES = frozenset(
    {"application/octet-stream", "binary/octet-stream", "application/download", ""}
)
_PDF_MAGIC = b"%PDF-"
# aiohttp's DNS cache: short, so a changed record is seen soon; entries hold checked addresses.
_DNS_CACHE_TTL_S = 10
# Fetch metric outcomes of a timeout that is no verdict on the host.
CALLER_DEADLINE = "caller_deadline"
LOCAL_SATURATION = "local_saturation"


class FetchFailure(StrEnum):
    """How a fetch failed; values are metric labels."""

    REFUSED = "refused"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    DNS = "dns"
    TOO_LARGE = "too_large"
    CONTENT_TYPE = "content_type"
    TOO_MANY_REDIRECTS = "too_many_redirects"
    BREAKER_OPEN = "breaker_open"
    RATE_LIMITED = "rate_limited"


class FetchError(Exception):
    """A fetch that produced no response we can use. `message` never holds the URL."""

    def __init__(self, kind: FetchFailure, message: str) -> None:
        super().__init__(f"{kind.value}: {message}")
        self.kind = kind
        self.message = message

    @property
    def transient(self) -> bool:
        """Worth asking again later: the answer may differ then."""
        return self.kind in _TRANSIENT


_TRANSIENT = frozenset(
    {
        FetchFailure.TIMEOUT,
        FetchFailure.CONNECTION,
        FetchFailure.DNS,
        FetchFailure.BREAKER_OPEN,
        FetchFailure.RATE_LIMITED,
    }
)


def transient_status(status: int) -> bool:
    """Statuses that say "not now" rather than "not here"."""
    return status >= 500 or status == 429


class FetchRefused(FetchError):
    """The guard refused the request before any connection was made."""

    def __init__(self, reason: Refusal, message: str) -> None:
        super().__init__(FetchFailure.REFUSED, message)
        self.reason = reason


# --- bodies -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BodyPolicy:
    """What a request accepts and how much of each kind of body it reads.

    A cap of None refuses that kind; `truncate_*` keeps the first `cap` bytes instead of
    failing (a bounded sample: enough to see a PDF's magic number, or to judge a page)."""

    accept: str
    html_cap: int | None = None
    pdf_cap: int | None = None
    json_cap: int | None = None
    truncate_html: bool = False
    truncate_pdf: bool = False


@dataclass(frozen=True, slots=True)
class FetchResult:
    url: str  # after redirects
    status: int
    media_type: str
    content_type: str  # the raw header, for the charset
    body: bytes
    truncated: bool
    redirects: int

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def is_pdf(self) -> bool:
        return self.body.startswith(_PDF_MAGIC)

    @property
    def is_html(self) -> bool:
        return self.media_type in _HTML_TYPES

    def html(self, max_chars: int) -> str:
        return sanitize_html(self.body, self.content_type, max_chars=max_chars)


@dataclass(frozen=True, slots=True)
class _Redirect:
    location: str


class SafeFetcher:
    def __init__(
        self,
        settings: LiteratureSettings,
        clock: Clock,
        metrics: LiteratureMetrics,
        guards: HostGuards,
        plan: RatePlan,
        *,
        resolver_factory: Callable[[], AbstractResolver] | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._metrics = metrics
        self._guards = guards
        self._plan = plan
        self.policy = EgressPolicy(
            trusted_hosts=frozenset(settings.trusted_hosts),
            allowed_hosts=tuple(settings.allowed_hosts),
            host_overrides=dict(settings.host_overrides),
        )
        self._resolver_factory = resolver_factory or aiohttp.ThreadedResolver
        self._sockets = SocketGuard(self.policy)
        # Requests go straight to the transport (see step 4 above); the overall deadline is
        # the caller's `asyncio.timeout`, this only bounds a connect attempt.
        self._transport = AiohttpTransport(client=self._session, trust_env=False, retries=0)
        connect = httpx.Timeout(None, connect=settings.connect_timeout_s)
        self._timeout = {"timeout": connect.as_dict()}
        self._headers = {"User-Agent": settings.user_agent, "Accept-Encoding": "gzip, deflate"}
        s = settings
        html = "text/html,application/xhtml+xml;q=0.9"
        # A landing page, or a link that may be a PDF: whole page, first bytes of a PDF.
        self.page_policy = BodyPolicy(
            accept=f"{html},application/pdf;q=0.8,*/*;q=0.1",
            html_cap=s.max_html_bytes,
            pdf_cap=s.probe_bytes,
            truncate_pdf=True,
        )
        # Tier 7's sample: a PDF whole (its index is at the end), a page's beginning.
        self.sample_policy = BodyPolicy(
            accept=f"{html},application/pdf;q=0.9,*/*;q=0.1",
            html_cap=s.max_html_bytes,
            pdf_cap=s.max_pdf_bytes,
            truncate_html=True,
        )
        self.json_policy = BodyPolicy(accept="application/json", json_cap=s.max_json_bytes)

    def _session(self) -> aiohttp.ClientSession:
        """Built on first use, inside the running loop (aiohttp needs one)."""
        connector = WatchedConnector(
            limit=self._settings.max_connections,
            resolver=GuardedResolver(self.policy, self._resolver_factory()),
            ttl_dns_cache=_DNS_CACHE_TTL_S,
            socket_factory=self._sockets,
        )
        return aiohttp.ClientSession(connector=connector, trust_env=False)

    async def aclose(self) -> None:
        await self._transport.aclose()

    def check(self, url: str) -> Target:
        """The checks that need no DNS; raises FetchRefused."""
        try:
            return check_url(url, self.policy)
        except UnsafeTarget as refusal:
            self._metrics.refusals.add(1, {"reason": refusal.reason.value})
            raise FetchRefused(refusal.reason, refusal.message) from None

    async def fetch(
        self,
        url: str,
        *,
        deadline: float,
        policy: BodyPolicy,
        deadline_is_callers: bool = False,
    ) -> FetchResult:
        """GET `url` under the guard; raises FetchError (FetchRefused when refused).

        `deadline_is_callers`: the deadline is the caller's (shorter than the configured tier
        timeout), so a host that has not answered by then is not at fault."""
        current = url
        for hop in range(self._settings.max_redirects + 1):
            target = self.check(current)
            outcome = await self._once(target, deadline, policy, hop, deadline_is_callers)
            if isinstance(outcome, FetchResult):
                return outcome
            current = urljoin(target.url, outcome.location)
        raise FetchError(
            FetchFailure.TOO_MANY_REDIRECTS,
            f"more than {self._settings.max_redirects} redirects",
        )

    async def _once(
        self, target: Target, deadline: float, policy: BodyPolicy, hop: int, callers: bool
    ) -> FetchResult | _Redirect:
        rule = self._plan.rule(target.host)
        breaker = self._guards.breaker(target.host)
        if not breaker.would_admit():  # before taking a rate-limit slot we would waste
            self._metrics.fetch(rule.label, FetchFailure.BREAKER_OPEN.value)
            raise FetchError(FetchFailure.BREAKER_OPEN, "the host's circuit breaker is open")
        await self._slot(rule, deadline)
        ticket = breaker.admit()
        if ticket is None:
            self._metrics.fetch(rule.label, FetchFailure.BREAKER_OPEN.value)
            raise FetchError(FetchFailure.BREAKER_OPEN, "the host's circuit breaker is open")
        remaining = deadline - self._clock.monotonic()
        if remaining <= 0:
            breaker.release(ticket)
            raise FetchError(FetchFailure.TIMEOUT, "no time left for this request")
        host_fault = False
        settled = False
        # The host's own time is the whole deadline, unless that deadline is the caller's.
        bounds = CallBounds(math.inf if callers else remaining, remaining, None)
        try:
            async with bounds:
                outcome = await self._exchange(target, policy, hop)
            if isinstance(outcome, FetchResult) and outcome.status >= 500:
                host_fault = True
            label = "redirect" if isinstance(outcome, _Redirect) else f"{outcome.status // 100}xx"
            self._metrics.fetch(rule.label, label)
            return outcome
        except TimeoutError:
            fired = bounds.fired
            if fired is Bound.POOL or fired is Bound.CALLER:
                breaker.release(ticket)
                settled = True
                pool = fired is Bound.POOL
                self._metrics.fetch(rule.label, LOCAL_SATURATION if pool else CALLER_DEADLINE)
                message = "no connection was free in time" if pool else "the deadline passed"
                raise FetchError(FetchFailure.TIMEOUT, message) from None
            host_fault = True
            self._metrics.fetch(rule.label, FetchFailure.TIMEOUT.value)
            raise FetchError(FetchFailure.TIMEOUT, "the host did not answer in time") from None
        except httpx.HTTPError as exc:
            blocked = _cause(exc, BlockedAddress)
            if blocked is not None:
                refusal = blocked.refusal
                breaker.release(ticket)
                settled = True
                self._metrics.refusals.add(1, {"reason": refusal.reason.value})
                raise FetchRefused(refusal.reason, refusal.message) from None
            host_fault = True
            kind = FetchFailure.DNS if _cause(exc, socket.gaierror) else FetchFailure.CONNECTION
            self._metrics.fetch(rule.label, kind.value)
            raise FetchError(kind, "the connection failed") from None
        except FetchError as error:
            self._metrics.fetch(rule.label, error.kind.value)
            raise
        except BaseException:
            breaker.release(ticket)
            settled = True
            raise
        finally:
            if not settled:
                (breaker.failure if host_fault else breaker.success)(ticket)

    async def _slot(self, rule: RateRule, deadline: float) -> None:
        limiter = self._guards.limiter(rule)
        wait = limiter.try_acquire(0)
        if wait <= 0:
            return
        budget = min(self._settings.rate_limit_max_wait_s, deadline - self._clock.monotonic())
        if wait > budget:
            self._metrics.fetch(rule.label, FetchFailure.RATE_LIMITED.value)
            raise FetchError(FetchFailure.RATE_LIMITED, "the publisher's rate limit is reached")
        await self._clock.sleep(wait)
        if limiter.try_acquire(0) > 0:
            self._metrics.fetch(rule.label, FetchFailure.RATE_LIMITED.value)
            raise FetchError(FetchFailure.RATE_LIMITED, "the publisher's rate limit is reached")

    async def _exchange(
        self, target: Target, policy: BodyPolicy, hop: int
    ) -> FetchResult | _Redirect:
        headers = {**self._headers, "Accept": policy.accept}
        request = httpx.Request("GET", target.url, headers=headers, extensions=self._timeout)
        with self._sockets.connecting(target.host):
            response = await self._transport.handle_async_request(request)
        try:
            status = response.status_code
            location = response.headers.get("location")
            if status in _REDIRECTS and location:
                return _Redirect(location.strip())
            content_type = response.headers.get("content-type", "")
            media = content_type.split(";", 1)[0].strip().lower()
            cap, truncate, sniff_pdf = self._limits(media, policy, ok=200 <= status < 300)
            declared = response.headers.get("content-length", "")
            if not truncate and declared.isdigit() and int(declared) > cap:
                raise FetchError(FetchFailure.TOO_LARGE, f"the body is larger than {cap} bytes")
            body, truncated = await _read(response, cap, truncate)
            if sniff_pdf and not body.startswith(_PDF_MAGIC):
                raise FetchError(FetchFailure.CONTENT_TYPE, f"unexpected content type {media!r}")
            return FetchResult(
                url=target.url,
                status=status,
                media_type=media,
                content_type=content_type,
                body=body,
                truncated=truncated,
                redirects=hop,
            )
        finally:
            await response.aclose()

    @staticmethod
    def _limits(media: str, policy: BodyPolicy, *, ok: bool) -> tuple[int, bool, bool]:
        """(cap, truncate, must start with %PDF-) for this response, or FetchError."""
        if media in _HTML_TYPES and policy.html_cap:
            return policy.html_cap, policy.truncate_html, False
        if media in _PDF_TYPES and policy.pdf_cap:
            return policy.pdf_cap, policy.truncate_pdf, False
        if (media == "application/json" or media.endswith("+json")) and policy.json_cap:
            return policy.json_cap, False, False
        if not ok:
            return 0, True, False  # an error page we will not read: status only
        if media in _OPAQUE_TYPES and policy.pdf_cap:
            return policy.pdf_cap, policy.truncate_pdf, True
        raise FetchError(FetchFailure.CONTENT_TYPE, f"unexpected content type {media!r}")


async def _read(response: httpx.Response, cap: int, truncate: bool) -> tuple[bytes, bool]:
    """Stream the (decoded) body; stop at `cap` bytes, keeping them or failing."""
    if cap <= 0:
        return b"", True
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        if size + len(chunk) > cap:
            if not truncate:
                raise FetchError(FetchFailure.TOO_LARGE, f"the body is larger than {cap} bytes")
            chunks.append(chunk[: cap - size])
            return b"".join(chunks), True
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), False


def _cause(exc: BaseException, kind: type[_E]) -> _E | None:
    """The first exception of `kind` in `exc`'s cause/context chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        os_error = getattr(current, "os_error", None)
        if isinstance(os_error, kind):
            return os_error
        current = current.__cause__ or current.__context__
    return None
