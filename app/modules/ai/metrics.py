"""The AI module's instruments. Names are what Prometheus shows (the exporter adds `_total`
to counters and `_seconds` to unit-`s` instruments). Labels are bounded enums and configured
names only: never a caller id, a prompt, a key or any other caller-supplied string."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from app.core.histograms import LocalHistogram
from app.core.telemetry import (
    LLM_LATENCY_BUCKETS_S,
    OVERHEAD_BUCKETS_S,
    TOKEN_BUCKETS,
    Telemetry,
)

GaugeSource = Callable[[], Iterable[tuple[float, dict[str, str]]]]


class Tally:
    """A counter summed in a dict on the request path and reported at scrape time.

    A synchronous OpenTelemetry `add` costs about 7 us (attribute cleaning, hashing, a lock);
    three of them per request were a measurable share of the gateway's own CPU. The SDK's
    asynchronous counter is made for sums kept elsewhere: Prometheus sees the same counter.
    Label values are bounded (providers, configured models, enums), so the dict is too.
    """

    def __init__(
        self, meter: Meter, name: str, label_names: tuple[str, ...], *, unit: str, description: str
    ) -> None:
        self._label_names = label_names
        self._sums: dict[tuple[str, ...], float] = {}
        meter.create_observable_counter(
            name, callbacks=[self._observe], unit=unit, description=description
        )

    def add(self, amount: float, *labels: str) -> None:
        self._sums[labels] = self._sums.get(labels, 0) + amount

    def _observe(self, _: CallbackOptions) -> Iterable[Observation]:
        names = self._label_names
        return [
            Observation(total, dict(zip(names, labels, strict=True)))
            for labels, total in list(self._sums.items())
        ]


class AIMetrics:
    def __init__(self, telemetry: Telemetry, known_models: frozenset[str]) -> None:
        meter = self._meter = telemetry.meter
        registry = telemetry.registry
        # A pinned model name comes from the caller: only configured or priced names become
        # label values, anything else is "other".
        self._known_models = known_models
        self.requests = Tally(
            meter,
            "ai_provider_requests",
            ("provider", "model", "outcome"),
            unit="{request}",
            description="Upstream calls by provider, model and outcome (success or failure kind)",
        )
        # Histograms on the request path are app.core.histograms' (an OpenTelemetry one
        # costs 5-9 us a record); same series names as the OpenTelemetry exporter's.
        self.latency = LocalHistogram(
            "ai_provider_latency_seconds",
            "Upstream call latency, successful or not",
            ("model", "provider"),
            LLM_LATENCY_BUCKETS_S,
            registry,
        )
        self.tokens = Tally(
            meter,
            "ai_provider_tokens",
            ("provider", "model", "token_type"),
            unit="{token}",
            description="Tokens reported by upstreams, by token_type (input or output)",
        )
        self.cost = Tally(
            meter,
            "ai_provider_cost_usd",
            ("provider", "model"),
            unit="{USD}",
            description="Cost in USD of upstream calls, from their real token counts",
        )
        self.local_saturation = Tally(
            meter,
            "ai_local_saturation",
            ("provider",),
            unit="{request}",
            description="Calls that found every connection of the gateway's pool to a provider "
            "busy for AI_POOL_WAIT_S (or past their deadline) and were not sent: our own "
            "saturation, never counted against the provider",
        )
        self.retries = meter.create_counter(
            "ai_provider_retries",
            unit="{retry}",
            description="Retries of the same provider made by its guard",
        )
        self.fallbacks = meter.create_counter(
            "ai_fallbacks",
            unit="{fallback}",
            description="Requests that moved on from one provider to the next",
        )
        self.overhead = LocalHistogram(
            "ai_gateway_overhead_seconds",
            "Time a request spent in the gateway itself: total minus upstream time",
            (),
            OVERHEAD_BUCKETS_S,
            registry,
        )
        self.breaker_transitions = meter.create_counter(
            "ai_provider_circuit_breaker_transitions",
            unit="{transition}",
            description=(
                "Circuit breaker state changes per provider, by the state entered and origin:"
                " local (this replica's breaker decided) or fleet (applied from another"
                " replica through Redis; sum origin=local across replicas)"
            ),
        )
        self.budget_alerts = meter.create_counter(
            "ai_budget_alerts",
            unit="{alert}",
            description="Budget alerts raised, by budget and level (80, 90, 100 percent)",
        )
        self.cache_requests = meter.create_counter(
            "ai_cache_requests",
            unit="{request}",
            description="Response cache lookups by result (hit or miss)",
        )
        self.cache_evictions = meter.create_counter(
            "ai_cache_evictions",
            unit="{entry}",
            description="Response cache entries evicted (size bound or age)",
        )
        self.ledger_write_failures = meter.create_counter(
            "ai_ledger_write_failures",
            unit="{failure}",
            description="Failed ledger batch writes (rows are kept and retried) and dropped rows",
        )
        self.time_to_first_text = LocalHistogram(
            "ai_provider_time_to_first_token_seconds",
            "Streams: from the upstream call to its first text (what a caller waits)",
            ("model", "provider"),
            LLM_LATENCY_BUCKETS_S,
            registry,
        )
        # OpenTelemetry GenAI semantic conventions (gen_ai.client.operation.duration, s, and
        # gen_ai.client.token.usage, {token}), as the Prometheus exporter names them.
        self.operation_duration = LocalHistogram(
            "gen_ai_client_operation_duration_seconds",
            "GenAI operation duration",
            (
                "error_type",
                "gen_ai_operation_name",
                "gen_ai_provider_name",
                "gen_ai_request_model",
            ),
            LLM_LATENCY_BUCKETS_S,
            registry,
        )
        self.token_usage = LocalHistogram(
            "gen_ai_client_token_usage",
            "Measures number of input and output tokens used",
            (
                "gen_ai_operation_name",
                "gen_ai_provider_name",
                "gen_ai_request_model",
                "gen_ai_token_type",
            ),
            TOKEN_BUCKETS,
            registry,
        )

    def gauge(self, name: str, unit: str, description: str, source: GaugeSource) -> None:
        """A gauge read at scrape time from live state, so it can never go stale."""

        def observe(_: CallbackOptions) -> Iterable[Observation]:
            return [Observation(value, labels) for value, labels in source()]

        self._meter.create_observable_gauge(
            name, callbacks=[observe], unit=unit, description=description
        )

    def model_label(self, model: str) -> str:
        return model if model in self._known_models else "other"

    def attempt(self, provider: str, model: str, outcome: str, latency_s: float) -> None:
        model = self.model_label(model)
        self.requests.add(1, provider, model, outcome)
        self.latency.record(latency_s, (model, provider))
        error = "" if outcome == "success" else outcome
        self.operation_duration.record(latency_s, (error, "chat", provider, model))

    def first_text(self, provider: str, model: str, seconds: float) -> None:
        self.time_to_first_text.record(seconds, (self.model_label(model), provider))

    def usage(
        self, provider: str, model: str, prompt_tokens: int, completion_tokens: int, cost_usd: float
    ) -> None:
        model = self.model_label(model)
        self.tokens.add(prompt_tokens, provider, model, "input")
        self.tokens.add(completion_tokens, provider, model, "output")
        self.cost.add(cost_usd, provider, model)
        self.token_usage.record(prompt_tokens, ("chat", provider, model, "input"))
        self.token_usage.record(completion_tokens, ("chat", provider, model, "output"))
