"""Resilience primitives any module may use around its outbound calls: an asyncio circuit
breaker on pybreaker, token-bucket rate limits, and a call's bounds (whose time ran out)."""

from app.core.resilience.bounds import Bound, CallBounds
from app.core.resilience.breaker import AsyncCircuitBreaker, BreakerState, Ticket
from app.core.resilience.ratelimit import RateLimiter, TokenBucket, Unlimited, make_limiter

__all__ = [
    "AsyncCircuitBreaker",
    "Bound",
    "BreakerState",
    "CallBounds",
    "RateLimiter",
    "Ticket",
    "TokenBucket",
    "Unlimited",
    "make_limiter",
]
