"""Guards that wrap a provider adapter from outside: keys, timeouts and (later) breakers."""

from app.modules.ai.resilience.guard import GuardedProvider, ProviderSkipped

__all__ = ["GuardedProvider", "ProviderSkipped"]
