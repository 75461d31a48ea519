"""Identifiers for requests, completions and ledger rows.

They only need to be unique, not secret: 128 bits from a generator seeded from the OS at start
and re-seeded in a forked child cost a fifth of `uuid4` (one syscall each). The generator is
our own, not the `random` module's shared one, which anything in the process may re-seed
(hypothesis does, for every example): two ledger rows must never get the same id because of it.
"""

from __future__ import annotations

import os
import random

_ids = random.Random()  # noqa: S311 - unique ids, not secrets; seeded from os.urandom
os.register_at_fork(after_in_child=_ids.seed)


def random_hex() -> str:
    """32 lowercase hex digits."""
    return f"{_ids.getrandbits(128):032x}"
