"""A slowloris attacker, run as its own process: `python -m tests.support.slowloris`.

It keeps `--connections` sockets open to 127.0.0.1:`--port`, each sending one more header
line every `--interval` seconds and never finishing its request, and recreates a socket
the server closed on its next tick (as slowloris.py does). After `--duration` seconds it
prints one JSON line saying how the server treated its sockets.

A process of its own, because it needs more descriptors than the server it attacks and
raises its own limit for that; the test's event loop stays free for the probes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from dataclasses import dataclass, field

HOST = "127.0.0.1"


@dataclass
class Tally:
    """What the attack saw; lifetimes are in seconds from connect to the server's close."""

    started: float = field(default_factory=time.monotonic)
    connected: int = 0
    connect_failures: int = 0
    closed_by_server: int = 0
    lifetimes: list[float] = field(default_factory=list)
    ages_at_end: list[float] = field(default_factory=list)

    def report(self) -> dict[str, object]:
        return {
            "connected": self.connected,
            "connect_failures": self.connect_failures,
            "closed_by_server": self.closed_by_server,
            "min_lifetime_s": round(min(self.lifetimes, default=0.0), 3),
            "max_lifetime_s": round(max(self.lifetimes, default=0.0), 3),
            "open_at_end": len(self.ages_at_end),
            "max_age_at_end_s": round(max(self.ages_at_end, default=0.0), 3),
        }


def raise_own_descriptor_limit(wanted: int) -> None:
    """Up to the hard limit: the attacker must be able to hold more sockets than its target."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < ceiling:
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True when the server closed (EOF or reset) within `seconds`; anything it says is
    read and dropped (a 408 before the close is fine)."""
    deadline = time.monotonic() + seconds
    try:
        while (left := deadline - time.monotonic()) > 0:
            async with asyncio.timeout(left):
                if not await reader.read(4096):
                    return True
    except TimeoutError:
        return False
    except OSError:
        return True
    return False


async def one_socket(index: int, port: int, interval: float, stop_at: float, tally: Tally) -> None:
    """One attacker slot: connect, trickle headers, and reconnect on the tick after a close."""
    line = 0
    while time.monotonic() < stop_at:
        try:
            async with asyncio.timeout(2.0):
                reader, writer = await asyncio.open_connection(HOST, port)
        except (OSError, TimeoutError):
            tally.connect_failures += 1
            await asyncio.sleep(min(interval, max(0.0, stop_at - time.monotonic())))
            continue
        tally.connected += 1
        opened = time.monotonic()
        try:
            writer.write(f"GET /health/live?slot={index} HTTP/1.1\r\nHost: {HOST}\r\n".encode())
            while True:
                left = stop_at - time.monotonic()
                if left <= 0:
                    tally.ages_at_end.append(time.monotonic() - opened)
                    break
                if await _closed_within(reader, min(interval, left)):
                    tally.closed_by_server += 1
                    tally.lifetimes.append(time.monotonic() - opened)
                    # The next tick recreates the socket, as the real tool does.
                    await asyncio.sleep(min(interval, max(0.0, stop_at - time.monotonic())))
                    break
                line += 1
                writer.write(f"X-Slow-{line}: {index}\r\n".encode())
        except OSError:
            tally.closed_by_server += 1
            tally.lifetimes.append(time.monotonic() - opened)
        finally:
            writer.transport.abort()


async def attack(port: int, connections: int, interval: float, duration: float) -> Tally:
    tally = Tally()
    stop_at = tally.started + duration
    # Spread the first connects over one interval, as a steady attacker would.
    async with asyncio.TaskGroup() as group:
        for index in range(connections):
            group.create_task(one_socket(index, port, interval, stop_at, tally))
            if index % 50 == 49:
                await asyncio.sleep(interval / max(1, connections // 50))
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=400)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between lines")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of attack")
    args = parser.parse_args()
    raise_own_descriptor_limit(args.connections + 64)
    tally = asyncio.run(attack(args.port, args.connections, args.interval, args.duration))
    print(json.dumps(tally.report()), flush=True)


if __name__ == "__main__":
    main()
