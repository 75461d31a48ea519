"""app.core.histograms.LocalHistogram: the series Prometheus reads (cumulative buckets with
`le` inclusive, sum, count, labels in order), and a bound on how many series it keeps."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.core.histograms import MAX_SERIES, LocalHistogram

BUCKETS = (0.1, 0.5, 1.0)


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_buckets_are_cumulative_and_a_bound_is_inclusive() -> None:
    registry = CollectorRegistry()
    histogram = LocalHistogram("x_seconds", "x", ("provider",), BUCKETS, registry)
    for value in (0.05, 0.1, 0.3, 1.0, 7.0):
        histogram.record(value, ("groq",))
    got = _samples(registry)

    def bucket(le: str) -> float:
        return got[("x_seconds_bucket", (("le", le), ("provider", "groq")))]

    assert [bucket("0.1"), bucket("0.5"), bucket("1.0"), bucket("+Inf")] == [2, 3, 4, 5]
    assert got[("x_seconds_count", (("provider", "groq"),))] == 5
    assert got[("x_seconds_sum", (("provider", "groq"),))] == 0.05 + 0.1 + 0.3 + 1.0 + 7.0


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=50))
def test_counts_and_sum_match_what_was_recorded(values: list[float]) -> None:
    registry = CollectorRegistry()
    histogram = LocalHistogram("y", "y", (), BUCKETS, registry)
    for value in values:
        histogram.record(value)
    got = _samples(registry)
    if not values:
        assert not any(name.startswith("y_") for name, _ in got)
        return
    assert got[("y_count", ())] == len(values)
    assert got[("y_bucket", (("le", "0.5"),))] == sum(v <= 0.5 for v in values)


def test_new_label_combinations_stop_at_the_bound() -> None:
    histogram = LocalHistogram("z", "z", ("route",), BUCKETS)
    for i in range(MAX_SERIES + 10):
        histogram.record(0.2, (f"/r{i}",))
    assert len(next(iter(histogram.collect())).samples) == MAX_SERIES * (len(BUCKETS) + 3)
