"""One upstream call's clock: whose time ran out when it timed out.

A call is bounded three ways, by one `asyncio` timer moved as the call goes:

- the upstream's own time (`upstream_s`: a provider's adaptive timeout, a host's tier
  timeout), counted only once the call holds a connection;
- the caller's deadline (`caller_s`), which may be shorter;
- while every pooled connection is busy, the wait for one (`pool_wait_s`; None: only the
  caller's deadline bounds it).

When the timer fires, `fired` says which bound it was. Only `UPSTREAM` is a verdict on the
upstream; the caller's deadline and our own pool saturation say nothing about it (see the
"blame the right party" rule in ARCHITECTURE.md).
"""

from __future__ import annotations

import asyncio
from enum import StrEnum
from types import TracebackType

from app.core.http import unwatch_slot, watch_slot


class Bound(StrEnum):
    UPSTREAM = "upstream"  # the upstream had its full time and did not answer
    CALLER = "caller"  # the caller's deadline came first
    POOL = "pool"  # still waiting for a connection of our own pool


class CallBounds:
    """`async with CallBounds(...)` around one upstream call; on TimeoutError read `fired`.

    Implements `app.core.http.SlotWatch`: the client's pool tells it when the call queues for
    a connection and when it gets one. The upstream's clock is paused meanwhile."""

    __slots__ = (
        "_active",
        "_caller_end",
        "_caller_s",
        "_loop",
        "_pool_wait_s",
        "_queued_at",
        "_scope",
        "_slot",
        "_upstream_end",
        "_upstream_s",
        "queued_s",
        "waiting",
    )

    def __init__(self, upstream_s: float, caller_s: float, pool_wait_s: float | None) -> None:
        self._upstream_s = upstream_s
        self._caller_s = caller_s
        self._pool_wait_s = pool_wait_s
        self._active = False
        self._queued_at = 0.0
        self._upstream_end = 0.0
        self._caller_end = 0.0
        self.waiting = False
        # Seconds spent queued for a connection slot (the part of the call that was ours).
        self.queued_s = 0.0

    @property
    def caller_bound(self) -> bool:
        """The caller's deadline is shorter than the upstream's own time."""
        return self._caller_s < self._upstream_s

    async def __aenter__(self) -> CallBounds:
        self._loop = asyncio.get_running_loop()
        now = self._loop.time()
        self._upstream_end = now + self._upstream_s
        self._caller_end = now + self._caller_s
        self._scope = asyncio.timeout_at(min(self._upstream_end, self._caller_end))
        await self._scope.__aenter__()
        self._slot = watch_slot(self)
        self._active = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._active = False
        unwatch_slot(self._slot)
        await self._scope.__aexit__(exc_type, exc, tb)

    @property
    def fired(self) -> Bound | None:
        """Which bound cut the call; None if the timer did not fire (a TimeoutError raised
        by the call itself is the upstream's, as any other failure of the call)."""
        if not self._scope.expired():
            return None
        if self.waiting:
            pool_end = (
                self._queued_at + self._pool_wait_s
                if self._pool_wait_s is not None
                else self._caller_end
            )
            return Bound.POOL if pool_end <= self._caller_end else Bound.CALLER
        return Bound.CALLER if self._caller_end < self._upstream_end else Bound.UPSTREAM

    # -- SlotWatch ---------------------------------------------------------------------------

    def queued(self) -> None:
        """Every connection is busy: bound the wait on its own, pause the upstream's clock."""
        if not self._active or self._scope.expired():
            return
        self.waiting = True
        self._queued_at = self._loop.time()
        end = self._caller_end
        if self._pool_wait_s is not None:
            end = min(end, self._queued_at + self._pool_wait_s)
        self._scope.reschedule(end)

    def acquired(self) -> None:
        """A slot is ours: the upstream's clock runs again, from where it stopped."""
        if not self._active or not self.waiting or self._scope.expired():
            return
        self.waiting = False
        waited = self._loop.time() - self._queued_at
        self.queued_s += waited
        self._upstream_end += waited
        self._scope.reschedule(min(self._upstream_end, self._caller_end))
