"""The HTTP server: uvicorn with deadlines on slow clients and a bounded connection table.

Stock uvicorn 0.54 reads a request's headers for as long as the client keeps sending bytes:
its only timer is the keep-alive one, armed after a response and cancelled by any byte, and
a fresh connection has no timer at all. `limit_concurrency` answers 503 only once headers are
complete, and it counts open connections, so a slowloris attack makes it refuse every honest
caller too. With enough slow sockets the process reaches its descriptor limit; libuv then
accepts and drops every new connection (its EMFILE trick), and the service answers nobody.

This module keeps uvicorn (its parser, graceful shutdown and signal handling) and adds, per
connection, one deadline for the phase it is in:

- headers: from the connection (or, as the sweep first sees it, the start of a later
  request) to the end of the headers, `HTTP_HEADER_TIMEOUT_S`; trickling bytes do not move it;
- body: from the end of the headers to the end of the body, `HTTP_BODY_TIMEOUT_S`;
- idle: from the end of a response to the next request, `HTTP_KEEPALIVE_TIMEOUT_S`;

all checked by one sweep per server that reads uvicorn's own connection state (no timer per
request, one small hook when a request's headers are complete), and, per server, a table of
open client connections capped below the descriptor limit. At the cap a new connection
evicts the one that has waited longest without being served (still reading headers, or
idle), so slow sockets give way to new callers and the process never runs out of
descriptors. Requests in flight are capped by `HTTP_LIMIT_CONCURRENCY`; past it a caller
gets an immediate 503, counted on requests, never on idle sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import resource
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from app.core.settings import ProviderName, Settings

log = logging.getLogger("app.server")

# Descriptors the process needs besides client sockets and upstream pools: stdio, the
# listening socket, the event loop's epoll and wake-up pipe, log files, imports, the budget
# webhook's one-off client.
BASE_RESERVE = 64
# The ledger: PostgreSQL's pool (5 + 5 overflow), or SQLite connections with their -wal and
# -shm files.
DATABASE_RESERVE = 32
# Below this many client connections the service could not do its job: refuse to start.
MIN_CLIENT_CONNECTIONS = 8
# uvicorn's default listen backlog. The event loop accepts the whole backlog in one burst
# before any connection is seen by the protocol, so the backlog is part of the budget.
MAX_BACKLOG = 2048
MIN_BACKLOG = 16

# Sent to a connection that arrives when every slot is serving a request.
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 19\r\n"
    b"retry-after: 1\r\n"
    b"connection: close\r\n\r\n"
    b"Service Unavailable"
)
# Sent when a request's headers did not arrive in time (nothing is sent to a silent socket).
_HEADER_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 15\r\n"
    b"connection: close\r\n\r\n"
    b"Request Timeout"
)


class DescriptorBudgetError(RuntimeError):
    """The descriptor limit leaves too little room for client connections."""


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The server's numbers, decided once at start (see `connection_limits`)."""

    max_connections: int
    limit_concurrency: int
    backlog: int
    header_timeout_s: float
    body_timeout_s: float
    keepalive_timeout_s: float
    # How often deadlines are checked: each is met within one interval.
    sweep_interval_s: float


def reserved_descriptors(settings: Settings) -> int:
    """Descriptors kept for everything but client sockets: each configured provider's pool,
    the literature fetcher's pool, the database and the process itself."""
    pools = sum(
        settings.provider(name).max_connections
        for name in ProviderName
        if settings.provider(name).configured
    )
    return BASE_RESERVE + DATABASE_RESERVE + pools + settings.literature.max_connections


def connection_limits(settings: Settings, descriptor_limit: int) -> ConnectionLimits:
    """Split `descriptor_limit` (the soft RLIMIT_NOFILE) between the reserve, the listen
    backlog and client connections; the configured cap only ever goes down.

    A quarter of the room (16..2048) goes to the backlog, because a burst of pending
    connections is accepted before any of them can evict another. Three quarters of the
    client slots at most serve requests at once, so a new caller at the cap always finds a
    waiting connection to evict.
    """
    reserve = reserved_descriptors(settings)
    room = descriptor_limit - reserve
    backlog = max(MIN_BACKLOG, min(MAX_BACKLOG, room // 4))
    max_connections = min(settings.http_max_connections, room - backlog)
    if max_connections < MIN_CLIENT_CONNECTIONS:
        raise DescriptorBudgetError(
            f"the descriptor limit (RLIMIT_NOFILE {descriptor_limit}) leaves "
            f"{max(0, room - backlog)} client connections after {reserve} reserved for the "
            f"upstream pools (*_MAX_CONNECTIONS) and the database, and {backlog} for the "
            f"listen backlog: raise `ulimit -n` or lower the pools"
        )
    concurrency = max(1, max_connections * 3 // 4)
    if settings.http_limit_concurrency is not None:
        concurrency = min(concurrency, settings.http_limit_concurrency)
    return ConnectionLimits(
        max_connections=max_connections,
        limit_concurrency=concurrency,
        backlog=backlog,
        header_timeout_s=settings.http_header_timeout_s,
        body_timeout_s=settings.http_body_timeout_s,
        keepalive_timeout_s=settings.http_keepalive_timeout_s,
        sweep_interval_s=sweep_interval(settings),
    )


def sweep_interval(settings: Settings) -> float:
    """A tenth of the shortest deadline, between 50 ms and 1 s: close enough to each."""
    shortest = min(
        settings.http_header_timeout_s,
        settings.http_body_timeout_s,
        settings.http_keepalive_timeout_s,
    )
    return max(0.05, min(1.0, shortest / 10))


def descriptor_limit_for(settings: Settings) -> int:
    """The soft RLIMIT_NOFILE, first raised toward the hard limit when the configured cap
    needs more (a common soft limit is 1024 under a far higher hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = reserved_descriptors(settings) + settings.http_max_connections + MAX_BACKLOG
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return wanted if soft == resource.RLIM_INFINITY else soft
    target = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):
            return soft
        log.info("descriptor limit raised soft=%s->%s hard=%s", soft, target, hard)
        return target
    return soft


def plan_limits(settings: Settings) -> ConnectionLimits:
    """The limits `serve` runs with: the descriptor limit (raised if it can be), split as
    `connection_limits` says, with a warning when the configured cap had to come down."""
    descriptors = descriptor_limit_for(settings)
    limits = connection_limits(settings, descriptors)
    if limits.max_connections < settings.http_max_connections:
        log.warning(
            "HTTP_MAX_CONNECTIONS lowered to %s: RLIMIT_NOFILE %s, %s reserved for upstream "
            "pools and the database, %s for the listen backlog",
            limits.max_connections,
            descriptors,
            reserved_descriptors(settings),
            limits.backlog,
        )
    return limits


class Guarded(Protocol):
    """What the registry needs from a connection."""

    def evict(self) -> None:
        """Close it to make room for a newcomer."""

    def expire_if_due(self, now: float) -> None:
        """Close it if its current phase has outlived its deadline."""


class ConnectionRegistry:
    """One server's open client connections, and which of them wait to be served.

    `waiting` is ordered by when each connection last started waiting (connected, or
    finished a response), so the first one is the one that has held a slot longest while
    giving the server nothing to do. A connection serving a request is never evicted.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        # Insertion-ordered (oldest connection first): the sweep visits them in that order,
        # so connections that rejoin the queue in one sweep keep their age order.
        self._open: dict[Guarded, None] = {}
        self._waiting: OrderedDict[Guarded, None] = OrderedDict()
        self.evicted = 0

    @property
    def open(self) -> int:
        return len(self._open)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def admit(self, connection: Guarded) -> bool:
        """Take a new connection, evicting the longest-waiting one at the cap. False (and
        nothing registered) when every slot is serving a request."""
        if len(self._open) >= self.capacity:
            if not self._waiting:
                return False
            victim, _ = self._waiting.popitem(last=False)
            del self._open[victim]
            self.evicted += 1
            victim.evict()
        self._open[connection] = None
        self._waiting[connection] = None
        return True

    def serving(self, connection: Guarded) -> None:
        """The connection's request reached the app: it is no longer evictable."""
        self._waiting.pop(connection, None)

    def idle(self, connection: Guarded) -> None:
        """The connection has nothing in flight again; it joins the back of the queue."""
        if connection in self._open and connection not in self._waiting:
            self._waiting[connection] = None

    def forget(self, connection: Guarded) -> None:
        self._open.pop(connection, None)
        self._waiting.pop(connection, None)

    def expire(self, now: float) -> None:
        """Close every connection whose phase is past its deadline."""
        for connection in list(self._open):
            connection.expire_if_due(now)


class GuardedServerState(ServerState):
    """uvicorn's per-server state plus our limits, connection table and deadline sweep:
    per server instance, so two servers in one process never share a slot.

    Deadlines are checked by one timer per server every `sweep_interval_s` while any
    connection is open, not by a timer per connection or per request: the sweep looks at
    each connection's uvicorn state, notes when it first saw the current phase, and closes
    it once the phase's deadline has passed, so a deadline is met within two intervals and
    a request costs nothing for it.
    """

    def __init__(self, limits: ConnectionLimits) -> None:
        super().__init__()
        self.limits = limits
        self.registry = ConnectionRegistry(limits.max_connections)
        self._sweep: asyncio.TimerHandle | None = None

    def admit(self, connection: Guarded, loop: asyncio.AbstractEventLoop) -> bool:
        """Register a new connection (see ConnectionRegistry.admit). When no connection
        is known to be waiting, the sweep runs first: connections that finished a request
        since the last one rejoin the queue only when a sweep sees them."""
        if self.registry.admit(connection):
            return True
        self.registry.expire(loop.time())
        return self.registry.admit(connection)

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make sure the sweep runs (called for each new connection)."""
        if self._sweep is None:
            self._sweep = loop.call_later(self.limits.sweep_interval_s, self._sweep_once, loop)

    def _sweep_once(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweep = None
        self.registry.expire(loop.time())
        if self.registry.open:
            self.watch(loop)


class Phase(enum.Enum):
    """What the connection is waiting for, and so which deadline applies."""

    HEADERS = enum.auto()  # header_timeout_s from the connection or the request's first byte
    BODY = enum.auto()  # body_timeout_s from the end of the headers
    APP = enum.auto()  # the app has the whole request: its own deadlines apply
    IDLE = enum.auto()  # keepalive_timeout_s from the end of the last response


_HEADERS, _BODY, _APP, _IDLE = Phase.HEADERS, Phase.BODY, Phase.APP, Phase.IDLE


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline per phase and a registered slot.

    Only `on_headers_complete` runs per request (the concurrency limit and leaving the
    eviction queue must happen at once); everything else is read from uvicorn's own state
    by the server's sweep (see GuardedServerState, `phase`). uvicorn's keep-alive timer
    still runs; our IDLE deadline also covers the case it misses (a body still arriving
    after the response cancels uvicorn's timer for good).
    """

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        if not isinstance(server_state, GuardedServerState):
            raise TypeError("GuardedHttpToolsProtocol runs only under GuardedServer")
        self._state = server_state
        self._limits = server_state.limits
        self._registry = server_state.registry
        # What the sweep last saw (the phase and the uvicorn object it belongs to), and when
        # it first saw it: the phase's deadline counts from then.
        self._seen_phase = _HEADERS
        self._seen: object = None
        self._since = 0.0

    # --- connection -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self._state.admit(self, self.loop):
            # Every slot is serving a request: say so at once rather than hold a descriptor.
            self.connections.discard(self)
            transport.write(_BUSY)
            transport.close()
            return
        self._since = self.loop.time()  # the first request's headers count from here
        self._state.watch(self.loop)

    def connection_lost(self, exc: Exception | None) -> None:
        self._registry.forget(self)
        super().connection_lost(exc)

    def evict(self) -> None:
        """Closed to make room for a new connection (see ConnectionRegistry.admit)."""
        if not self.transport.is_closing():
            self.transport.close()

    def handle_websocket_upgrade(self) -> None:
        # The socket changes hands; the websocket protocol has its own ping timeouts.
        self._registry.forget(self)
        super().handle_websocket_upgrade()

    # --- the one per-request hook -----------------------------------------------------------
    def on_headers_complete(self) -> None:
        self._registry.serving(self)
        # uvicorn's own check counts open connections, which slow sockets inflate; ours
        # counts requests in flight. 0 makes uvicorn's check answer 503, None lets it pass.
        self.limit_concurrency = 0 if len(self.tasks) >= self._limits.limit_concurrency else None
        HttpToolsProtocol.on_headers_complete(self)

    # --- deadlines, from the sweep ----------------------------------------------------------
    def phase(self) -> tuple[Phase, object]:
        """The phase, read from uvicorn's state, and the object that identifies this
        occurrence of it (a new request's scope, the cycle that answers it)."""
        cycle, scope = self.cycle, self.scope
        if cycle is None:
            return _HEADERS, None  # the first request: from the connection
        if scope is not cycle.scope:
            return _HEADERS, scope  # the parser began a request no cycle answers yet
        if not cycle.response_complete:
            return (_BODY if cycle.more_body else _APP), cycle
        return _IDLE, cycle

    def expire_if_due(self, now: float) -> None:
        phase, seen = self.phase()
        if phase is not self._seen_phase or seen is not self._seen:
            self._seen_phase, self._seen, self._since = phase, seen, now
            if phase is _IDLE or phase is _HEADERS:
                self._registry.idle(self)  # no request in flight: evictable again
            return
        if phase is _HEADERS:
            timeout = self._limits.header_timeout_s
        elif phase is _BODY:
            timeout = self._limits.body_timeout_s
        elif phase is _IDLE:
            timeout = self._limits.keepalive_timeout_s
        else:
            return  # the app has the request: its own deadlines apply
        if now - self._since < timeout or self.transport.is_closing():
            return
        if phase is _HEADERS and self.scope is not None:
            # A request was started and not finished in time: tell the client why.
            self.transport.write(_HEADER_TIMEOUT)
        self.transport.close()


class GuardedServer(uvicorn.Server):
    """uvicorn's server with per-instance guarded state (see GuardedServerState)."""

    def __init__(self, config: uvicorn.Config, limits: ConnectionLimits) -> None:
        super().__init__(config)
        self.server_state = GuardedServerState(limits)

    @property
    def registry(self) -> ConnectionRegistry:
        state = self.server_state
        assert isinstance(state, GuardedServerState)
        return state.registry


def run_server(
    app: Any,
    *,
    host: str,
    port: int,
    limits: ConnectionLimits,
    log_level: str,
    workers: int = 1,
    log_config: dict[str, Any] | None = None,
) -> int:
    """Serve `app` until a signal, as `uvicorn.run` would, on the guarded protocol.

    uvicorn's `limit_concurrency` stays unused (the protocol counts requests instead);
    graceful shutdown waits up to 30 s for requests in flight, as before. With `workers` > 1,
    `app` is an import string of an app factory and app.core.workers runs that many
    processes, each on this protocol."""
    config = uvicorn.Config(
        app,
        workers=workers,
        factory=isinstance(app, str),
        host=host,
        port=port,
        log_level=log_level.lower(),
        # Ours (app.core.logging): uvicorn's lines in the service's format, in every worker.
        log_config=log_config,
        access_log=False,  # app.core.request_id writes one access line per request
        timeout_graceful_shutdown=30,
        http=GuardedHttpToolsProtocol,
        backlog=limits.backlog,
        limit_concurrency=None,
        # uvicorn's own keep-alive timer, never shorter than ours (it takes whole seconds).
        timeout_keep_alive=math.ceil(limits.keepalive_timeout_s),
    )
    log.info(
        "http limits max_connections=%s limit_concurrency=%s backlog=%s header_timeout_s=%s "
        "body_timeout_s=%s keepalive_timeout_s=%s",
        limits.max_connections,
        limits.limit_concurrency,
        limits.backlog,
        limits.header_timeout_s,
        limits.body_timeout_s,
        limits.keepalive_timeout_s,
    )
    if workers > 1:
        from app.core.workers import run_workers  # it builds on this module

        return run_workers(config, limits, log_level)
    server = GuardedServer(config, limits)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    # uvicorn.run exits with 3 when the server never started (a port in use, a failed
    # lifespan); say the same.
    return 0 if server.started else STARTUP_FAILURE
