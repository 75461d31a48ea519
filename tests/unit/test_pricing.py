from __future__ import annotations

import pytest

from app.core.settings import AzureSettings, ModelPrice, ProviderName, Settings
from app.modules.ai.pricing import PriceTable


@pytest.mark.parametrize(
    ("provider", "model", "prompt", "completion", "usd"),
    [
        (ProviderName.OPENAI, "gpt-4o-mini", 1_000_000, 1_000_000, 0.75),
        (ProviderName.OPENAI, "gpt-4o", 1000, 500, 0.0075),
        (ProviderName.OPENAI, "gpt-3.5-turbo", 2_000, 1_000, 0.0025),
        (ProviderName.OPENAI, "gpt-4-turbo", 100, 100, 0.004),
        (ProviderName.GEMINI, "gemini-1.5-flash", 10_000, 2_000, 0.00135),
        (ProviderName.GROQ, "llama-3.3-70b-versatile", 10**6, 10**6, 0.0),
        (ProviderName.OPENAI, "unknown-model", 10**6, 10**6, 0.0),
    ],
)
def test_cost_from_token_counts(
    provider: ProviderName, model: str, prompt: int, completion: int, usd: float
) -> None:
    assert PriceTable(Settings()).cost(provider, model, prompt, completion) == pytest.approx(usd)


def test_azure_deployment_is_priced_as_its_model() -> None:
    settings = Settings(azure=AzureSettings(deployment="prod", model="gpt-4o"))
    assert PriceTable(settings).cost(ProviderName.AZURE, "prod", 10**6, 0) == pytest.approx(2.5)


def test_settings_override_prices() -> None:
    settings = Settings(ai_prices={"gpt-4o-mini": ModelPrice(input=1, output=2)})
    assert PriceTable(settings).cost(ProviderName.OPENAI, "gpt-4o-mini", 10**6, 10**6) == 3.0
