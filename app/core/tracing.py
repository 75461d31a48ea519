"""OpenTelemetry traces: a server span per request, GenAI client spans per upstream attempt,
spans per literature tier, exported over OTLP/HTTP.

Tracing is on only when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`
is set: then the app owns one TracerProvider (never the process-wide global, so two apps in
one process do not share spans) with a batch processor. Unset, no provider is built and every
helper here returns at its first line: a request pays one context-variable read per span site.

The tracer of the request being served travels in a context variable set by the request
middleware (app.core.request_id), so code far below the controller (the provider guard, the
literature waterfall) opens spans without any dependency on HTTP or on the container, and
work outside a request (health probes) opens none.

A caller's W3C `traceparent` (and `tracestate`) is honoured: the server span joins its trace.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar, Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from app.core.settings import Settings

SERVICE_NAME = "literature-ai-gateway"
_PROPAGATOR = TraceContextTextMapPropagator()
_TRACE_HEADERS = (b"traceparent", b"tracestate")

# GenAI semantic conventions' names for our providers (gen_ai.provider.name).
GEN_AI_PROVIDER_NAMES = {
    "groq": "groq",
    "gemini": "gcp.gemini",
    "azure": "azure.ai.openai",
    "openai": "openai",
}

_tracer: ContextVar[Tracer | None] = ContextVar("gateway_tracer", default=None)


def traces_endpoint(settings: Settings) -> str | None:
    """Where spans go, as OpenTelemetry's exporters read the standard variables: the traces
    endpoint as given, or the base endpoint with `/v1/traces`; None: tracing is off."""
    if settings.otel_exporter_otlp_traces_endpoint:
        return settings.otel_exporter_otlp_traces_endpoint
    if settings.otel_exporter_otlp_endpoint:
        return settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
    return None


class Tracing:
    """One app's tracer provider. `from_settings` gives None when tracing is off."""

    def __init__(self, processor: SpanProcessor, service_name: str = SERVICE_NAME) -> None:
        self.provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer("app")

    @classmethod
    def from_settings(cls, settings: Settings) -> Tracing | None:
        endpoint = traces_endpoint(settings)
        if endpoint is None:
            return None
        # Imported only when used: the exporter pulls in protobuf and requests.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return cls(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))

    def server_span(self, scope: Mapping[str, Any]) -> ServerSpan:
        """Open the request's server span (child of the caller's traceparent, if any) and
        make it, and this tracer, current for the request."""
        return ServerSpan(self.tracer, scope)

    def shutdown(self) -> None:
        """Flush what is batched and stop the exporter (on app shutdown)."""
        self.provider.shutdown()


class ServerSpan:
    """The request's SERVER span (HTTP semantic conventions); the middleware ends it."""

    __slots__ = ("_context_token", "_method", "_tracer_token", "span")

    def __init__(self, tracer: Tracer, scope: Mapping[str, Any]) -> None:
        carrier: dict[str, str] = {}
        for name, value in scope["headers"]:
            if name in _TRACE_HEADERS:
                carrier[name.decode("latin-1")] = value.decode("latin-1")
        parent: Context | None = _PROPAGATOR.extract(carrier) if carrier else None
        self._method: str = scope["method"]
        self.span = tracer.start_span(
            self._method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": self._method,
                "url.path": scope["path"],
                "url.scheme": scope.get("scheme", "http"),
            },
        )
        self._context_token = otel_context.attach(trace.set_span_in_context(self.span, parent))
        self._tracer_token: Token[Tracer | None] = _tracer.set(tracer)

    def finish(self, route: str | None, status: int) -> None:
        """Name the span after the route template and end it with the response status."""
        if route is not None:
            self.span.update_name(f"{self._method} {route}")
            self.span.set_attribute("http.route", route)
        self.span.set_attribute("http.response.status_code", status)
        if status >= 500:
            self.span.set_attribute("error.type", str(status))
            self.span.set_status(Status(StatusCode.ERROR))
        self.span.end()

    def detach(self) -> None:
        """Leave the request's context (after its last log line)."""
        otel_context.detach(self._context_token)
        _tracer.reset(self._tracer_token)


def start_client_span(name: str, attributes: Mapping[str, Any]) -> Span | None:
    """A CLIENT span for one upstream call, a sibling of every other attempt of the request
    (it is not made current: nothing below it opens spans). None when tracing is off."""
    tracer = _tracer.get()
    if tracer is None:
        return None
    return tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)


def end_span(
    span: Span | None,
    *,
    error_type: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> None:
    """End a span from `start_client_span`, marked failed when `error_type` is given."""
    if span is None:
        return
    if attributes:
        span.set_attributes(attributes)
    if error_type is not None:
        span.set_attribute("error.type", error_type)
        span.set_status(Status(StatusCode.ERROR))
    span.end()


@contextlib.contextmanager
def internal_span(name: str, attributes: Mapping[str, Any]) -> Iterator[Span | None]:
    """An INTERNAL span around a step of the request (a literature tier), current while it
    runs so the AI calls it makes nest under it. Yields None when tracing is off."""
    tracer = _tracer.get()
    if tracer is None:
        yield None
        return
    with tracer.start_as_current_span(
        name, kind=SpanKind.INTERNAL, attributes=attributes, record_exception=False
    ) as span:
        yield span


def add_event(name: str, attributes: Mapping[str, Any]) -> None:
    """An event on the current span (a budget reservation, a cache lookup); nothing when
    tracing is off."""
    if _tracer.get() is None:
        return
    trace.get_current_span().add_event(name, attributes)


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span in hex, for log lines; None when tracing is
    off or no span is current."""
    if _tracer.get() is None:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"
