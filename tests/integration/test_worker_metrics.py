"""Every worker's metrics in one scrape (app.core.worker_metrics), with real loopback
listeners: each family once, each series labelled with its worker, sums preserved, and a
worker that does not answer shown by `gateway_worker_up` 0 instead of failing the scrape."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.core.telemetry import Telemetry
from app.core.worker_metrics import _Families, merge
from app.modules.ai.metrics import AIMetrics
from tests.support.live import free_port_pair


def _served(telemetry: Telemetry, count: int, provider: str = "groq") -> None:
    metrics = AIMetrics(telemetry, frozenset({"m"}))
    for _ in range(count):
        metrics.attempt(provider, "m", "success", 0.1)


def _values(text: str, name: str) -> dict[str, float]:
    return {
        sample.labels.get("worker", "-"): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


@pytest.fixture
async def two_workers() -> AsyncIterator[tuple[Telemetry, Telemetry]]:
    base = free_port_pair()
    first, second = Telemetry(), Telemetry()
    await first.serve_workers(index=0, workers=2, port_base=base)
    await second.serve_workers(index=1, workers=2, port_base=base)
    yield first, second
    await first.aclose()
    await second.aclose()


async def test_either_worker_answers_with_both_workers_series(
    two_workers: tuple[Telemetry, Telemetry],
) -> None:
    first, second = two_workers
    _served(first, 3)
    _served(second, 4)
    for telemetry in (first, second):
        body, content_type = await telemetry.render_all("text/plain")
        text = body.decode()
        assert content_type.startswith("text/plain")
        assert _values(text, "ai_provider_requests_total") == {"0": 3.0, "1": 4.0}
        assert _values(text, "gateway_worker_up") == {"0": 1.0, "1": 1.0}
        assert text.count("# TYPE ai_provider_requests_total counter") == 1
        histogram = _values(text, "ai_provider_latency_seconds_count")
        assert histogram == {"0": 3.0, "1": 4.0}


async def test_a_worker_that_does_not_answer_is_reported_not_fatal() -> None:
    base = free_port_pair()
    alone = Telemetry()
    await alone.serve_workers(index=0, workers=2, port_base=base)  # worker 1 never started
    try:
        _served(alone, 2)
        started = time.monotonic()
        body, _ = await alone.render_all(None)
        assert time.monotonic() - started < 2.5  # refused at once on loopback
        text = body.decode()
        assert _values(text, "gateway_worker_up") == {"0": 1.0, "1": 0.0}
        assert _values(text, "ai_provider_requests_total") == {"0": 2.0}
    finally:
        await alone.aclose()


async def test_one_worker_keeps_the_plain_exposition() -> None:
    telemetry = Telemetry()
    _served(telemetry, 1)
    body, _ = await telemetry.render_all(None)
    assert _values(body.decode(), "ai_provider_requests_total") == {"-": 1.0}
    assert "gateway_worker_up" not in body.decode()
    telemetry.shutdown()


def test_unparseable_text_from_a_worker_is_reported_and_left_out() -> None:
    registry = CollectorRegistry()
    Counter("served", "served requests", registry=registry).inc(5)
    text = generate_latest(registry).decode()
    families = {f.name: f for f in merge([(0, text), (1, "this is not {an exposition")])}
    assert [
        (s.labels, s.value) for s in families["served"].samples if s.name == "served_total"
    ] == [({"worker": "0"}, 5.0)]
    assert [(s.labels["worker"], s.value) for s in families["gateway_worker_up"].samples] == [
        ("0", 1.0),
        ("1", 0.0),
    ]


@given(
    values=st.lists(
        st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12),
        min_size=1,
        max_size=5,
        unique=True,
    ),
    counts=st.lists(st.integers(min_value=0, max_value=10**6), min_size=2, max_size=2),
)
def test_label_values_and_sums_survive_the_merge(values: list[str], counts: list[int]) -> None:
    """Whatever a label value holds (quotes, backslashes, newlines, any script), the merged
    exposition parses back to the same series, and the sum over workers is the sum."""
    texts = []
    for index, count in enumerate(counts):
        registry = CollectorRegistry()
        counter = Counter("served", "served", ["model"], registry=registry)
        for value in values:
            counter.labels(model=value).inc(count)
        texts.append((index, generate_latest(registry).decode()))
    merged = CollectorRegistry(auto_describe=False)
    merged.register(_Families(merge(texts)))
    parsed = [
        sample
        for family in text_string_to_metric_families(generate_latest(merged).decode())
        for sample in family.samples
        if sample.name == "served_total"
    ]
    assert {(s.labels["model"], s.labels["worker"]) for s in parsed} == {
        (value, str(index)) for value in values for index in range(2)
    }
    assert sum(s.value for s in parsed) == len(values) * sum(counts)
