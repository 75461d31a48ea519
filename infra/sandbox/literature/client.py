"""A synchronous client for the literature sandbox's control plane (tests, demo, scripts)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from .hosts import gateway_settings


class LiteratureSandbox:
    """One keep-alive client for the control plane; the catalogue is read once (it never
    changes while the sandbox runs)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._http = httpx.Client(base_url=base_url, timeout=10.0, trust_env=False)
        self._catalogue: dict[str, Any] | None = None

    def close(self) -> None:
        self._http.close()

    @contextmanager
    def _client(self) -> Iterator[httpx.Client]:
        yield self._http

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for the gateway's `LiteratureSettings`."""
        return {**gateway_settings(self.base_url), **overrides}

    def reset(self) -> None:
        """Counters to zero, faults cleared."""
        with self._client() as client:
            client.post("/_literature/reset").raise_for_status()

    def stats(self) -> dict[str, Any]:
        with self._client() as client:
            response = client.get("/_literature/stats")
            response.raise_for_status()
            data: dict[str, Any] = response.json()
            return data

    def requests(self, host: str) -> int:
        return int(self.stats()["by_host"].get(host, 0))

    def path_requests(self, host: str, path: str) -> int:
        return int(self.stats()["by_path"].get(f"{host}{path}", 0))

    def catalogue(self) -> dict[str, Any]:
        if self._catalogue is None:
            with self._client() as client:
                response = client.get("/_literature/catalogue")
                response.raise_for_status()
                self._catalogue = response.json()
        assert self._catalogue is not None
        return self._catalogue

    def entry(self, entry_id: str) -> dict[str, Any]:
        for entry in self.catalogue()["papers"]:
            if entry["id"] == entry_id:
                return dict(entry)
        raise KeyError(entry_id)

    def page(self, host: str, path: str) -> str:
        """A page as the sandbox serves it to `host`: what a scraper would have fetched."""
        port = self.base_url.rsplit(":", 1)[1]
        response = self._http.get(path, headers={"Host": f"{host}:{port}"})
        response.raise_for_status()
        return response.text

    def fault(self, host: str, **config: Any) -> None:
        with self._client() as client:
            client.put(f"/_literature/faults/{host}", json=config).raise_for_status()

    def clear_fault(self, host: str) -> None:
        with self._client() as client:
            client.delete(f"/_literature/faults/{host}").raise_for_status()
