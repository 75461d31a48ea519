"""The HTTP server: uvicorn with deadlines on slow clients and a bounded connection table.

Stock uvicorn 0.54 reads a request's headers for as long as the client keeps sending bytes:
its only timer is the keep-alive one, armed after a response and cancelled by any byte, and
a fresh connection has no timer at all. `limit_concurrency` answers 503 only once headers are
complete, and it counts open connections, so a slowloris attack makes it refuse every honest
caller too. With enough slow sockets the process reaches its descriptor limit; libuv then
accepts and drops every new connection (its EMFILE trick), and the service answers nobody.

This module keeps uvicorn (its parser, graceful shutdown and signal handling) and adds, per
connection, one deadline for the phase it is in:

- headers: from the connection (or the first byte of a later request) to the end of the
  headers, `HTTP_HEADER_TIMEOUT_S`; bytes trickling in do not move it;
- body: from the end of the headers to the end of the body, `HTTP_BODY_TIMEOUT_S`;
- idle: between requests on a kept-alive connection, `HTTP_KEEPALIVE_TIMEOUT_S`;

each checked by one sweep per server (never a timer per request), and, per server, a table
of open client connections capped below the descriptor limit. At
the cap a new connection evicts the one that has waited longest without being served (still
reading headers, or idle), so slow sockets give way to new callers and the process never
runs out of descriptors. Requests in flight are capped by `HTTP_LIMIT_CONCURRENCY`; past it
a caller gets an immediate 503, counted on requests, never on idle sockets.
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
        self._open: set[Guarded] = set()
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
            self._open.discard(victim)
            self.evicted += 1
            victim.evict()
        self._open.add(connection)
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
        self._open.discard(connection)
        self._waiting.pop(connection, None)

    def expire(self, now: float) -> None:
        """Close every connection whose phase is past its deadline."""
        for connection in list(self._open):
            connection.expire_if_due(now)


class GuardedServerState(ServerState):
    """uvicorn's per-server state plus our limits, connection table and deadline sweep:
    per server instance, so two servers in one process never share a slot.

    Deadlines are checked by one timer per server every `sweep_interval_s` while any
    connection is open, not by a timer per connection: a request then costs no timer
    operation beyond stock uvicorn's keep-alive one, and a deadline is met within one
    interval.
    """

    def __init__(self, limits: ConnectionLimits) -> None:
        super().__init__()
        self.limits = limits
        self.registry = ConnectionRegistry(limits.max_connections)
        self._sweep: asyncio.TimerHandle | None = None

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
    IDLE = enum.auto()  # keepalive_timeout_s between requests


_HEADERS, _BODY, _APP, _IDLE = Phase.HEADERS, Phase.BODY, Phase.APP, Phase.IDLE


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline per phase and a registered slot.

    Parser callbacks only note the phase and when it began (two attribute writes); the
    server's sweep closes connections past their deadline (see GuardedServerState).
    uvicorn's keep-alive timer still runs; our IDLE deadline also covers the case it misses
    (a body that finishes arriving after the response, which cancels uvicorn's timer).
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
        self._phase = Phase.HEADERS
        self._phase_since = 0.0
        self._request_bytes = False  # some of the current request's bytes have arrived

    # --- connection -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self._registry.admit(self):
            # Every slot is serving a request: say so at once rather than hold a descriptor.
            self.connections.discard(self)
            transport.write(_BUSY)
            transport.close()
            return
        self._enter(Phase.HEADERS)
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

    # --- parser callbacks: note the phase ---------------------------------------------------
    # These run for every request, so they are written flat: no helper calls, no super()
    # objects, module-level phase constants (each of those costs a fraction of a microsecond).
    def on_message_begin(self) -> None:
        HttpToolsProtocol.on_message_begin(self)
        self._request_bytes = True
        if self._phase is not _HEADERS:
            self._phase = _HEADERS
            self._phase_since = self.loop.time()

    def on_headers_complete(self) -> None:
        self._request_bytes = False
        self._phase = _BODY
        self._phase_since = self.loop.time()
        self._registry.serving(self)
        # uvicorn's own check counts open connections, which slow sockets inflate; ours
        # counts requests in flight. 0 makes uvicorn's check answer 503, None lets it pass.
        self.limit_concurrency = 0 if len(self.tasks) >= self._limits.limit_concurrency else None
        HttpToolsProtocol.on_headers_complete(self)

    def on_message_complete(self) -> None:
        HttpToolsProtocol.on_message_complete(self)
        if self._phase is _BODY:
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                self._phase = _APP  # no deadline of ours: no timestamp needed
            else:
                self._phase = _IDLE
                self._phase_since = self.loop.time()

    def on_response_complete(self) -> None:
        HttpToolsProtocol.on_response_complete(self)
        cycle = self.cycle
        if self.transport.is_closing() or (cycle is not None and not cycle.response_complete):
            return  # closed, or a pipelined request has just started
        self._registry.idle(self)
        if self._phase is _APP:
            self._phase = _IDLE
            self._phase_since = self.loop.time()
        # BODY (answered before the body was read) and HEADERS (the next request is on
        # its way) keep their deadlines.

    # --- deadlines ---------------------------------------------------------------------------
    def _serving(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _enter(self, phase: Phase) -> None:
        self._phase = phase
        self._phase_since = self.loop.time()

    def expire_if_due(self, now: float) -> None:
        phase = self._phase
        if phase is Phase.HEADERS:
            timeout = self._limits.header_timeout_s
        elif phase is Phase.BODY:
            timeout = self._limits.body_timeout_s
        elif phase is Phase.IDLE:
            timeout = self._limits.keepalive_timeout_s
        else:
            return  # the app has the request
        if now - self._phase_since < timeout or self.transport.is_closing():
            return
        if phase is Phase.HEADERS and self._request_bytes and not self._serving():
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


def run_server(app: Any, *, host: str, port: int, limits: ConnectionLimits, log_level: str) -> int:
    """Serve `app` until a signal, as `uvicorn.run` would, on the guarded protocol.

    uvicorn's `limit_concurrency` stays unused (the protocol counts requests instead);
    graceful shutdown waits up to 30 s for requests in flight, as before."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level.lower(),
        access_log=False,
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
    server = GuardedServer(config, limits)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    # uvicorn.run exits with 3 when the server never started (a port in use, a failed
    # lifespan); say the same.
    return 0 if server.started else STARTUP_FAILURE
