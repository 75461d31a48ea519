"""Shared state on Redis: one connection pool, its scripts, and whether Redis is up.

Several processes (workers on one machine, replicas behind a load balancer) behave as one
gateway only if the numbers the guards keep live in one place. With `REDIS_URL` set, that
place is Redis; this module is the only one that talks to it. Rules it enforces for every
caller:

- every read-modify-write is one Lua script, loaded once and called by its SHA (redis-py's
  `Script` reloads it after a `NOSCRIPT`, e.g. when Redis restarted empty);
- every operation has a short timeout (`REDIS_TIMEOUT_S`, 50 ms by default) and no retry: a
  slow Redis must not become a slow gateway. A failure marks the state down and raises
  `SharedStateDown`; the caller falls back to its local rules;
- replicas announce themselves with heartbeats that expire, so each knows how many live
  replicas it last saw (a replica cut off from Redis spends at most its share);
- whoever must act when Redis comes back (reconciliation, rebuilding from the ledger)
  registers an `on_up` callback; callbacks run once per down -> up transition.

Keys are namespaced by `REDIS_KEY_PREFIX`, so several gateways (or tests) can share a server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

log = logging.getLogger("app.shared")

# A replica's heartbeat: add or refresh this replica with its expiry, drop the expired ones,
# and return how many are alive. Redis' own clock decides expiry, so replicas with skewed
# clocks agree on who is alive.
_HEARTBEAT = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return redis.call('ZCARD', KEYS[1])
"""

OnUp = Callable[[], Awaitable[None]]
# Connections to Redis per process: requests in flight each hold one for one script's round
# trip, plus the pub/sub subscribers; Redis accepts 10 000 clients by default.
_MAX_CONNECTIONS = 256


class SharedStateDown(Exception):
    """Redis did not answer in time (or at all); the caller uses its local rules."""


class SharedState:
    """The gateway's handle on Redis, built once per app (never a module-level client)."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 0.05,
        prefix: str = "gw:",
        heartbeat_s: float = 1.0,
        replica_id: str | None = None,
    ) -> None:
        self.prefix = prefix
        self.replica_id = replica_id or uuid.uuid4().hex[:12]
        self.timeout_s = timeout_s
        self.up = False
        # Replicas alive at the last heartbeat that reached Redis, this one included.
        self.live_replicas = 1
        self._heartbeat_s = heartbeat_s
        # A pool that waits for a free connection (within the operation's timeout) rather
        # than redis-py's default, which fails at once past 100 connections: under a burst
        # that made a healthy Redis look down and sent requests to the local fallback.
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=_MAX_CONNECTIONS,
            timeout=None,
            # No socket_timeout: redis-py then writes through asyncio.wait_for, which on
            # Python 3.11 can swallow a cancellation that lands as the write completes (a
            # caller gone mid-call would not stop). `run` and `call` bound every operation
            # with asyncio.timeout instead; redis-py drops a connection cut mid-command.
            socket_timeout=None,
            socket_connect_timeout=max(timeout_s, 0.2),
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._client: redis.Redis = redis.Redis.from_pool(pool)  # closes the pool with it
        self._heartbeat = self.script(_HEARTBEAT)
        self._on_up: list[OnUp] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None

    @property
    def client(self) -> redis.Redis:
        """For pub/sub and plain reads; writes go through `run` and a script."""
        return self._client

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def script(self, lua: str) -> AsyncScript:
        """Register a script at start; it is loaded into Redis on first use, by SHA after."""
        return self._client.register_script(lua)

    def on_up(self, callback: OnUp) -> None:
        """Run `callback` whenever Redis is reached again after being down (and at start)."""
        self._on_up.append(callback)

    async def run(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run one script within the timeout; raises SharedStateDown on any Redis failure."""
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await script(keys=list(keys), args=list(args), client=self._client)
        # RuntimeError: under uvloop, a pooled connection the peer reset raises it on write.
        except (RedisError, OSError, TimeoutError, RuntimeError) as exc:
            self._down(exc)
            raise SharedStateDown(type(exc).__name__) from None
        if not self.up:
            self._back()
        return result

    async def call(self, command: str, *args: Any) -> Any:
        """One plain command within the timeout (reads, PUBLISH); SharedStateDown on failure."""
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await self._client.execute_command(command, *args)  # type: ignore[no-untyped-call]
        except (RedisError, OSError, TimeoutError, RuntimeError) as exc:
            self._down(exc)
            raise SharedStateDown(type(exc).__name__) from None
        if not self.up:
            self._back()
        return result

    async def start(self) -> None:
        """First heartbeat (so `up` is known before the first request), then the ticker."""
        await self.beat()
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def beat(self) -> None:
        """Announce this replica and learn how many are alive."""
        ttl_ms = int(self._heartbeat_s * 3000)
        with contextlib.suppress(SharedStateDown):
            alive = await self.run(
                self._heartbeat, [self.key("replicas")], [self.replica_id, ttl_ms]
            )
            self.live_replicas = max(1, int(alive))

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            await self.beat()

    def _down(self, exc: BaseException) -> None:
        if self.up:
            log.warning("shared state (Redis) unreachable: %s", type(exc).__name__)
            self._spawn(self._drop_idle())
        self.up = False

    async def _drop_idle(self) -> None:
        """Close the pool's idle connections. After a restart, each one still open to the
        Redis that died would fail its next command ("closed by server": redis-py's check
        on checkout does not see it), and with no retry every such failure is one more
        outage for the guards. New connections are made on demand."""
        with contextlib.suppress(RedisError, OSError):
            await self._client.connection_pool.disconnect(inuse_connections=False)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _back(self) -> None:
        self.up = True
        log.info("shared state (Redis) reachable replicas_seen=%d", self.live_replicas)
        for callback in self._on_up:
            self._spawn(self._guarded(callback))

    @staticmethod
    async def _guarded(callback: OnUp) -> None:
        try:
            await callback()
        except SharedStateDown:
            pass  # Redis went away again: the next transition runs it once more
        except Exception:
            log.exception("shared state reconciliation failed")

    async def aclose(self) -> None:
        if self._ticker is not None:
            while not self._ticker.done():  # a cancellation redis-py swallowed is sent again
                self._ticker.cancel()
                await asyncio.wait({self._ticker}, timeout=0.1)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(RedisError, OSError):
            await self._client.zrem(self.key("replicas"), self.replica_id)
        await self._client.aclose()
