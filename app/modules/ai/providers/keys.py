"""API keys of one provider, used round-robin; a 429 rests a key, a 401 retires it."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr

from app.core.clock import Clock
from app.core.settings import mask_secret


@dataclass(slots=True, eq=False)
class ApiKey:
    """A key and its state. `label` is the masked form, safe for logs and health output."""

    index: int
    secret: str
    label: str
    resting_until: float = 0.0
    disabled: bool = False

    def __repr__(self) -> str:  # never show the secret, even in a traceback
        return f"ApiKey({self.label})"


class KeyPool:
    """Hands out the next usable key; knows when the soonest resting key wakes up."""

    def __init__(self, keys: list[SecretStr], clock: Clock) -> None:
        self._keys = [
            ApiKey(index=i, secret=key.get_secret_value(), label=f"key{i + 1}:{mask_secret(key)}")
            for i, key in enumerate(keys)
        ]
        self._clock = clock
        self._next = 0

    def __len__(self) -> int:
        return len(self._keys)

    def acquire(self, exclude: frozenset[int] = frozenset()) -> ApiKey | None:
        """The next key in turn that is neither resting, retired nor excluded."""
        now = self._clock.monotonic()
        count = len(self._keys)
        for step in range(count):
            key = self._keys[(self._next + step) % count]
            if key.disabled or key.resting_until > now or key.index in exclude:
                continue
            self._next = (key.index + 1) % count
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
        """The upstream refused this key: unusable until a restart or a key change."""
        key.disabled = True

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
