"""API keys of one provider, used round-robin; a 429 rests a key, a 401/403 retires it until
the health probe finds the provider accepting it again.

`KeyPool` keeps that state in this process (the embedded default). With Redis,
`shared_keys.SharedKeyPool` keeps the same local state (the hot path reads only memory) and
shares every rest, retirement and restoration with the other replicas.

Keys rotate without a restart (`KeyPool.reload`, driven by app.modules.ai.key_files): new
keys join the rotation for the next call, a kept key keeps its state, and a removed key
leaves the rotation at once while the calls already holding it finish with it (a call holds
its `ApiKey`, secret included, until it ends)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pydantic import SecretStr

from app.core.clock import Clock
from app.core.resilience.ratelimit import Limiter
from app.core.settings import mask_secret


class KeyState(StrEnum):
    """What health output and the key-state gauge show for a key."""

    ACTIVE = "active"
    RESTING = "resting"  # after a 429, until its Retry-After
    RETIRED = "retired"  # after a 401/403, until a probe with it is accepted


def key_id(secret: str) -> str:
    """A short, stable name for a key that reveals nothing usable: the first 8 hex digits of
    its SHA-256. Safe for health output, logs and metric labels (bounded by configured keys)."""
    return hashlib.sha256(secret.encode()).hexdigest()[:8]


@dataclass(slots=True, eq=False)
class ApiKey:
    """A key and its state. `label` is the masked form and `id` the short hash, both safe for
    logs and health output; `secret` never leaves the adapter's request headers."""

    index: int
    secret: str
    label: str
    id: str = ""
    resting_until: float = 0.0
    disabled: bool = False
    # When the upstream refused it (wall time, for health output), and when it was refused
    # or last re-checked by a probe (monotonic): re-checked at most once per interval.
    retired_at: datetime | None = None
    checked_at: float = 0.0
    # The shared state's version this key last took (Redis microseconds; 0: never shared),
    # so a late or repeated message never undoes a newer change.
    version: int = 0
    # The key's own rate limiter when it joined by `KeyPool.reload`; the keys configured at
    # start have theirs in the guard, by `index`.
    limiter: Limiter | None = None

    def __repr__(self) -> str:  # never show the secret, even in a traceback
        return f"ApiKey({self.label})"


@dataclass(frozen=True, slots=True)
class KeyChange:
    """What a reload did: key ids added and removed (short hashes, safe to log)."""

    added: tuple[str, ...]
    removed: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


class KeyPool:
    """Hands out the next usable key; knows when the soonest resting key wakes up."""

    def __init__(self, keys: list[SecretStr], clock: Clock) -> None:
        self._keys = [self._make(i, key) for i, key in enumerate(keys)]
        self._clock = clock
        self._next = 0  # a position in `_keys`
        self._made = len(self._keys)  # indices are never reused: limiters are found by them
        # Makes the rate limiter of a key that joins by `reload` (its id); set by the wiring.
        self.new_limiter: Callable[[str], Limiter] | None = None

    @staticmethod
    def _make(index: int, key: SecretStr) -> ApiKey:
        return ApiKey(
            index=index,
            secret=key.get_secret_value(),
            label=f"key{index + 1}:{mask_secret(key)}",
            id=key_id(key.get_secret_value()),
        )

    def reload(self, keys: list[SecretStr]) -> KeyChange:
        """Take a new key list: kept keys keep their state (rest, retirement) and order, new
        ones join with a limiter of their own, removed ones leave the rotation now and are
        dropped once the calls holding them end. An empty list is refused (ValueError): a
        provider without keys is a configuration change, not a rotation."""
        wanted = [k.get_secret_value() for k in keys]
        if not wanted:
            raise ValueError("a key reload needs at least one key")
        current = {key.secret: key for key in self._keys}
        fresh: list[ApiKey] = []
        for secret, key in zip(wanted, keys, strict=True):
            if secret in current:
                fresh.append(current.pop(secret))
                continue
            if any(k.secret == secret for k in fresh):
                continue  # listed twice
            added = self._make(self._made, key)
            self._made += 1
            if self.new_limiter is not None:
                added.limiter = self.new_limiter(added.id)
            fresh.append(added)
        before = {key.id for key in self._keys}
        self._keys = fresh
        self._next = 0
        self._changed()
        return KeyChange(
            added=tuple(k.id for k in fresh if k.id not in before),
            removed=tuple(k.id for k in current.values()),
        )

    def _changed(self) -> None:
        """Hook for subclasses whose indexes follow the key list."""

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[ApiKey]:
        """Every key in configuration order (for health output; do not change them)."""
        return iter(tuple(self._keys))

    def acquire(self, exclude: frozenset[int] = frozenset()) -> ApiKey | None:
        """The next key in turn that is neither resting, retired nor excluded."""
        now = self._clock.monotonic()
        keys = self._keys
        count = len(keys)
        for step in range(count):
            position = (self._next + step) % count
            key = keys[position]
            if key.disabled or key.resting_until > now or key.index in exclude:
                continue
            self._next = (position + 1) % count
            return key
        return None

    def peek(self) -> ApiKey | None:
        """A usable key for a free probe, without moving the round-robin turn."""
        now = self._clock.monotonic()
        usable = [k for k in self._keys if not k.disabled]
        free = [k for k in usable if k.resting_until <= now]
        candidates = free or usable
        return candidates[0] if candidates else None

    def rest(self, key: ApiKey, seconds: float) -> None:
        key.resting_until = max(key.resting_until, self._clock.monotonic() + seconds)

    def retire(self, key: ApiKey) -> None:
        """The upstream refused this key: unusable until a probe with it is accepted
        (`restore`). A refusal can be a blip on the provider's side, so it is not final."""
        if not key.disabled:
            key.disabled = True
            key.retired_at = self._clock.now()
            key.checked_at = self._clock.monotonic()

    def restore(self, key: ApiKey) -> None:
        """A probe with this retired key was accepted: back in the rotation."""
        key.disabled = False
        key.retired_at = None

    def due_for_recheck(self, interval_s: float) -> list[ApiKey]:
        """Retired keys refused or last re-checked at least `interval_s` ago (on the injected
        clock); marks them checked now, so a key the provider keeps refusing costs it one free
        call per interval at most, and one just refused is not asked again at once."""
        now = self._clock.monotonic()
        due = [k for k in self._keys if k.disabled and now >= k.checked_at + interval_s]
        for key in due:
            key.checked_at = now
        return due

    def state(self, key: ApiKey) -> KeyState:
        if key.disabled:
            return KeyState.RETIRED
        if key.resting_until > self._clock.monotonic():
            return KeyState.RESTING
        return KeyState.ACTIVE

    def available(self) -> int:
        now = self._clock.monotonic()
        return sum(1 for key in self._keys if not key.disabled and key.resting_until <= now)

    def usable(self) -> int:
        """Keys not retired (some may be resting)."""
        return sum(1 for key in self._keys if not key.disabled)

    def wake_in(self) -> float | None:
        """Seconds until a resting key can be used again, or None if none will."""
        now = self._clock.monotonic()
        waits = [k.resting_until - now for k in self._keys if not k.disabled]
        if not waits:
            return None
        return max(0.0, min(waits))
