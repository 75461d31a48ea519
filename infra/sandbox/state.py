"""Everything the sandbox remembers between requests: chaos, counters, last calls.

One :class:`SandboxState` per app, stored under :data:`STATE` (an ``AppKey``).  All
access happens on the event loop thread, so plain dicts/Counters need no locks.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from .catalog import PROVIDERS, Catalog, Provider
from .chaos import ProviderChaos

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Iterable, Mapping

NO_KEY = "<none>"
# Requests kept by the recorder (oldest dropped first): plenty for one test's window.
RECEIVED_MAX: Final = 10_000
# Headers and query parameters that carry a provider key, on any of the four APIs.
_KEY_HEADERS: Final = frozenset({"authorization", "api-key", "x-goog-api-key"})


def fingerprint(key: str) -> str:
    """Recognisable but not the secret: ``gsk-sandbox-1`` -> ``gsk-...-1``."""
    if len(key) <= 8:
        return key[:2] + "..."
    return f"{key[:4]}...{key[-2:]}"


@dataclass(slots=True)
class ProviderStats:
    """Counters for one provider.

    ``by_*`` describe completion calls only, so a background health prober does not
    disturb assertions about which key served which completion; probes (the model /
    deployment list endpoints) have their own ``probes_by_*``.
    """

    completions: int = 0
    probes: int = 0
    by_key: Counter[str] = field(default_factory=Counter)
    by_model: Counter[str] = field(default_factory=Counter)
    by_status: Counter[str] = field(default_factory=Counter)
    by_fault: Counter[str] = field(default_factory=Counter)
    probes_by_key: Counter[str] = field(default_factory=Counter)
    probes_by_status: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        return {
            "completions": self.completions,
            "probes": self.probes,
            "by_key": dict(self.by_key),
            "by_model": dict(self.by_model),
            "by_status": dict(self.by_status),
            "by_fault": dict(self.by_fault),
            "probes_by_key": dict(self.probes_by_key),
            "probes_by_status": dict(self.probes_by_status),
        }


@dataclass(slots=True)
class SandboxState:
    """Per-app state; created by :func:`infra.sandbox.server.build_app`."""

    catalog: Catalog
    shutdown: asyncio.Event
    chaos: dict[Provider, ProviderChaos] = field(
        default_factory=lambda: {p: ProviderChaos() for p in PROVIDERS}
    )
    stats: dict[Provider, ProviderStats] = field(
        default_factory=lambda: {p: ProviderStats() for p in PROVIDERS}
    )
    last: dict[Provider, dict[str, Any]] = field(default_factory=dict)
    # Every request the server received, as sent (see `record_request`); only
    # `DELETE /_requests` forgets them, so a request that resets the counters or the chaos
    # (which a gateway must never be tricked into sending) still leaves its trace.
    received: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECEIVED_MAX))

    def record_request(self, request: web.Request) -> None:
        """Keep what reached the server: method, the raw request target (before any
        decoding or dot-segment handling, so `..` and `%2e%2e` show as sent), the decoded
        path, and whether a provider key came with it (never the key itself)."""
        self.received.append(
            {
                "method": request.method,
                "raw_path": request.raw_path,
                "path": request.path,
                "host": request.host,
                "with_key": any(h.lower() in _KEY_HEADERS for h in request.headers)
                or "key" in request.query,
                "at": time.time(),
            }
        )

    def reset_stats(self) -> None:
        """Zero the counters and forget the last requests."""
        self.stats = {p: ProviderStats() for p in PROVIDERS}
        self.last.clear()

    def reset_all(self) -> None:
        """Healthy upstreams, zero counters: the state a test wants to start from."""
        for chaos in self.chaos.values():
            chaos.clear()
        self.reset_stats()

    def stats_json(self) -> dict[str, Any]:
        now = time.monotonic()
        out: dict[str, Any] = {}
        for provider in PROVIDERS:
            entry = self.stats[provider].to_json()
            entry["chaos_state"] = self.chaos[provider].timers(now)
            out[provider] = entry
        return out

    def remember(
        self,
        provider: Provider,
        request: web.Request,
        body: Any,
        key: str | None,
        redact: Iterable[str],
    ) -> dict[str, Any]:
        """Keep the last completion request, secrets replaced by fingerprints.

        Returns the record so the pipeline can add ``status`` and ``usage`` (what
        the sandbox counted) once it knows them.
        """
        secret_headers = {h.lower() for h in redact}
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            if name.lower() in secret_headers and key:
                value = value.replace(key, fingerprint(key))
            headers[name] = value
        query: Mapping[str, str] = request.query
        if key and "key" in query:
            query = {**query, "key": fingerprint(key)}
        record: dict[str, Any] = {
            "method": request.method,
            "path": request.path,
            "query": dict(query),
            "headers": headers,
            "json": body,
            "key_used": key,
            "key_fingerprint": fingerprint(key) if key else None,
            "at": time.time(),
            "status": None,
            "usage": None,
        }
        self.last[provider] = record
        return record


STATE: web.AppKey[SandboxState] = web.AppKey("sandbox_state", SandboxState)
