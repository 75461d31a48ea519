"""Rate limits and daily quotas counted on Redis, so N processes together stay under one
limit (a provider key's rpm, tpm and requests per day; a caller's rpm) instead of N times it.

One acquisition is one Lua script, called by SHA: a GCRA per per-minute limit (the token
bucket of `ratelimit.TokenBucket` written as a "theoretical arrival time", so a full bucket
still allows a burst of the whole minute) and a counter per day, checked and taken together
(all or nothing) on Redis' own clock, so replicas with skewed clocks agree. The day is the
caller's (BUDGET_TIMEZONE), named in the counter's key.

What stays local (no Redis call the hot path could answer from memory):
- a limiter refused on its request rate knows the earliest moment another request could
  pass (other replicas only push it later), and refuses locally until then;
- a key at its daily quota is skipped until the day resets without asking again;
- the usage gauge reads the count the last script (or the key-state poll) returned;
- a limit large enough to spare it is taken from Redis in small leases: one script takes up
  to LEASE_SHARE of the minute's limit for this replica (as many requests as fit), and the
  requests of the next LEASE_S seconds are served from it without a round trip. The lease
  grows (doubling) while it is used up in time and shrinks to what was used when it is not;
  leftovers expire unused, already counted on Redis, so the limit is never passed; at most a
  lease per replica (1 % of the minute's limit) moves from one minute into the next. A limit
  below 200 rpm per replica (a free tier's 30 rpm), or one with a tpm, is exact: one script
  per request. The daily count includes leased requests, so the quota gauge runs ahead by at
  most one lease.

When Redis is slow or gone (`SharedStateDown`, or `SharedState.up` false): each replica
counts locally with its share of every limit, the limit divided by the replicas it last saw
alive (`SharedState.live_replicas`). The share's per-minute buckets are kept all along and
every request Redis granted this replica is taken from them too, so a replica that just
used its share through Redis has nothing left locally: blips of a loaded Redis do not add a
fresh burst each. A daily quota's share is of what was left when Redis was last seen. So N
replicas cut off together stay under the provider's limit (a replica that had used more
than its share waits until its bucket is back above zero). When Redis is back, each replica
raises today's shared count to at least what it counted (a Redis that restarted empty does
not hand out a spent quota again).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, tzinfo

from app.core.clock import Clock
from app.core.resilience.ratelimit import DailyQuota, Day, RateLimiter, Unlimited
from app.core.shared import SharedState, SharedStateDown

# KEYS: request TAT, token TAT, today's request count.
# ARGV: rpm, tpm, tokens, rpd (0: no such limit), the count's time to live in ms, the
# requests wanted (a lease: as many as fit, at least one; 1 whenever tpm is set).
# Returns {code, wait_ms, used_today, request_wait_ms, granted}: code 0 taken (`granted`
# requests), 1 over a per-minute limit (wait_ms until one would pass), 2 at the daily quota.
# TATs are in ms of Redis' clock.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local rpd = tonumber(ARGV[4])
local rpm = tonumber(ARGV[1])
local used = 0
if rpd > 0 then
  used = tonumber(redis.call('GET', KEYS[3]) or '0')
  if used >= rpd then return {2, 0, used, 0, 0} end
end
local want = tonumber(ARGV[6])
if want > 1 and rpm > 0 then
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
  if tat < now then tat = now end
  local fit = math.floor((now + 60000 - tat) * rpm / 60000)
  if fit < want then want = math.max(fit, 1) end
end
if rpd > 0 and want > rpd - used then want = rpd - used end
local tats = {}
local function gcra(i, per_minute, amount)
  if per_minute <= 0 then return 0 end
  local interval = 60000 / per_minute
  if amount > per_minute then amount = per_minute end
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  tats[i] = tat + amount * interval
  local early = tats[i] - 60000 - now
  if early > 0 then return early end
  return 0
end
local request_wait = gcra(1, rpm, want)
local token_wait = gcra(2, tonumber(ARGV[2]), tonumber(ARGV[3]))
local wait = math.max(request_wait, token_wait)
if wait > 0 then
  return {1, math.ceil(wait), used, math.ceil(request_wait), 0}
end
for i, tat in pairs(tats) do
  redis.call('SET', KEYS[i], string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1000)
end
if rpd > 0 then
  used = redis.call('INCRBY', KEYS[3], want)
  if used == want then redis.call('PEXPIRE', KEYS[3], ARGV[5]) end
end
return {0, 0, used, 0, want}
"""

# Today's count raised to at least ARGV[1] (what this replica counted while Redis was away
# or before it restarted empty); returns the count.
_RAISE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[1])
if current < floor then
  redis.call('SET', KEYS[1], floor, 'PX', ARGV[2])
  return floor
end
return current
"""

# A day's counter outlives its day by this much (the gauge and reconciliation may read it).
_COUNT_GRACE_MS = 3_600_000
# Leases (module docstring): how long one is served from, the largest share of the minute's
# limit one replica takes at once, and a ceiling on its size.
LEASE_S = 1.0
LEASE_SHARE = 0.01
LEASE_MAX = 1000


class SharedLimits:
    """Makes limiters counted on Redis. One per app and kind (scripts registered once);
    reconciles every limiter it made when Redis comes back."""

    def __init__(self, shared: SharedState, clock: Clock, tz: tzinfo = UTC) -> None:
        self.shared = shared
        self.clock = clock
        self.tz = tz
        self.acquire_script = shared.script(_ACQUIRE)
        self.raise_script = shared.script(_RAISE)
        self._limiters: list[SharedLimiter] = []
        shared.on_up(self.reconcile)

    def limiter(
        self,
        name: Sequence[str],
        *,
        rpm: int | None,
        tpm: int | None = None,
        rpd: int | None = None,
    ) -> SharedLimiter | Unlimited:
        """The limiter of `name` (e.g. ("ai", "groq", key id) or ("caller", name)): every
        replica that names it the same counts against the same numbers."""
        if not (rpm or tpm or rpd):
            return Unlimited()
        limiter = SharedLimiter(self, name, rpm=rpm, tpm=tpm, rpd=rpd)
        self._limiters.append(limiter)
        return limiter

    async def reconcile(self) -> None:
        for limiter in self._limiters:
            await limiter.reconcile()


class SharedLimiter:
    """One name's rpm, tpm and daily quota on Redis (see the module docstring)."""

    def __init__(
        self,
        owner: SharedLimits,
        name: Sequence[str],
        *,
        rpm: int | None,
        tpm: int | None,
        rpd: int | None,
    ) -> None:
        self._owner = owner
        self._shared = owner.shared
        self._clock = owner.clock
        self._base = owner.shared.key("lim", *name)
        self._rpm, self._tpm, self._rpd = rpm, tpm, rpd
        self._day = Day(owner.clock, owner.tz)
        # Monotonic moments before which Redis would refuse anyway.
        self._blocked_until = -math.inf
        self._exhausted_until = -math.inf
        # Today's count as last seen on Redis, plus what was taken locally while it was away.
        self._used = 0.0
        self._used_day = ""
        # This replica's share: per-minute buckets kept all along (debited by what Redis
        # grants us), and the day's share made when Redis is lost.
        self._buckets: RateLimiter | None = None
        self._buckets_share = 0
        self._quota_share: DailyQuota | None = None
        # The current lease: requests granted on Redis and not yet used, until when (this
        # clock's monotonic), and how many to ask for next.
        self._leased = 0
        self._lease_until = -math.inf
        self._lease_want = 1
        self._lease_granted = 0

    def day_key(self, day: str) -> str:
        return f"{self._base}:d:{day}"

    def today_key(self) -> tuple[str, str]:
        """(today, the Redis key of today's request count)."""
        day, _ = self._day.current()
        return day, self.day_key(day)

    async def acquire(self, tokens: int) -> float:
        shared = self._shared
        now = self._clock.monotonic()
        if self._leased > 0:
            if now < self._lease_until:  # counted on Redis already, even if it is away now
                self._leased -= 1
                self._share().debit(tokens)
                return 0.0
            self._lease_want = max(1, self._lease_granted - self._leased)  # ask for what was used
            self._leased = 0
        if not shared.up:
            return self._local(tokens)
        if now < self._blocked_until:
            return self._blocked_until - now
        if now < self._exhausted_until:
            return self._exhausted_until - now
        day, left = self._day.current()
        want = self._lease_size()
        try:
            result = await shared.run(
                self._owner.acquire_script,
                (self._base + ":r", self._base + ":t", self.day_key(day)),
                (
                    self._rpm or 0,
                    self._tpm or 0,
                    tokens,
                    self._rpd or 0,
                    int(left * 1000) + _COUNT_GRACE_MS,
                    want,
                ),
            )
        except SharedStateDown:
            return self._local(tokens)
        self._quota_share = None  # the next outage starts from the count seen then
        code, wait_ms, used, request_wait_ms, granted = (int(part) for part in result)
        if self._rpd:
            self.note_used(day, used)
        if code == 0:
            if self._rpm or self._tpm:
                self._share().debit(tokens)
            if granted > 1:
                self._leased, self._lease_granted = granted - 1, granted
                self._lease_until = self._clock.monotonic() + LEASE_S
            # A lease used up in time asks for twice as much next time.
            self._lease_want = min(2 * want, LEASE_MAX) if granted >= want else max(1, granted)
            return 0.0
        if request_wait_ms > 0:
            self._blocked_until = self._clock.monotonic() + request_wait_ms / 1000
        if code == 2:
            return left
        return wait_ms / 1000

    def note_used(self, day: str, used: int) -> None:
        """Today's count as Redis has it (from a script or the key-state poll). Never below
        what this replica counted itself: requests it granted while Redis was away are not
        on Redis until `reconcile` writes them."""
        label, left = self._day.current()
        if day != label:
            return
        seen = self._used if self._used_day == day else 0.0
        self._used, self._used_day = max(float(used), seen), day
        if self._rpd and self._used >= self._rpd:
            self._exhausted_until = self._clock.monotonic() + left

    def quota_usage(self) -> tuple[float, float] | None:
        if not self._rpd:
            return None
        label, _ = self._day.current()
        return (self._used if self._used_day == label else 0.0), float(self._rpd)

    def request_window(self) -> tuple[float, float] | None:
        """An estimate from this replica's share of the request rate, scaled to the whole
        limit: exact with one replica and no lease (every grant is debited from the share),
        an even-load estimate with several. Redis' own count (the request TAT) would make it
        exact for the fleet; the script does not return it today."""
        if not self._rpm:
            return None
        share = self._share()
        window = share.request_window()
        if window is None:
            return None
        left, full_in = window
        replicas = self._buckets_share or 1
        return max(0.0, min(float(self._rpm), left * replicas)), full_in

    def _lease_size(self) -> int:
        """How many requests to take at once: 1 (exact) unless the limit spares a lease."""
        if self._tpm or not self._rpm:
            return 1
        replicas = max(1, self._shared.live_replicas)
        cap = min(int(self._rpm * LEASE_SHARE / replicas), LEASE_MAX)
        if self._rpd:
            cap = min(cap, int(self._rpd * LEASE_SHARE / replicas))
        return max(1, min(self._lease_want, cap))

    def _share(self) -> RateLimiter:
        """This replica's share of the per-minute limits, remade when the number of live
        replicas changes, as full (or overdrawn) as it was."""
        share = max(1, self._shared.live_replicas)
        if self._buckets is None or self._buckets_share != share:
            buckets = RateLimiter(
                self._clock,
                rpm=self._rpm / share if self._rpm else None,
                tpm=self._tpm / share if self._tpm else None,
            )
            if self._buckets is not None:
                buckets.fill_like(self._buckets)
            self._buckets, self._buckets_share = buckets, share
        return self._buckets

    def _local(self, tokens: int) -> float:
        """Redis is away: this replica's share of each limit, counted here."""
        buckets = self._share()
        quota = None
        if self._rpd:
            label, _ = self._day.current()
            if self._quota_share is None:
                seen = self._used if self._used_day == label else 0.0
                share = self._buckets_share
                self._quota_share = DailyQuota(
                    self._rpd / share, self._clock, self._owner.tz, used=seen / share
                )
            quota = self._quota_share
        if quota is not None and (day_wait := quota.wait()) > 0:
            return day_wait  # the day's share is spent; the minute's is left untouched
        wait = buckets.try_acquire(tokens)
        if wait == 0 and quota is not None:
            quota.take()
            label, _ = self._day.current()
            if self._used_day != label:
                self._used, self._used_day = 0.0, label
            self._used += 1
        return wait

    async def reconcile(self) -> None:
        """Redis is back: today's count is at least what this replica has seen and taken."""
        if not self._rpd:
            return
        day, left = self._day.current()
        if self._used_day != day or self._used <= 0:
            return
        count = await self._shared.run(
            self._owner.raise_script,
            (self.day_key(day),),
            (math.ceil(self._used), int(left * 1000) + _COUNT_GRACE_MS),
        )
        self.note_used(day, int(count))
