"""Histograms on the request path, counted in this process and exported by a collector on
the app's Prometheus registry.

The OpenTelemetry SDK's `Histogram.record` costs 5 to 9 us a call (it hashes the attribute
dict on every call, under a lock); a request records five or six distributions, which made
them the largest share of the gateway's own cost per request after the HTTP stack. Here a
record is one dict lookup on a tuple of label values, one bisect and three additions, on the
event loop's one thread (no lock). The series exported are the ones the OpenTelemetry
Prometheus exporter wrote for the same instruments (`<name>_bucket{le}`, `_sum`, `_count`,
label names sorted, a label a sample does not have written empty), so rules, dashboards and
tests read the same names. Counters stay on OpenTelemetry (`app.core.telemetry`, `Tally`).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

# Bounded: a histogram's label values come from small known sets (routes, providers, models
# folded to "other"); a flood of new combinations stops adding series instead of growing.
MAX_SERIES = 4096


class _Series:
    """One combination of label values: counts per bucket (the last is +Inf), and the sum."""

    __slots__ = ("counts", "total")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * (buckets + 1)
        self.total = 0.0


class LocalHistogram(Collector):
    """One histogram: `record(value, labels)` with `labels` in the order of `labelnames`."""

    def __init__(
        self,
        name: str,
        description: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.name = name
        self.description = description
        self.labelnames = tuple(labelnames)
        self.buckets = tuple(buckets)
        self._bounds = tuple(repr(float(b)) for b in self.buckets)
        self._series: dict[tuple[str, ...], _Series] = {}
        if registry is not None:
            registry.register(self)

    def record(self, value: float, labels: tuple[str, ...] = ()) -> None:
        series = self._series.get(labels)
        if series is None:
            if len(self._series) >= MAX_SERIES:
                return
            series = self._series[labels] = _Series(len(self.buckets))
        series.counts[bisect_left(self.buckets, value)] += 1
        series.total += value

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.description, labels=self.labelnames)
        for labels, series in list(self._series.items()):
            running = 0
            points: list[tuple[str, float]] = []
            for bound, count in zip(self._bounds, series.counts, strict=False):
                running += count
                points.append((bound, running))
            points.append(("+Inf", running + series.counts[-1]))
            family.add_metric(list(labels), points, series.total)
        yield family

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.description, labels=self.labelnames)
