"""Resilience primitives any module may use around its outbound calls: an asyncio circuit
breaker on pybreaker, and token-bucket rate limits."""

from app.core.resilience.breaker import AsyncCircuitBreaker, BreakerState, Ticket
from app.core.resilience.ratelimit import RateLimiter, TokenBucket, Unlimited, make_limiter

__all__ = [
    "AsyncCircuitBreaker",
    "BreakerState",
    "RateLimiter",
    "Ticket",
    "TokenBucket",
    "Unlimited",
    "make_limiter",
]
