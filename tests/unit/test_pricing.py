from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core.settings import (
    DEFAULT_PRICES,
    AzureSettings,
    GroqSettings,
    ModelPrice,
    OpenAISettings,
    ProviderName,
    Settings,
)
from app.modules.ai.errors import UnpricedModel
from app.modules.ai.pricing import FREE, PriceTable, Quote

OA, GE, AZ, G = ProviderName.OPENAI, ProviderName.GEMINI, ProviderName.AZURE, ProviderName.GROQ


@pytest.mark.parametrize(
    ("provider", "model", "prompt", "completion", "usd"),
    [
        (ProviderName.OPENAI, "gpt-4o-mini", 1_000_000, 1_000_000, 0.75),
        (ProviderName.OPENAI, "gpt-4o", 1000, 500, 0.0075),
        (ProviderName.OPENAI, "gpt-3.5-turbo", 2_000, 1_000, 0.0025),
        (ProviderName.OPENAI, "gpt-4-turbo", 100, 100, 0.004),
        (ProviderName.GEMINI, "gemini-1.5-flash", 10_000, 2_000, 0.00135),
        (ProviderName.GROQ, "llama-3.3-70b-versatile", 10**6, 10**6, 0.0),
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


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        (OA, "gpt-4o-2024-08-06"),
        (OA, "o1"),
        (AZ, "another-deployment"),
        (GE, "gemini-1.5-pro"),
    ],
)
def test_an_unpriced_paid_model_is_refused_never_free(provider: ProviderName, model: str) -> None:
    table = PriceTable(Settings())
    assert table.price(provider, model) is None
    assert table.quote(provider, model) is None
    with pytest.raises(UnpricedModel) as info:
        table.cost(provider, model, 1000, 1000)
    assert info.value.status == 404
    assert info.value.type_uri.endswith("/unpriced-model")
    assert "AI_PRICING_FILE" in info.value.detail
    assert "AI_ALLOW_UNPRICED_MODELS" in info.value.detail


def test_only_the_table_says_free() -> None:
    settings = Settings(
        ai_prices={"gpt-free-preview": ModelPrice(input=0, output=0)},
        ai_allow_unpriced_models=True,
    )
    table = PriceTable(settings)
    # Priced 0 in the table: free, and not an estimate.
    assert table.quote(OA, "gpt-free-preview") == Quote(FREE)
    # A free-tier provider (AI_FREE_PROVIDERS): free whatever the model.
    assert table.quote(G, "any-model-at-all") == Quote(FREE)
    # Absent from the table on a paid provider: never free, even when allowed.
    unpriced = table.quote(OA, "gpt-new")
    assert unpriced is not None
    assert unpriced.estimated
    assert unpriced.price.input > 0
    assert unpriced.price.output > 0


def test_a_provider_taken_off_the_free_tier_is_paid() -> None:
    table = PriceTable(Settings(ai_free_providers=[]))
    assert table.quote(G, "llama-3.1-8b-instant") is None


def test_worst_price_is_the_providers_input_and_output_maxima() -> None:
    # The dearest input and the dearest output come from different models: each is taken.
    settings = Settings(
        ai_prices={
            "gpt-cheap-in": ModelPrice(input=40, output=1),
            "gpt-cheap-out": ModelPrice(input=1, output=90),
            "gemini-ultra": ModelPrice(input=7, output=21),
        }
    )
    table = PriceTable(settings)
    assert table.worst_price(OA) == ModelPrice(input=40, output=90)
    assert table.worst_price(AZ) == ModelPrice(input=40, output=90)  # Azure runs gpt-*
    assert table.worst_price(GE) == ModelPrice(input=7, output=21)


def test_worst_price_with_the_default_table() -> None:
    table = PriceTable(Settings())
    assert table.worst_price(OA) == ModelPrice(input=10, output=30)  # gpt-4-turbo
    assert table.worst_price(GE) == DEFAULT_PRICES["gemini-1.5-flash"]


def test_worst_price_counts_the_providers_configured_models() -> None:
    settings = Settings(
        ai_free_providers=[],
        ai_prices={"llama-3.3-70b-versatile": ModelPrice(input=0.59, output=0.79)},
    )
    # Groq's own priced chain model is its worst known price, not the whole table's.
    assert PriceTable(settings).worst_price(G) == ModelPrice(input=0.59, output=0.79)


def test_a_provider_with_no_priced_model_gets_the_whole_tables_maxima() -> None:
    table = PriceTable(Settings(ai_free_providers=[]))
    assert table.worst_price(G) == ModelPrice(input=10, output=30)


def test_allowed_unpriced_models_are_booked_at_the_worst_price() -> None:
    table = PriceTable(Settings(ai_allow_unpriced_models=True))
    quote = table.quote(OA, "o1")
    assert quote == Quote(ModelPrice(input=10, output=30), estimated=True)
    assert table.cost(OA, "o1", 10**6, 10**6) == pytest.approx(40.0)
    assert table.cost(GE, "gemini-1.5-pro", 10**6, 10**6) == pytest.approx(0.375)


def test_unpriced_chain_models_are_named_at_start(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(openai=OpenAISettings(quality_models=["gpt-4o", "gpt-5"]))
    with caplog.at_level(logging.WARNING, logger="app.ai.pricing"):
        table = PriceTable(settings)
    assert table.unpriced_chain_models() == [(OA, "gpt-5")]
    assert "gpt-5" in caplog.text
    assert "AI_PRICING_FILE" in caplog.text


def test_free_provider_chains_are_never_unpriced() -> None:
    settings = Settings(groq=GroqSettings(fast_models=["brand-new-model"]))
    assert PriceTable(settings).unpriced_chain_models() == []


_names = st.text(
    alphabet=st.characters(codec="ascii", categories=["L", "N"], include_characters="-._:"),
    min_size=1,
    max_size=40,
).filter(lambda name: name not in DEFAULT_PRICES)


@given(
    model=_names,
    provider=st.sampled_from([OA, GE, AZ]),
    prompt=st.integers(1, 10**6),
    completion=st.integers(1, 10**6),
)
def test_no_unpriced_paid_model_ever_costs_zero(
    model: str, provider: ProviderName, prompt: int, completion: int
) -> None:
    assert PriceTable(Settings()).quote(provider, model) is None
    allowed = PriceTable(Settings(ai_allow_unpriced_models=True))
    quote = allowed.quote(provider, model)
    assert quote is not None
    assert quote.estimated
    assert allowed.cost(provider, model, prompt, completion) > 0
    worst = allowed.worst_price(provider)
    assert worst is not None
    assert quote.price == worst
