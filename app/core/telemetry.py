"""Per-app OpenTelemetry metrics, exposed in Prometheus text format.

One CollectorRegistry and one MeterProvider per app, never the process-wide globals: two
apps in one process (as tests make) must not share or double-print a series.

With several worker processes (`serve --workers N`), `workers` merges every worker's
registry into one scrape (app.core.worker_metrics); with one, it is None and the scrape is
this registry alone.
"""

from __future__ import annotations

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, Gauge, GCCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder

from app.core.version import build_info
from app.core.worker_metrics import WorkerMetrics

# Seconds buckets for LLM calls: 10 ms to 60 s.
LLM_LATENCY_BUCKETS_S = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
)
# Seconds buckets for the gateway's own overhead: 50 µs to 1 s.
OVERHEAD_BUCKETS_S = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)
# Token counts per call.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)


class Telemetry:
    def __init__(self, service_name: str = "literature-ai-gateway") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._reader = PrometheusMetricReader(
            disable_target_info=True, scope_info_enabled=False, registry=self.registry
        )
        self.provider = MeterProvider(
            metric_readers=[self._reader],
            resource=Resource.create({"service.name": service_name}),
        )
        self.meter: Meter = self.provider.get_meter("app")
        self.workers: WorkerMetrics | None = None
        # The process itself (CPU seconds, resident memory, open descriptors, start time) and
        # Python's collector, from prometheus_client's own collectors: read at scrape time
        # only, nothing per request. They read /proc, so they are empty off Linux.
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        Gauge(
            "gateway_build_info",
            "The running build: always 1, labelled with its version and commit",
            ["version", "commit"],
            registry=self.registry,
        ).labels(version=build_info().version, commit=build_info().commit).set(1)

    async def serve_workers(self, *, index: int, workers: int, port_base: int) -> None:
        """Worker `index` of `workers`: serve this registry on loopback for the others, and
        merge theirs into every scrape (see app.core.worker_metrics)."""
        self.workers = WorkerMetrics(
            self.registry, index=index, workers=workers, port_base=port_base
        )
        await self.workers.start()

    async def render_all(self, accept: str | None) -> tuple[bytes, str]:
        """What /metrics answers: every worker's series, or this registry's alone."""
        if self.workers is None:
            return self.render(accept)
        return await self.workers.render(accept)

    async def aclose(self) -> None:
        if self.workers is not None:
            await self.workers.aclose()
        self.shutdown()

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition body and its content type, negotiated from the Accept header."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def shutdown(self) -> None:
        self.provider.shutdown()
