"""A fault-injecting TCP proxy: the network between the gateway and one upstream.

The sandbox can misbehave at the HTTP level (status codes, hangs, bad bodies), but some faults
live below HTTP: a connection refused because nothing listens, a reset in the middle of a
response, a link that swallows packets, a slow or thin pipe. This proxy sits on 127.0.0.1
between the service and the sandbox and injects those, so no chaos test ever patches the
gateway's own classes.

It runs its own event loop in a daemon thread, so its timing does not depend on the test's
loop being free, and its faults are switched at runtime with `set(...)` / `clear()`.

HTTP/1.1 without pipelining is assumed (what the gateway's aiohttp pool speaks): a chunk from
the client after a response has started is the next request on a keep-alive connection. Each
request takes the faults in force when it arrives, so switching modes never changes a request
already on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

READ_SIZE = 64 * 1024
# The bandwidth limit is applied in slices this many times a second.
BANDWIDTH_TICKS_PER_S = 20


@dataclass(frozen=True, slots=True)
class Faults:
    """What the proxy does to the requests that arrive while these are in force.

    At most one of the connection faults (refuse, blackhole, reset_on_request,
    reset_mid_response, truncate_response) makes sense at a time; delays combine with them.
    """

    # Listener closed: a connect() gets ECONNREFUSED (RST to the SYN), like a dead process.
    refuse: bool = False
    # Accept and read, never forward, never answer: a firewall dropping the traffic.
    blackhole: bool = False
    # RST as soon as a request arrives, before anything reaches the upstream.
    reset_on_request: bool = False
    # Forward the request, send the headers and half the body, then RST.
    reset_mid_response: bool = False
    # Forward the request, send the headers and half the body, then close cleanly (FIN):
    # a body shorter than its Content-Length.
    truncate_response: bool = False
    # Added one-way latency on every chunk, both directions.
    latency_s: float = 0.0
    # Delay before the first byte of each response (a slow upstream or a long queue).
    first_byte_delay_s: float = 0.0
    # Cap on response bytes per second (a thin or congested link); None is unlimited.
    bandwidth_bps: int | None = None


@dataclass(slots=True)
class ProxyStats:
    """What the proxy saw; `swallowed` requests never reached the upstream."""

    connections: int = 0
    requests: Counter[str] = field(default_factory=Counter)  # by HTTP method
    forwarded: Counter[str] = field(default_factory=Counter)
    swallowed: Counter[str] = field(default_factory=Counter)
    cut: int = 0  # responses reset or truncated mid-body

    def snapshot(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "requests": dict(self.requests),
            "forwarded": dict(self.forwarded),
            "swallowed": dict(self.swallowed),
            "cut": self.cut,
        }


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0) instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _method(chunk: bytes) -> str:
    head = chunk.split(b" ", 1)[0]
    return head.decode("ascii", "replace") if head.isalpha() and head.isupper() else "?"


class _Connection:
    """One client connection and, once needed, its connection to the upstream."""

    def __init__(
        self, proxy: FaultProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ):
        self.proxy = proxy
        self.reader = reader
        self.writer = writer
        self.up_reader: asyncio.StreamReader | None = None
        self.up_writer: asyncio.StreamWriter | None = None
        self.faults = proxy.faults
        self.responded = True  # so the first client chunk starts a request
        self.swallowing = False
        self.pump: asyncio.Task[None] | None = None

    def kill(self) -> None:
        _rst(self.writer)
        if self.up_writer is not None:
            self.up_writer.transport.abort()

    async def run(self) -> None:
        try:
            while data := await self.reader.read(READ_SIZE):
                if self.responded:
                    await self._new_request(data)
                    if self.writer.transport.is_closing():
                        return
                    continue
                await self._forward(data)
        except (ConnectionError, OSError):
            pass
        finally:
            # The client left (EOF or error): nothing is waiting for the rest of a response.
            if self.pump is not None and not self.pump.done():
                self.pump.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                    await self.pump
            self._close()

    async def _new_request(self, data: bytes) -> None:
        self.responded = False
        self.faults = faults = self.proxy.faults
        stats = self.proxy.stats
        method = _method(data)
        stats.requests[method] += 1
        if self.swallowing or faults.blackhole:
            self.swallowing = True
            stats.swallowed[method] += 1
            return
        if faults.reset_on_request:
            stats.swallowed[method] += 1
            self.kill()
            return
        stats.forwarded[method] += 1
        await self._forward(data)

    async def _forward(self, data: bytes) -> None:
        if self.swallowing:
            return
        if self.up_writer is None:
            self.up_reader, self.up_writer = await asyncio.open_connection(
                self.proxy.upstream_host, self.proxy.upstream_port
            )
            self.pump = asyncio.create_task(self._pump_back())
        if self.faults.latency_s:
            await asyncio.sleep(self.faults.latency_s)
        self.up_writer.write(data)
        await self.up_writer.drain()

    async def _pump_back(self) -> None:
        """Upstream to client, one response at a time, applying the request's faults."""
        assert self.up_reader is not None
        pending = b""
        try:
            while True:
                chunk = await self.up_reader.read(READ_SIZE)
                if not chunk:
                    if pending:
                        await self._write(pending)
                    break
                faults = self.faults
                starting = not self.responded
                if starting and (faults.reset_mid_response or faults.truncate_response):
                    pending += chunk
                    cut = _cut_point(pending)
                    if cut is None:
                        continue  # wait for the headers and some of the body
                    await self._write(pending[:cut])
                    self.proxy.stats.cut += 1
                    if faults.reset_mid_response:
                        self.kill()
                    else:
                        self.writer.close()
                        if self.up_writer is not None:
                            self.up_writer.close()
                    return
                if starting:
                    self.responded = True
                    if faults.first_byte_delay_s:
                        await asyncio.sleep(faults.first_byte_delay_s)
                await self._write(chunk)
        except (ConnectionError, OSError):
            pass
        self._close()

    async def _write(self, data: bytes) -> None:
        faults = self.faults
        if faults.latency_s:
            await asyncio.sleep(faults.latency_s)
        if not faults.bandwidth_bps:
            self.writer.write(data)
            await self.writer.drain()
            return
        step = max(1, faults.bandwidth_bps // BANDWIDTH_TICKS_PER_S)
        for start in range(0, len(data), step):
            self.writer.write(data[start : start + step])
            await self.writer.drain()
            await asyncio.sleep(1 / BANDWIDTH_TICKS_PER_S)

    def _close(self) -> None:
        if not self.writer.transport.is_closing():
            self.writer.close()
        if self.up_writer is not None and not self.up_writer.transport.is_closing():
            self.up_writer.close()


def _cut_point(buffer: bytes) -> int | None:
    """Where to cut a response: after the headers and half of the body seen so far."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    body_start = end + 4
    body = len(buffer) - body_start
    if body < 2:
        return None
    return body_start + body // 2


class FaultProxy:
    """`127.0.0.1:port` -> `upstream_host:upstream_port`, with switchable faults."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.port = 0
        self.faults = Faults()
        self.stats = ProxyStats()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fault-proxy", daemon=True
        )
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()

    # -- control, from any thread ----------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def set(self, **changes: Any) -> None:
        """Switch faults now (unnamed fields keep their value); see `Faults`."""
        self._call(self._apply(replace(self.faults, **changes)))

    def clear(self) -> None:
        self._call(self._apply(Faults()))

    def snapshot(self) -> dict[str, Any]:
        return self.stats.snapshot()

    def stop(self) -> None:
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    # -- on the proxy's loop ---------------------------------------------------------------

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _unlisten(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for connection in list(self._connections):
            connection.kill()  # a refused upstream is a dead process: its connections die too

    async def _apply(self, faults: Faults) -> None:
        was_refusing = self.faults.refuse
        self.faults = faults
        if faults.refuse and not was_refusing:
            await self._unlisten()
        elif was_refusing and not faults.refuse:
            await self._listen()

    async def _shutdown(self) -> None:
        await self._unlisten()
        # Killed connections end on their own; cancel whatever still waits (a slow pump).
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if tasks:
            _, stragglers = await asyncio.wait(tasks, timeout=1)
            for task in stragglers:
                task.cancel()
            await asyncio.gather(*stragglers, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        connection = _Connection(self, reader, writer)
        self._connections.add(connection)
        try:
            await connection.run()
        except asyncio.CancelledError:
            pass  # the proxy is stopping; asyncio's stream callback must not see this
        finally:
            self._connections.discard(connection)
