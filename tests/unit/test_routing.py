from __future__ import annotations

import pytest

from app.core.settings import (
    AzureSettings,
    GeminiSettings,
    GroqSettings,
    OpenAISettings,
    ProviderName,
    RoutingStrategy,
    Settings,
)
from app.modules.ai.errors import UnknownModel
from app.modules.ai.pricing import PriceTable
from app.modules.ai.routing import Router

G, GE, AZ, OA = ProviderName.GROQ, ProviderName.GEMINI, ProviderName.AZURE, ProviderName.OPENAI


def _settings(**kwargs: object) -> Settings:
    return Settings(
        groq=GroqSettings(api_key="gsk-0000000000"),
        gemini=GeminiSettings(api_key="gem-0000000000"),
        azure=AzureSettings(
            api_key="az-00000000000", endpoint="http://127.0.0.1:1", deployment="dep-mini"
        ),
        openai=OpenAISettings(api_key="sk-00000000000"),
        **kwargs,  # type: ignore[arg-type]
    )


def _router(settings: Settings, latencies: dict[ProviderName, float] | None = None) -> Router:
    seen = latencies or {}
    return Router(settings, PriceTable(settings), seen.get)


def test_alias_expands_to_each_providers_chain_in_priority_order() -> None:
    routes = _router(_settings()).plan("fast")
    assert [(r.provider, r.models) for r in routes] == [
        (G, ("llama-3.1-8b-instant", "gemma2-9b-it")),
        (GE, ("gemini-1.5-flash",)),
        (AZ, ("dep-mini",)),
        (OA, ("gpt-4o-mini",)),
    ]
    quality = _router(_settings()).plan("quality")
    assert quality[0].models == ("llama-3.3-70b-versatile", "llama3-70b-8192")
    assert quality[-1].models == ("gpt-4o",)


def test_priority_setting_reorders() -> None:
    routes = _router(_settings(ai_provider_priority="openai,gemini")).plan("fast")
    assert [r.provider for r in routes] == [OA, GE]


@pytest.mark.parametrize(
    ("model", "provider", "pinned"),
    [
        ("gpt-4o-mini", OA, "gpt-4o-mini"),
        ("openai/gpt-4o-mini", OA, "gpt-4o-mini"),
        ("groq/llama-3.3-70b-versatile", G, "llama-3.3-70b-versatile"),
        ("llama-3.1-8b-instant", G, "llama-3.1-8b-instant"),
        ("gemini-1.5-pro", GE, "gemini-1.5-pro"),
        ("dep-mini", AZ, "dep-mini"),
        ("groq/openai/gpt-oss-20b", G, "openai/gpt-oss-20b"),
    ],
)
def test_concrete_name_pins_one_provider(model: str, provider: ProviderName, pinned: str) -> None:
    routes = _router(_settings()).plan(model)
    assert [(r.provider, r.models) for r in routes] == [(provider, (pinned,))]


def test_unknown_model_is_a_clear_400() -> None:
    with pytest.raises(UnknownModel) as info:
        _router(_settings()).plan("fastest")
    assert info.value.status == 400
    assert "fast" in info.value.detail


def test_cost_strategy_puts_free_groq_first_and_dear_last() -> None:
    settings = _settings(ai_provider_priority="openai,azure,gemini,groq")
    routes = _router(settings).plan("quality", RoutingStrategy.COST)
    # groq free; gemini-1.5-flash 0.375; azure (gpt-4o-mini) 0.75; gpt-4o 12.5
    assert [r.provider for r in routes] == [G, GE, AZ, OA]


def test_latency_strategy_prefers_fastest_seen_and_puts_unknown_last() -> None:
    routes = _router(_settings(), {OA: 0.2, GE: 0.05}).plan("fast", RoutingStrategy.LATENCY)
    assert [r.provider for r in routes] == [GE, OA, G, AZ]


def test_quality_strategy() -> None:
    routes = _router(_settings()).plan("quality", RoutingStrategy.QUALITY)
    assert routes[0].provider is OA


def test_balanced_strategy_is_a_permutation_and_deterministic() -> None:
    router = _router(_settings(), {G: 0.5, GE: 0.1, AZ: 0.3, OA: 0.2})
    first = router.plan("fast", RoutingStrategy.BALANCED)
    assert sorted(r.provider for r in first) == sorted([G, GE, AZ, OA])
    assert first == router.plan("fast", RoutingStrategy.BALANCED)
