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

and, per server, a table of open client connections capped below the descriptor limit. At
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
    )


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


class Evictable(Protocol):
    """What the registry needs from a connection: a way to close it for a newcomer."""

    def evict(self) -> None: ...


class ConnectionRegistry:
    """One server's open client connections, and which of them wait to be served.

    `waiting` is ordered by when each connection last started waiting (connected, or
    finished a response), so the first one is the one that has held a slot longest while
    giving the server nothing to do. A connection serving a request is never evicted.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._open: set[Evictable] = set()
        self._waiting: OrderedDict[Evictable, None] = OrderedDict()
        self.evicted = 0

    @property
    def open(self) -> int:
        return len(self._open)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def admit(self, connection: Evictable) -> bool:
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

    def serving(self, connection: Evictable) -> None:
        """The connection's request reached the app: it is no longer evictable."""
        self._waiting.pop(connection, None)

    def idle(self, connection: Evictable) -> None:
        """The connection has nothing in flight again; it joins the back of the queue."""
        if connection in self._open and connection not in self._waiting:
            self._waiting[connection] = None

    def forget(self, connection: Evictable) -> None:
        self._open.discard(connection)
        self._waiting.pop(connection, None)


class GuardedServerState(ServerState):
    """uvicorn's per-server state plus our limits and connection table: per server
    instance, so two servers in one process never share a slot."""

    def __init__(self, limits: ConnectionLimits) -> None:
        super().__init__()
        self.limits = limits
        self.registry = ConnectionRegistry(limits.max_connections)


class Phase(enum.Enum):
    """What the connection is waiting for, and so which deadline applies."""

    HEADERS = enum.auto()  # header_timeout_s from the connection or the request's first byte
    BODY = enum.auto()  # body_timeout_s from the end of the headers
    APP = enum.auto()  # the app has the whole request: its own deadlines apply
    IDLE = enum.auto()  # keepalive_timeout_s between requests


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline per phase and a registered slot.

    Parser callbacks only note the phase and when it began; the timer is set once per
    `data_received` (or response), so a request costs no more timer operations than stock
    uvicorn's keep-alive timer, which this one replaces.
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
        self._limits = server_state.limits
        self._registry = server_state.registry
        self._phase = Phase.HEADERS
        self._phase_since = 0.0
        # Bumped on every phase change; the timer is reset when it no longer matches.
        self._epoch = 0
        self._deadline_epoch = -1
        self._request_bytes = False  # some of the current request's bytes have arrived
        self._deadline: asyncio.TimerHandle | None = None

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
        self._sync_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        self._registry.forget(self)
        super().connection_lost(exc)

    def evict(self) -> None:
        """Closed to make room for a new connection (see ConnectionRegistry.admit)."""
        self._cancel_deadline()
        if not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._deadline_epoch != self._epoch:
            self._sync_deadline()

    def handle_websocket_upgrade(self) -> None:
        # The socket changes hands: the websocket protocol owns its timers from here on.
        self._cancel_deadline()
        self._registry.forget(self)
        super().handle_websocket_upgrade()

    # --- parser callbacks: note the phase, set no timer ------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_bytes = True
        if self._phase is not Phase.HEADERS:
            self._enter(Phase.HEADERS)

    def on_headers_complete(self) -> None:
        self._request_bytes = False
        self._enter(Phase.BODY)
        self._registry.serving(self)
        # uvicorn's own check counts open connections, which slow sockets inflate; ours
        # counts requests in flight. 0 makes uvicorn's check answer 503, None lets it pass.
        self.limit_concurrency = 0 if len(self.tasks) >= self._limits.limit_concurrency else None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self._phase is Phase.BODY:
            self._enter(Phase.APP if self._serving() else Phase.IDLE)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing() or self._serving():
            return  # closed, or a pipelined request has just started
        self._unset_keepalive_if_required()  # our IDLE deadline replaces uvicorn's timer
        self._registry.idle(self)
        if self._phase is Phase.APP:
            self._enter(Phase.IDLE)
        # BODY (answered before the body was read) and HEADERS (the next request is on
        # its way) keep their deadlines.
        self._sync_deadline()

    # --- deadlines ---------------------------------------------------------------------------
    def _serving(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _enter(self, phase: Phase) -> None:
        self._phase = phase
        self._phase_since = self.loop.time()
        self._epoch += 1

    def _timeout_for(self, phase: Phase) -> float | None:
        if phase is Phase.HEADERS:
            return self._limits.header_timeout_s
        if phase is Phase.BODY:
            return self._limits.body_timeout_s
        if phase is Phase.IDLE:
            return self._limits.keepalive_timeout_s
        return None

    def _sync_deadline(self) -> None:
        """Set the timer for the current phase, measured from when the phase began."""
        self._cancel_deadline()
        if self.transport is None or self.transport.is_closing():
            return
        timeout = self._timeout_for(self._phase)
        self._deadline_epoch = self._epoch
        if timeout is not None:
            self._deadline = self.loop.call_at(self._phase_since + timeout, self._expired)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._deadline_epoch = -1

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._phase is Phase.HEADERS and self._request_bytes and not self._serving():
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

    uvicorn's `limit_concurrency` and keep-alive timer stay unused (the protocol owns both);
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
