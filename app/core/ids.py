"""Identifiers for requests, completions and ledger rows.

They only need to be unique, not secret: 128 bits from the stdlib's generator, seeded from
the OS at start and re-seeded in a forked child, cost a fifth of `uuid4` (one syscall each).
"""

from __future__ import annotations

import random


def random_hex() -> str:
    """32 lowercase hex digits."""
    return f"{random.getrandbits(128):032x}"
