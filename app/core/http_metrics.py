"""`http.server.request.duration` (OpenTelemetry HTTP semantic conventions), exported to
Prometheus as `http_server_request_duration_seconds{http_route, http_request_method,
http_response_status_code}`: what callers were answered, by route template and status, so an
SRE can count the 401s, 429s and 503s the gateway sent.

The route is the template (`/v1/fulltext/{doi}`-style), never the path a caller typed, and is
absent when no route matched (a 404 of an unknown path): a label must not take values from
callers. The method is one of the standard ones or `_OTHER`, as the conventions say.

Counted by `app.core.histograms.LocalHistogram` (an OpenTelemetry histogram costs about
9 us a request; this, a fraction of a microsecond).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from app.core.histograms import LocalHistogram

NAME = "http_server_request_duration_seconds"
DESCRIPTION = "Duration of HTTP server requests, by route template and status"

# The conventions' recommended boundaries for this histogram, in seconds.
HTTP_DURATION_BUCKETS_S = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"}
)


class HttpMetrics:
    """Bound to the app's registry once the container exists (the middleware that records
    is built before it); until then a request is not recorded."""

    def __init__(self) -> None:
        self._histogram: LocalHistogram | None = None

    def bind(self, registry: CollectorRegistry) -> None:
        self._histogram = LocalHistogram(
            NAME,
            DESCRIPTION,
            ("http_request_method", "http_response_status_code", "http_route"),
            HTTP_DURATION_BUCKETS_S,
            registry,
        )

    def record(self, seconds: float, route: str | None, method: str, status: int) -> None:
        if self._histogram is None:
            return
        method = method if method in _METHODS else "_OTHER"
        # No route matched (a 404 of an unknown path): the route label is empty (absent).
        self._histogram.record(seconds, (method, str(status), route or ""))
