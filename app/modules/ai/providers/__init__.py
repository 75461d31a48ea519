"""Upstream adapters, one per wire format, and the API keys they use."""

from app.modules.ai.providers.base import ProviderAdapter
from app.modules.ai.providers.keys import ApiKey, KeyPool
from app.modules.ai.providers.registry import build_adapter

__all__ = ["ApiKey", "KeyPool", "ProviderAdapter", "build_adapter"]
