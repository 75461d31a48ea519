"""Which adapter speaks for which provider, built from settings at start."""

from __future__ import annotations

from app.core.http import make_upstream_client
from app.core.settings import AzureSettings, ProviderName, Settings
from app.modules.ai.providers.azure_openai import AzureOpenAIAdapter
from app.modules.ai.providers.base import ProviderAdapter
from app.modules.ai.providers.gemini import GeminiAdapter
from app.modules.ai.providers.openai_compatible import OpenAICompatibleAdapter


def build_adapter(name: ProviderName, settings: Settings) -> ProviderAdapter:
    """One adapter, with its own HTTP client, for a configured provider."""
    section = settings.provider(name)
    if isinstance(section, AzureSettings):
        client = make_upstream_client(section.endpoint, max_connections=section.max_connections)
        return AzureOpenAIAdapter(client, api_version=section.api_version)
    client = make_upstream_client(section.base_url, max_connections=section.max_connections)
    if name is ProviderName.GEMINI:
        return GeminiAdapter(client)
    return OpenAICompatibleAdapter(name, client)
