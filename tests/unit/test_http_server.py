"""The guarded HTTP protocol and its connection table (app.core.server), without sockets.

The protocol runs on a fake event loop whose clock the test moves, and writes to a fake
transport; requests are parsed by the real httptools parser and answered by a real ASGI
callable, so every deadline is checked to the millisecond without sleeping.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from app.core.server import (
    BASE_RESERVE,
    DATABASE_RESERVE,
    ConnectionLimits,
    ConnectionRegistry,
    DescriptorBudgetError,
    GuardedHttpToolsProtocol,
    GuardedServer,
    connection_limits,
    reserved_descriptors,
)
from app.core.settings import GroqSettings, LiteratureSettings, Settings

HEADER_S, BODY_S, IDLE_S = 10.0, 30.0, 5.0
TICK = 0.1  # how often the server sweeps deadlines: each is met within one tick
GET = b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n"


# --- a fake loop with a clock the test moves -----------------------------------------------
class FakeHandle:
    def __init__(self, when: float, callback: Callable[..., None], args: tuple[Any, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeTask:
    def __init__(self, coro: Coroutine[Any, Any, None]) -> None:
        self.coro = coro
        self.callbacks: list[Callable[[FakeTask], None]] = []

    def add_done_callback(self, callback: Callable[[FakeTask], None]) -> None:
        self.callbacks.append(callback)


@dataclass
class FakeLoop:
    now: float = 1000.0
    timers: list[tuple[float, int, FakeHandle]] = field(default_factory=list)
    tasks: list[FakeTask] = field(default_factory=list)
    created: int = 0  # timers ever set
    _order: itertools.count[int] = field(default_factory=itertools.count)

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[..., None], *args: Any) -> FakeHandle:
        handle = FakeHandle(when, callback, args)
        heapq.heappush(self.timers, (when, next(self._order), handle))
        self.created += 1
        return handle

    def call_later(self, delay: float, callback: Callable[..., None], *args: Any) -> FakeHandle:
        return self.call_at(self.now + delay, callback, *args)

    def create_task(self, coro: Coroutine[Any, Any, None], **_: Any) -> FakeTask:
        task = FakeTask(coro)
        self.tasks.append(task)
        return task

    def run_tasks(self) -> None:
        """Run every pending ASGI task to its end (the test app never really waits)."""
        while self.tasks:
            task = self.tasks.pop(0)
            with pytest.raises(StopIteration):
                task.coro.send(None)
            for callback in task.callbacks:
                callback(task)

    def drop_tasks(self) -> None:
        """Close what the test left with the app, so no coroutine is left unawaited."""
        for task in self.tasks:
            task.coro.close()
        self.tasks.clear()

    def advance(self, seconds: float) -> None:
        """Move the clock, firing each timer at its own time (timers set meanwhile too)."""
        target = self.now + seconds
        while self.timers and self.timers[0][0] <= target:
            when, _, handle = heapq.heappop(self.timers)
            self.now = max(self.now, when)
            if not handle.cancelled:
                handle.callback(*handle.args)
        self.now = target


class FakeTransport:
    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False
        self.protocol: GuardedHttpToolsProtocol | None = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def write(self, data: bytes) -> None:
        assert not self.closed, "wrote after close"
        self.written += data

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.protocol is not None:
                self.protocol.connection_lost(None)

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def ok_app(scope: Any, receive: Any, send: Any) -> None:
    """Answers 200 once the whole body is in, like a handler that reads its JSON."""
    if scope["type"] != "http":
        return
    if scope["method"] == "POST" and scope["path"] != "/early":
        while (await receive()).get("more_body"):
            pass
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


def limits(max_connections: int = 100, limit_concurrency: int = 75) -> ConnectionLimits:
    return ConnectionLimits(
        max_connections=max_connections,
        limit_concurrency=limit_concurrency,
        backlog=16,
        header_timeout_s=HEADER_S,
        body_timeout_s=BODY_S,
        keepalive_timeout_s=IDLE_S,
        sweep_interval_s=TICK,
    )


class Harness:
    """One server (its own state) on a fake loop; `connect` opens a connection to it."""

    def __init__(self, server_limits: ConnectionLimits | None = None) -> None:
        self.loop = FakeLoop()
        self.config = uvicorn.Config(ok_app, http=GuardedHttpToolsProtocol, log_config=None)
        self.config.load()
        self.server = GuardedServer(self.config, server_limits or limits())

    def connect(self) -> tuple[GuardedHttpToolsProtocol, FakeTransport]:
        protocol = GuardedHttpToolsProtocol(
            self.config,
            self.server.server_state,
            {},
            _loop=self.loop,  # type: ignore[arg-type]
        )
        transport = FakeTransport()
        transport.protocol = protocol
        protocol.connection_made(transport)  # type: ignore[arg-type]
        return protocol, transport

    def send(self, protocol: GuardedHttpToolsProtocol, data: bytes) -> None:
        protocol.data_received(data)
        self.loop.run_tasks()


@pytest.fixture
def server() -> Iterator[Callable[..., Harness]]:
    """Harnesses for the test; requests left with the app are dropped at the end."""
    made: list[Harness] = []

    def make(server_limits: ConnectionLimits | None = None) -> Harness:
        made.append(Harness(server_limits))
        return made[-1]

    yield make
    for harness in made:
        harness.loop.drop_tasks()


# --- deadlines ----------------------------------------------------------------------------------
def closes_after(h: Harness, transport: FakeTransport, seconds: float) -> bool:
    """True when the connection is still open just before `seconds` from now and closed
    within two sweeps after (a phase is seen by the first sweep after it began)."""
    h.loop.advance(seconds - 0.01)
    if transport.closed:
        return False
    h.loop.advance(0.01 + 2 * TICK + 0.001)
    return transport.closed


def test_a_silent_connection_is_closed_at_the_header_deadline_without_a_word(
    server: Callable[..., Harness],
) -> None:
    h = server()
    _, transport = h.connect()
    assert closes_after(h, transport, HEADER_S)
    assert transport.written == b""
    assert h.server.registry.open == 0


def test_trickled_header_lines_do_not_move_the_header_deadline(
    server: Callable[..., Harness],
) -> None:
    h = server()
    protocol, transport = h.connect()
    h.send(protocol, b"GET /health/live HTTP/1.1\r\n")
    for line in range(9):
        h.loop.advance(1.0)
        h.send(protocol, f"X-Slow-{line}: x\r\n".encode())
    assert closes_after(h, transport, HEADER_S - 9.0)
    assert transport.written.startswith(b"HTTP/1.1 408 ")


def test_a_kept_alive_connection_is_closed_when_idle(server: Callable[..., Harness]) -> None:
    h = server()
    protocol, transport = h.connect()
    h.send(protocol, GET)
    assert transport.written.startswith(b"HTTP/1.1 200 ")
    assert closes_after(h, transport, IDLE_S)


def test_a_new_request_on_a_kept_alive_connection_gets_a_fresh_header_deadline(
    server: Callable[..., Harness],
) -> None:
    h = server()
    protocol, transport = h.connect()
    h.send(protocol, GET)
    h.loop.advance(IDLE_S - 0.5)
    h.send(protocol, b"GET /health/live HTTP/1.1\r\n")  # the next request starts...
    assert closes_after(h, transport, HEADER_S)  # ...and its header deadline counts from here
    assert transport.written.endswith(b"Request Timeout")


def test_a_body_that_ends_after_an_early_answer_still_leaves_an_idle_deadline(
    server: Callable[..., Harness],
) -> None:
    """Stock uvicorn arms keep-alive at the answer and drops it at the next byte of the
    body, so such a connection stayed open forever."""
    h = server()
    protocol, transport = h.connect()
    h.send(protocol, b"POST /early HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nab")
    assert transport.written.startswith(b"HTTP/1.1 200 ")
    h.loop.advance(1.0)
    h.send(protocol, b"cd")
    assert closes_after(h, transport, IDLE_S - 1.0)  # idle counts from the answer


def test_a_trickled_body_is_cut_at_the_body_deadline(server: Callable[..., Harness]) -> None:
    h = server()
    protocol, transport = h.connect()
    # The app waits for the body (its task is never run here) while it trickles in.
    protocol.data_received(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n")
    for _ in range(29):
        h.loop.advance(1.0)
        protocol.data_received(b" ")
    assert closes_after(h, transport, BODY_S - 29.0)


def test_a_request_with_the_app_has_no_deadline_of_ours(server: Callable[..., Harness]) -> None:
    h = server()
    protocol, transport = h.connect()
    protocol.data_received(GET)  # the ASGI task is not run: the app is still working
    h.loop.advance(3600)
    assert not transport.closed
    h.loop.run_tasks()
    assert transport.written.startswith(b"HTTP/1.1 200 ")


def test_requests_set_no_timer_of_ours(server: Callable[..., Harness]) -> None:
    """Deadlines cost a request no timer: only uvicorn's keep-alive one, as without us."""
    h = server()
    protocol, _ = h.connect()
    before = h.loop.created
    for _ in range(10):
        h.send(protocol, GET)
    assert h.loop.created - before == 10


def test_pipelined_requests_are_all_answered(server: Callable[..., Harness]) -> None:
    h = server()
    protocol, transport = h.connect()
    h.send(protocol, GET * 3)
    assert transport.written.count(b"HTTP/1.1 200 ") == 3
    assert not transport.closed


# --- the connection table ---------------------------------------------------------------------
def test_at_the_cap_a_new_connection_evicts_the_longest_waiting_one_never_one_being_served(
    server: Callable[..., Harness],
) -> None:
    h = server(limits(max_connections=3, limit_concurrency=2))
    _, first_transport = h.connect()  # the oldest, still silent
    second, second_transport = h.connect()
    h.send(second, GET)  # answered: waits again, behind the first, once a sweep sees it
    h.loop.advance(TICK)
    busy, busy_transport = h.connect()  # the newest of the three...
    busy.data_received(GET)  # ...but its request is with the app

    _, newcomer_transport = h.connect()
    assert first_transport.closed
    assert not second_transport.closed
    assert not busy_transport.closed
    assert not newcomer_transport.closed
    h.connect()
    assert second_transport.closed
    assert not busy_transport.closed
    h.connect()
    assert newcomer_transport.closed
    assert not busy_transport.closed
    assert h.server.registry.open == 3
    assert h.server.registry.evicted == 3


def test_connections_answered_since_the_last_sweep_are_still_evictable(
    server: Callable[..., Harness],
) -> None:
    """At the cap with no known waiting connection, a sweep runs before refusing."""
    h = server(limits(max_connections=2, limit_concurrency=2))
    transports = []
    for _ in range(2):
        protocol, transport = h.connect()
        h.send(protocol, GET)  # answered now; no sweep has seen it yet
        transports.append(transport)
    _, newcomer = h.connect()
    assert not newcomer.closed
    assert transports[0].closed
    assert not transports[1].closed


def test_a_kept_alive_connection_trickling_its_next_request_can_be_evicted(
    server: Callable[..., Harness],
) -> None:
    h = server(limits(max_connections=2, limit_concurrency=1))
    slow, slow_transport = h.connect()
    h.send(slow, GET)
    h.send(slow, b"GET /health/live HTTP/1.1\r\n")  # the next request, trickled
    h.loop.advance(TICK)
    busy, busy_transport = h.connect()
    busy.data_received(GET)  # with the app
    h.connect()
    assert slow_transport.closed
    assert not busy_transport.closed


def test_when_every_slot_is_serving_a_newcomer_gets_a_fast_503(
    server: Callable[..., Harness],
) -> None:
    h = server(limits(max_connections=2, limit_concurrency=2))
    for _ in range(2):
        protocol, _ = h.connect()
        protocol.data_received(GET)  # both in the app
    _, transport = h.connect()
    assert transport.closed
    assert transport.written.startswith(b"HTTP/1.1 503 ")
    assert h.server.registry.open == 2


def test_past_the_concurrency_limit_a_request_is_answered_503_whatever_the_idle_sockets(
    server: Callable[..., Harness],
) -> None:
    h = server(limits(max_connections=50, limit_concurrency=1))
    for _ in range(40):  # idle sockets do not count against the limit
        h.connect()
    busy, _ = h.connect()
    busy.data_received(GET)  # one request in flight
    late, late_transport = h.connect()
    h.send(late, GET)
    assert late_transport.written.startswith(b"HTTP/1.1 503 ")
    again, again_transport = h.connect()
    h.send(again, GET)  # the first request finished in the same turn: room again
    assert again_transport.written.startswith(b"HTTP/1.1 200 ")


def test_each_server_has_its_own_connection_table(server: Callable[..., Harness]) -> None:
    one, two = server(limits(max_connections=8)), server(limits(max_connections=8))
    for _ in range(5):
        one.connect()
    assert one.server.registry.open == 5
    assert two.server.registry.open == 0


def test_the_protocol_refuses_a_plain_uvicorn_server_state() -> None:
    config = uvicorn.Config(ok_app, http=GuardedHttpToolsProtocol, log_config=None)
    config.load()
    with pytest.raises(TypeError):
        GuardedHttpToolsProtocol(config, uvicorn.Server(config).server_state, {}, _loop=FakeLoop())  # type: ignore[arg-type]


# --- the registry as a state machine ---------------------------------------------------------
@dataclass(eq=False)
class Conn:
    name: int
    evicted: bool = False

    def evict(self) -> None:
        self.evicted = True

    def expire_if_due(self, now: float) -> None:
        pass


class RegistryMachine(RuleBasedStateMachine):
    """Any mix of connects, requests, answers and closes: the table never holds more than
    its capacity, never evicts a connection being served, and always evicts the one that has
    waited longest."""

    def __init__(self) -> None:
        super().__init__()
        self.capacity = 4
        self.registry = ConnectionRegistry(self.capacity)
        self.names = itertools.count()
        self.waiting: list[Conn] = []  # the model: oldest first
        self.serving: list[Conn] = []

    @rule()
    def connect(self) -> None:
        conn = Conn(next(self.names))
        full = len(self.waiting) + len(self.serving) >= self.capacity
        expected_victim = self.waiting[0] if full and self.waiting else None
        admitted = self.registry.admit(conn)
        if not full:
            assert admitted
        elif expected_victim is None:
            assert not admitted
            return
        else:
            assert admitted
            assert expected_victim.evicted
            self.waiting.remove(expected_victim)
        self.waiting.append(conn)

    @precondition(lambda self: self.waiting)
    @rule(data=st.data())
    def request(self, data: st.DataObject) -> None:
        conn = data.draw(st.sampled_from(self.waiting))
        self.registry.serving(conn)
        self.waiting.remove(conn)
        self.serving.append(conn)

    @precondition(lambda self: self.serving)
    @rule(data=st.data())
    def answer(self, data: st.DataObject) -> None:
        conn = data.draw(st.sampled_from(self.serving))
        self.registry.idle(conn)
        self.serving.remove(conn)
        self.waiting.append(conn)

    @precondition(lambda self: self.waiting or self.serving)
    @rule(data=st.data())
    def close(self, data: st.DataObject) -> None:
        conn = data.draw(st.sampled_from(self.waiting + self.serving))
        self.registry.forget(conn)
        (self.waiting if conn in self.waiting else self.serving).remove(conn)

    @invariant()
    def bounded_and_matching(self) -> None:
        assert self.registry.open == len(self.waiting) + len(self.serving) <= self.capacity
        assert self.registry.waiting == len(self.waiting)
        assert not any(conn.evicted for conn in self.serving + self.waiting)


TestRegistryMachine = RegistryMachine.TestCase
TestRegistryMachine.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)


# --- the descriptor budget ----------------------------------------------------------------------
def small_pools(**overrides: Any) -> Settings:
    return Settings(
        groq=GroqSettings(api_keys=["k"], max_connections=20),
        literature=LiteratureSettings(max_connections=10),
        **overrides,
    )


def test_the_reserve_counts_configured_pools_only() -> None:
    assert reserved_descriptors(small_pools()) == BASE_RESERVE + DATABASE_RESERVE + 20 + 10


@given(soft=st.integers(min_value=0, max_value=200_000), wanted=st.integers(8, 100_000))
def test_clients_backlog_and_reserve_always_fit_under_the_descriptor_limit(
    soft: int, wanted: int
) -> None:
    config = small_pools(http_max_connections=wanted)
    try:
        got = connection_limits(config, soft)
    except DescriptorBudgetError:
        assert soft - reserved_descriptors(config) < 8 + 16
        return
    assert got.max_connections + got.backlog + reserved_descriptors(config) <= soft
    assert 8 <= got.max_connections <= wanted
    assert 1 <= got.limit_concurrency < got.max_connections


def test_a_configured_concurrency_limit_only_lowers_the_default() -> None:
    assert connection_limits(small_pools(http_limit_concurrency=5), 10_000).limit_concurrency == 5
    big = connection_limits(
        small_pools(http_limit_concurrency=10**6, http_max_connections=100), 10_000
    )
    assert big.limit_concurrency == 75


def test_too_few_descriptors_is_a_configuration_error_naming_the_fix() -> None:
    with pytest.raises(DescriptorBudgetError, match="ulimit -n"):
        connection_limits(small_pools(), 130)
