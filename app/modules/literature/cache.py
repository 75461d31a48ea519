"""Detection results cached per paper, bounded by entries and age (on the injected clock).

The key is what decides the answer: the paper's identifiers and stored text (hashed), and the
options that change the waterfall. The caller's own `id` is not part of it, so the same paper
under two ids is detected once. Results that ended in an error (a deadline) are not cached.
"""

from __future__ import annotations

import hashlib
import json

from cachetools import TTLCache

from app.core.clock import Clock
from app.modules.literature.domain import DetectionResult, DetectOptions, Paper


def cache_key(paper: Paper, options: DetectOptions) -> str:
    text_digest = (
        hashlib.sha256(paper.full_text.encode("utf-8", "replace")).hexdigest()
        if paper.full_text
        else None
    )
    material = {
        "doi": paper.doi,
        "title": paper.title,
        "pmcid": paper.pmcid,
        "pmid": paper.pmid,
        "url": paper.url,
        "open_access_pdf": paper.open_access_pdf,
        "pdf_url": paper.pdf_url,
        "full_text": text_digest,
        "full_text_status": paper.full_text_status,
        "skip_tiers": sorted(options.skip_tiers),
        "max_tier": options.max_tier,
        "min_confidence": options.min_confidence.value,
        "skip_ai": options.skip_ai,
    }
    encoded = json.dumps(material, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()


class ResultCache:
    """cachetools' TTL + LRU table on the injected clock: an entry lives `ttl_s` from when it
    was stored (reading it does not extend it), the least recently used goes first when full."""

    def __init__(self, clock: Clock, *, ttl_s: float, max_entries: int) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._entries: TTLCache[str, DetectionResult, float] = TTLCache(
            maxsize=max_entries, ttl=ttl_s, timer=clock.monotonic
        )

    @property
    def enabled(self) -> bool:
        return self._ttl_s > 0 and self._max_entries > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> DetectionResult | None:
        return self._entries.get(key)

    def put(self, key: str, result: DetectionResult) -> None:
        if not self.enabled or result.error is not None:
            return
        self._entries[key] = result
