"""Metrics of every worker process in one scrape.

With `serve --workers N` the workers share the service's listening socket, so a scrape of
`/metrics` reaches whichever worker the kernel hands the connection to, and each worker's
registry holds only its own counters: a scrape would see 1/N of the traffic, a different
1/N each time. The mechanism chosen here (README, "Metrics with several workers"):

- worker i also serves its own registry on loopback, `127.0.0.1:METRICS_PORT_BASE + i`
  (plain HTTP, any path), and nothing else;
- `/metrics` on the service port, in whichever worker answers, fetches every other worker's
  registry over loopback, adds a `worker="i"` label to each series (so every worker's counter
  stays its own monotonic series: a restarted worker is a counter reset Prometheus already
  handles) and returns one exposition; `gateway_worker_up{worker}` says whose metrics are in
  it (0: that worker did not answer within `FETCH_TIMEOUT_S`, its series are missing).

Prometheus keeps one target per machine, as with one worker, and `sum()` over the `worker`
label is the machine's total. Rejected: prometheus_client's multiprocess mode (it aggregates
only prometheus_client's own metric classes through files; the OpenTelemetry exporter's
collector is invisible to it), and per-worker scrape targets (Prometheus would need to know
N and the ports). Without several workers none of this runs and /metrics is as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

log = logging.getLogger("app.metrics")

# How long /metrics waits for another worker's registry.
FETCH_TIMEOUT_S = 2.0
# A worker's registry is a few hundred kB at most; more is not a registry.
MAX_BODY_BYTES = 32 * 1024 * 1024
# The request line and headers of a loopback metrics request.
MAX_REQUEST_BYTES = 8192
WORKER_UP = "gateway_worker_up"


class WorkerMetrics:
    """This worker's loopback metrics listener, and the merge of every worker's registry."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        index: int,
        workers: int,
        port_base: int,
        host: str = "127.0.0.1",
        fetch_timeout_s: float = FETCH_TIMEOUT_S,
    ) -> None:
        self.index = index
        self.workers = workers
        self._registry = registry
        self._port_base = port_base
        self._host = host
        self._timeout_s = fetch_timeout_s
        self._server: asyncio.Server | None = None

    def port(self, index: int) -> int:
        return self._port_base + index

    async def start(self) -> None:
        """Listen on loopback; a port in use fails the worker's start (loudly, at once)."""
        self._server = await asyncio.start_server(
            self._answer, self._host, self.port(self.index), reuse_address=True
        )

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Any request gets this worker's registry (text format 0.0.4), then the close."""
        try:
            async with asyncio.timeout(self._timeout_s):
                await reader.readuntil(b"\r\n\r\n")
            body = generate_latest(self._registry)
            writer.write(
                b"HTTP/1.0 200 OK\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body) + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _fetch(self, index: int) -> str | None:
        """Worker `index`'s exposition, or None if it did not answer in time."""
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self._timeout_s):
                reader, writer = await asyncio.open_connection(self._host, self.port(index))
                writer.write(b"GET /metrics HTTP/1.0\r\nhost: 127.0.0.1\r\n\r\n")
                await writer.drain()
                raw = await reader.read(MAX_BODY_BYTES + MAX_REQUEST_BYTES)
        except (TimeoutError, OSError) as exc:
            log.warning("metrics of worker %d unavailable: %s", index, type(exc).__name__)
            return None
        finally:
            if writer is not None:
                writer.close()
        head, sep, body = raw.partition(b"\r\n\r\n")
        if not sep or not head.startswith(b"HTTP/1.0 200"):
            log.warning("metrics of worker %d unreadable", index)
            return None
        return body.decode("utf-8", errors="replace")

    async def collect(self) -> list[Metric]:
        """Every worker's families, each series labelled with its worker."""
        others = [i for i in range(self.workers) if i != self.index]
        fetched = await asyncio.gather(*(self._fetch(i) for i in others))
        texts: dict[int, str | None] = dict(zip(others, fetched, strict=True))
        texts[self.index] = generate_latest(self._registry).decode()
        return merge(sorted(texts.items()))

    async def render(self, accept: str | None) -> tuple[bytes, str]:
        """The merged exposition and its content type, negotiated from the Accept header."""
        snapshot = CollectorRegistry(auto_describe=False)
        snapshot.register(_Families(await self.collect()))
        encoder, content_type = choose_encoder(accept or "")
        return encoder(snapshot), content_type


def merge(texts: Iterable[tuple[int, str | None]]) -> list[Metric]:
    """One family per name across workers (an exposition may name a family only once), each
    sample with a `worker` label; `gateway_worker_up` per worker (0: no text from it)."""
    families: dict[str, Metric] = {}
    up = Metric(
        WORKER_UP,
        "1 when this scrape holds the worker's metrics, 0 when it did not answer",
        "gauge",
    )
    for index, text in texts:
        worker = str(index)
        up.add_sample(WORKER_UP, {"worker": worker}, 0.0 if text is None else 1.0)
        if text is None:
            continue
        try:
            parsed = list(text_string_to_metric_families(text))
        except ValueError:
            log.warning("metrics of worker %d could not be parsed", index)
            up.samples[-1] = up.samples[-1]._replace(value=0.0)
            continue
        for family in parsed:
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            for sample in family.samples:
                merged.samples.append(sample._replace(labels={**sample.labels, "worker": worker}))
    return [*families.values(), up]


class _Families(Collector):
    """A fixed set of families, for the encoders (which read a registry)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families
