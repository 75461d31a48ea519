"""`python -m bench.http_protocol`: what the guarded protocol costs per request.

Feeds keep-alive GET requests straight into uvicorn's HttpToolsProtocol and into
app.core.server's GuardedHttpToolsProtocol, on a real uvloop loop, with a minimal ASGI app
and an in-memory transport, so the number is the protocol's own work per request (parse,
timers, table bookkeeping, response framing) without the app or the network. Rounds
alternate between the two so that noise from other processes hits both alike; the median
round and the best round (the least disturbed by other processes) are reported. End-to-end
numbers (wrk against `python -m app serve`) are in the README's section on slow clients.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import uvicorn
import uvloop
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.core.server import ConnectionLimits, GuardedHttpToolsProtocol, GuardedServer

REQUEST = b"GET /health/live HTTP/1.1\r\nHost: bench\r\n\r\n"


class MemoryTransport(asyncio.Transport):
    """Keeps nothing: the bytes written are only counted."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def app(scope: Any, receive: Any, send: Any) -> None:
    body = b'{"status":"ok"}'
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"15")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def one_round(guarded: bool, requests: int) -> float:
    """Seconds per request over `requests` keep-alive requests on one connection."""
    limits = ConnectionLimits(
        max_connections=1000,
        limit_concurrency=750,
        backlog=16,
        header_timeout_s=10.0,
        body_timeout_s=60.0,
        keepalive_timeout_s=5.0,
        sweep_interval_s=0.5,
    )
    protocol_class = GuardedHttpToolsProtocol if guarded else HttpToolsProtocol
    config = uvicorn.Config(app, http=protocol_class, log_config=None, access_log=False)
    config.load()
    server = GuardedServer(config, limits) if guarded else uvicorn.Server(config)
    protocol = protocol_class(config, server.server_state, {})
    protocol.connection_made(MemoryTransport())
    tasks = server.server_state.tasks
    started = time.perf_counter()
    for _ in range(requests):
        protocol.data_received(REQUEST)
        await next(iter(tasks))
    elapsed = time.perf_counter() - started
    protocol.connection_lost(None)
    return elapsed / requests


async def compare(rounds: int, requests: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"uvicorn": [], "guarded": []}
    await one_round(False, requests // 10)  # warm-up
    await one_round(True, requests // 10)
    for _ in range(rounds):
        results["uvicorn"].append(await one_round(False, requests))
        results["guarded"].append(await one_round(True, requests))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    results = uvloop.run(compare(args.rounds, args.requests))
    medians = {name: statistics.median(values) * 1e6 for name, values in results.items()}
    bests = {name: min(values) * 1e6 for name, values in results.items()}
    for name, values in results.items():
        spread = ", ".join(f"{v * 1e6:.2f}" for v in values)
        print(
            f"{name:8} median {medians[name]:6.2f} best {bests[name]:6.2f} us/request"
            f"  rounds: {spread}"
        )
    for label, numbers in (("median", medians), ("best", bests)):
        delta = numbers["guarded"] - numbers["uvicorn"]
        print(f"guarded - uvicorn ({label}): {delta:+.2f} us/request")


if __name__ == "__main__":
    main()
