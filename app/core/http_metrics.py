"""`http.server.request.duration` (OpenTelemetry HTTP semantic conventions), exported to
Prometheus as `http_server_request_duration_seconds{http_route, http_request_method,
http_response_status_code}`: what callers were answered, by route template and status, so an
SRE can count the 401s, 429s and 503s the gateway sent.

The route is the template (`/v1/fulltext/{doi}`-style), never the path a caller typed, and is
absent when no route matched (a 404 of an unknown path): a label must not take values from
callers. The method is one of the standard ones or `_OTHER`, as the conventions say.
"""

from __future__ import annotations

from opentelemetry.metrics import Histogram, Meter

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
    """Bound to the app's meter once the container exists (the middleware that records is
    built before it); until then a request is not recorded."""

    def __init__(self) -> None:
        self._histogram: Histogram | None = None
        # Attribute dicts by (route, method, status): a handful of distinct ones, built once.
        self._attributes: dict[tuple[str | None, str, int], dict[str, str | int]] = {}

    def bind(self, meter: Meter) -> None:
        self._histogram = meter.create_histogram(
            "http.server.request.duration",
            unit="s",
            description="Duration of HTTP server requests, by route template and status",
            explicit_bucket_boundaries_advisory=list(HTTP_DURATION_BUCKETS_S),
        )

    def record(self, seconds: float, route: str | None, method: str, status: int) -> None:
        if self._histogram is None:
            return
        key = (route, method, status)
        attributes = self._attributes.get(key)
        if attributes is None:
            attributes = {
                "http.request.method": method if method in _METHODS else "_OTHER",
                "http.response.status_code": status,
            }
            if route is not None:
                attributes["http.route"] = route
            if len(self._attributes) < 4096:  # bounded: routes x methods x statuses
                self._attributes[key] = attributes
        self._histogram.record(seconds, attributes)
