"""Key state shared by every replica: a key resting after a 429 or retired after a 401/403 on
one replica rests or is retired on all, and a key the health probe brings back is back on all.

The hot path never waits for Redis: each replica keeps its keys' state in memory (a
`SharedKeyPool` is a `KeyPool`) and Redis keeps it current:
- a change made here (rest, retire, restore) is applied locally at once, then written by one
  script that merges it into the key's hash and PUBLISHes the result; a writer task sends
  them in order, off the request path;
- every replica subscribes to that channel and applies what it hears (within milliseconds),
  and re-reads every key's state (and today's request count) once a second, so a message
  lost with a dropped connection is caught up;
- each state carries a version (Redis' clock in microseconds at the write); a replica takes a
  state only if it is newer than the one it has, so late messages never undo a change;
- when Redis comes back (perhaps empty) each replica writes what it knows (its retired and
  resting keys) again, then re-reads.

Redis holds a hash per key, named by provider and key id (the short hash, never the key).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import SecretStr
from redis.exceptions import RedisError

from app.core.clock import Clock
from app.core.resilience.shared_limits import SharedLimiter
from app.core.shared import SharedState, SharedStateDown
from app.modules.ai.providers.keys import ApiKey, KeyPool

log = logging.getLogger("app.ai.keys")

# How often every key's state is re-read (the safety net under pub/sub).
KEY_SYNC_POLL_S = 1.0
# How long to wait before subscribing again after the subscription's connection failed.
RESUBSCRIBE_S = 0.5
# A key's shared state is forgotten a week after its last change (rotated-out keys).
_STATE_TTL_MS = 7 * 24 * 3600 * 1000
# A rest that extends a rest already in force by less than this is not written again (a
# 429 storm on one key is a write a second at most, not one per refused call).
_REST_SLACK_S = 1.0

Op = Literal["rest", "retire", "restore"]

# Bounds on what a state read or heard may say (see `_state`).
MAX_REST_S = 24 * 3600.0
_MAX_VERSION = 2**53  # Redis' microseconds stay below this (exact in Lua's doubles)
_MAX_AT_MS = 4_102_444_800_000  # 2100-01-01

# KEYS: the key's state hash. ARGV: op, rest ms, provider, key id, channel, time to live ms.
# Merges the change (a rest only ever extends; a retirement keeps its first refusal time),
# stamps a new version and publishes the key's whole state.
_CHANGE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ver = tonumber(t[1]) * 1000000 + tonumber(t[2])
local h = redis.call('HMGET', KEYS[1], 'until', 'retired', 'at', 'ver')
local until_ms = tonumber(h[1] or '0')
local retired = tonumber(h[2] or '0')
local at = tonumber(h[3] or '0')
local old = tonumber(h[4] or '0')
if ver <= old then ver = old + 1 end
local op = ARGV[1]
if op == 'rest' then
  local wake = now + tonumber(ARGV[2])
  if wake > until_ms then until_ms = wake end
elseif op == 'retire' then
  if retired == 0 then
    retired = 1
    at = now
  end
elseif op == 'restore' then
  retired = 0
  at = 0
end
redis.call('HSET', KEYS[1], 'until', string.format('%.0f', until_ms), 'retired', retired,
  'at', string.format('%.0f', at), 'ver', string.format('%.0f', ver))
redis.call('PEXPIRE', KEYS[1], ARGV[6])
local rest = until_ms - now
if rest < 0 then rest = 0 end
local message = cjson.encode({p = ARGV[3], k = ARGV[4], v = string.format('%.0f', ver),
  r = string.format('%.0f', rest), x = retired, a = string.format('%.0f', at)})
redis.call('PUBLISH', ARGV[5], message)
return message
"""

# KEYS: n state hashes, then n request counters of today. ARGV: n.
# Returns per key {version, rest ms left, retired, retired at ms, requests today}.
_READ = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = tonumber(ARGV[1])
local out = {}
for i = 1, n do
  local h = redis.call('HMGET', KEYS[i], 'until', 'retired', 'at', 'ver')
  local rest = tonumber(h[1] or '0') - now
  if rest < 0 then rest = 0 end
  local used = redis.call('GET', KEYS[n + i]) or '0'
  out[i] = {h[4] or '0', string.format('%.0f', rest), h[2] or '0', h[3] or '0', used}
end
return out
"""


@dataclass(frozen=True, slots=True)
class SharedKeyState:
    """A key's state as Redis has it."""

    version: int
    rest_s: float
    retired: bool
    retired_at: datetime | None


class SharedKeyPool(KeyPool):
    """A provider's keys, with every change shared through `KeySync`."""

    def __init__(self, provider: str, keys: list[SecretStr], clock: Clock, sync: KeySync) -> None:
        super().__init__(keys, clock)
        self.provider = provider
        self._sync = sync
        self._by_id = {key.id: key for key in self}
        # Changes of ours not yet on Redis, per key id: a state heard meanwhile (older than
        # our change) must not undo it.
        self._pending: dict[str, int] = {}

    def key(self, key_id: str) -> ApiKey | None:
        return self._by_id.get(key_id)

    def _changed(self) -> None:
        """After a reload: messages about a removed key are ignored from now on, and a new
        key's daily count is read by the poll like the others'."""
        self._by_id = {key.id: key for key in self}
        self._sync.track(self)

    def rest(self, key: ApiKey, seconds: float) -> None:
        now = self._clock.monotonic()
        before = key.resting_until
        super().rest(key, seconds)
        if before <= now or key.resting_until > before + _REST_SLACK_S:
            self._sync.push(self, key, "rest", seconds)

    def retire(self, key: ApiKey) -> None:
        if key.disabled:
            return
        super().retire(key)
        self._sync.push(self, key, "retire", 0.0)

    def restore(self, key: ApiKey) -> None:
        was_retired = key.disabled
        super().restore(key)
        if was_retired:
            self._sync.push(self, key, "restore", 0.0)

    def begin(self, key: ApiKey) -> None:
        self._pending[key.id] = self._pending.get(key.id, 0) + 1

    def end(self, key: ApiKey) -> None:
        left = self._pending.get(key.id, 0) - 1
        if left > 0:
            self._pending[key.id] = left
        else:
            self._pending.pop(key.id, None)

    def apply(self, key: ApiKey, state: SharedKeyState, *, own: bool = False) -> None:
        """Take a newer shared state. While a change of ours is on its way (`own`: this is
        the answer to one of them), only a longer rest is taken from a state that does not
        include it yet: the rest of that state would undo our change."""
        if state.version <= key.version:
            return
        now = self._clock.monotonic()
        if state.rest_s > 0:
            key.resting_until = max(key.resting_until, now + state.rest_s)
        if self._pending.get(key.id, 0) > (1 if own else 0):
            return
        key.version = state.version
        if state.retired:
            if not key.disabled:
                key.disabled = True
                key.checked_at = now  # re-checked by this replica's probe an interval later
            key.retired_at = state.retired_at or key.retired_at or self._clock.now()
        elif key.disabled:
            key.disabled = False
            key.retired_at = None


class KeySync:
    """Keeps every `SharedKeyPool` of an app current with Redis (see the module docstring)."""

    def __init__(
        self, shared: SharedState, clock: Clock, *, poll_s: float = KEY_SYNC_POLL_S
    ) -> None:
        self._shared = shared
        self._clock = clock
        self._poll_s = poll_s
        self._change = shared.script(_CHANGE)
        self._read = shared.script(_READ)
        self.channel = shared.key("keys", "changes")
        self._none = shared.key("keys", "none")  # read in place of a counter a key lacks
        self._pools: dict[str, SharedKeyPool] = {}
        # Per provider, per key id: the key's shared limiter when it has a daily quota.
        self._usage: dict[str, dict[str, SharedLimiter]] = {}
        self._queue: asyncio.Queue[tuple[SharedKeyPool, ApiKey, Op, float]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self.subscribed = asyncio.Event()
        self._closed = False
        shared.on_up(self.reconcile)

    def pool(
        self,
        provider: str,
        keys: list[SecretStr],
        usage: Sequence[SharedLimiter | None] = (),
    ) -> SharedKeyPool:
        """The shared pool of `provider`; `usage` (one per key, None without a daily quota)
        gets today's request counts from the poll, for the usage gauge."""
        pool = SharedKeyPool(provider, keys, self._clock, self)
        self._pools[provider] = pool
        self._usage[provider] = {
            key.id: limiter
            for key, limiter in zip(pool, usage, strict=False)
            if limiter is not None
        }
        return pool

    def track(self, pool: SharedKeyPool) -> None:
        """The pool's keys changed (a reload): count the new keys' daily use too."""
        usage = self._usage.setdefault(pool.provider, {})
        for key in pool:
            if isinstance(key.limiter, SharedLimiter):
                usage.setdefault(key.id, key.limiter)

    def state_key(self, provider: str, key_id: str) -> str:
        return self._shared.key("key", provider, key_id)

    async def start(self) -> None:
        """Read the shared state once (a new replica starts knowing retired keys), then
        listen, poll and write in the background."""
        with contextlib.suppress(SharedStateDown):
            await self.refresh()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._listen(), name="key-sync-listen"),
            loop.create_task(self._poll(), name="key-sync-poll"),
            loop.create_task(self._write(), name="key-sync-write"),
        ]

    async def aclose(self) -> None:
        """Stop the background tasks. A cancellation can be lost on Python 3.11: redis-py
        writes through `asyncio.wait_for` (with a socket timeout), which swallows a
        cancellation that arrives as the write completes; so each task is cancelled until it
        is done."""
        self._closed = True
        for task in self._tasks:
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=0.1)
            if not task.cancelled() and task.exception() is not None:
                log.error("key state sync task failed", exc_info=task.exception())
        self._tasks = []

    def push(self, pool: SharedKeyPool, key: ApiKey, op: Op, seconds: float) -> None:
        """Queue a change made here for Redis (applied locally already)."""
        pool.begin(key)
        self._queue.put_nowait((pool, key, op, seconds))

    async def refresh(self) -> None:
        """Read every key's shared state and today's request counts; SharedStateDown when
        Redis does not answer."""
        for provider, pool in list(self._pools.items()):
            keys = list(pool)
            known = self._usage.get(provider, {})
            usage = [known.get(key.id) for key in keys]
            days = [None if u is None else u.today_key() for u in usage]
            counters = [self._none if d is None else d[1] for d in days]
            rows = await self._shared.run(
                self._read,
                [self.state_key(provider, key.id) for key in keys] + counters,
                [len(keys)],
            )
            for key, row, limiter, day in zip(keys, rows, usage, days, strict=True):
                try:
                    version, rest_ms, retired, at_ms, used = (int(part) for part in row)
                    state = _state(version, rest_ms, retired, at_ms)
                except (ValueError, TypeError, OverflowError):
                    log.warning("ignored a malformed key state key_id=%s", key.id)
                    continue
                pool.apply(key, state)
                if limiter is not None and day is not None:
                    limiter.note_used(day[0], used)

    async def reconcile(self) -> None:
        """Redis is back (maybe empty): write what this replica knows, then read."""
        now = self._clock.monotonic()
        for pool in list(self._pools.values()):
            for key in pool:
                if key.disabled:
                    pool.begin(key)
                    await self._send(pool, key, "retire", 0.0)
                elif key.resting_until > now:
                    pool.begin(key)
                    await self._send(pool, key, "rest", key.resting_until - now)
        await self.refresh()

    async def _write(self) -> None:
        while not self._closed:
            pool, key, op, seconds = await self._queue.get()
            with contextlib.suppress(SharedStateDown):  # written again by `reconcile`
                await self._send(pool, key, op, seconds)

    async def _send(self, pool: SharedKeyPool, key: ApiKey, op: Op, seconds: float) -> None:
        """One change to Redis (the key already counted as pending), and its answer."""
        try:
            message = await self._shared.run(
                self._change,
                [self.state_key(pool.provider, key.id)],
                [op, int(seconds * 1000), pool.provider, key.id, self.channel, _STATE_TTL_MS],
            )
            self._on_message(message, own=True)
        finally:
            pool.end(key)

    async def _listen(self) -> None:
        while not self._closed:
            pubsub = self._shared.client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                self.subscribed.set()
                # Changes made while this replica was not subscribed are read, not heard.
                with contextlib.suppress(SharedStateDown):
                    await self.refresh()
                while not self._closed:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                    if message is not None and message.get("type") == "message":
                        self._on_message(message["data"])
            # RuntimeError: under uvloop, writing to a connection the peer reset raises it.
            except (RedisError, OSError, TimeoutError, RuntimeError) as exc:
                self.subscribed.clear()
                log.debug("key state subscription lost: %s", type(exc).__name__)
            finally:
                with contextlib.suppress(RedisError, OSError, TimeoutError, RuntimeError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(RESUBSCRIBE_S)

    async def _poll(self) -> None:
        while not self._closed:
            await asyncio.sleep(self._poll_s)
            with contextlib.suppress(SharedStateDown):
                await self.refresh()

    def _on_message(self, raw: Any, *, own: bool = False) -> None:
        try:
            data = json.loads(raw)
            pool = self._pools.get(str(data["p"]))
            key = None if pool is None else pool.key(str(data["k"]))
            state = _state(int(data["v"]), int(data["r"]), int(data["x"]), int(data["a"]))
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError):
            log.warning("ignored a malformed key state message")
            return
        if pool is not None and key is not None:
            pool.apply(key, state, own=own)


def _state(version: int, rest_ms: int, retired: int, at_ms: int) -> SharedKeyState:
    """A key state from Redis' numbers, bounded: a version Redis could not have made is
    refused (it would shadow every later change), a rest is at most `MAX_REST_S`, and a
    refusal time outside 1970..2100 is dropped."""
    if not 0 <= version < _MAX_VERSION:
        raise ValueError("version out of range")
    refused = retired and 0 < at_ms < _MAX_AT_MS
    return SharedKeyState(
        version=version,
        rest_s=min(max(rest_ms, 0) / 1000, MAX_REST_S),
        retired=bool(retired),
        retired_at=datetime.fromtimestamp(at_ms / 1000, UTC) if refused else None,
    )
