"""Cost from real token counts, with a default price table that settings can override.

Money is never free by default. Free is only what the table says: a free-tier provider
(AI_FREE_PROVIDERS, Groq by default) whatever the model, or a model the table prices at 0.
A paid provider's model missing from the table is *unpriced*: it is refused before any
upstream call, unless AI_ALLOW_UNPRICED_MODELS is set, in which case it is reserved and booked
at the provider's worst known price (see `PriceTable.worst_price`) and flagged as estimated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from app.core.settings import AzureSettings, ModelPrice, ProviderName, Settings
from app.modules.ai.errors import UnpricedModel

log = logging.getLogger("app.ai.pricing")

FREE = ModelPrice(input=0.0, output=0.0)
TOKENS_PER_PRICE_UNIT = 1_000_000
PRICE_SETTINGS = "AI_PRICING_FILE or AI_PRICES"

# Model-name prefixes each provider serves, as OpenAI and Google name their models. The router
# pins a bare name by them; the worst-price rule counts the table's models of a provider by them.
MODEL_FAMILIES: dict[ProviderName, tuple[str, ...]] = {
    ProviderName.OPENAI: ("gpt-", "o1", "o3", "o4"),
    ProviderName.AZURE: ("gpt-", "o1", "o3", "o4"),  # Azure deploys OpenAI's models
    ProviderName.GEMINI: ("gemini-",),
    ProviderName.GROQ: (),
}


@dataclass(frozen=True, slots=True)
class Quote:
    """The price a call is reserved and booked at. `estimated`: the model has no price of its
    own and is charged the provider's worst known price (AI_ALLOW_UNPRICED_MODELS)."""

    price: ModelPrice
    estimated: bool = False

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        usd = (prompt_tokens * self.price.input + completion_tokens * self.price.output) / (
            TOKENS_PER_PRICE_UNIT
        )
        return round(usd, 10)


class PriceTable:
    """USD per 1M tokens by model; free-tier providers cost nothing whatever the model."""

    def __init__(self, settings: Settings) -> None:
        self._prices = settings.prices()
        self._free = frozenset(settings.ai_free_providers)
        self._azure: AzureSettings = settings.azure
        self._allow_unpriced = settings.ai_allow_unpriced_models
        self._chains = {
            name: tuple(
                dict.fromkeys(
                    settings.provider(name).models_for("fast")
                    + settings.provider(name).models_for("quality")
                )
            )
            for name in ProviderName
        }
        self._worst = {name: self._worst_known(name) for name in ProviderName}
        for name, model in self.unpriced_chain_models():
            log.warning(
                "no price for %s model %r in its fast/quality chain: %s (set its price in %s%s)",
                name.value,
                model,
                "booked at the provider's worst known price"
                if self._allow_unpriced
                else "it is skipped",
                PRICE_SETTINGS,
                "" if self._allow_unpriced else ", or AI_ALLOW_UNPRICED_MODELS=true",
            )

    def models(self) -> frozenset[str]:
        """Every model the table prices."""
        return frozenset(self._prices)

    def price(self, provider: ProviderName, model: str) -> ModelPrice | None:
        """The table's own price, or None when the model is unpriced (its cost is unknown)."""
        if provider in self._free:
            return FREE
        if provider is ProviderName.AZURE and model == self._azure.deployment:
            model = self._azure.model
        return self._prices.get(model)

    def worst_price(self, provider: ProviderName) -> ModelPrice | None:
        """The provider's most expensive known price: the highest input price and, separately,
        the highest output price over the table's prices of the models the provider is known
        to serve (its configured fast and quality models, Azure's deployment as the model it
        runs, and every priced model of its family in MODEL_FAMILIES). A provider with none
        of those gets the maxima over the whole table. None only for an empty table."""
        return self._worst[provider]

    def quote(self, provider: ProviderName, model: str) -> Quote | None:
        """The price to reserve and book a call at, or None when the call must be refused:
        the model is unpriced and AI_ALLOW_UNPRICED_MODELS is false."""
        price = self.price(provider, model)
        if price is not None:
            return Quote(price)
        worst = self._worst[provider] if self._allow_unpriced else None
        return Quote(worst, estimated=True) if worst is not None else None

    def refusal(self, provider: ProviderName, model: str) -> UnpricedModel:
        """What the caller is told when `quote` is None."""
        return UnpricedModel(
            f"{provider.value} model {model!r} has no price, and the gateway never books a paid "
            f"model as free: add its price to the price table ({PRICE_SETTINGS}), or set "
            "AI_ALLOW_UNPRICED_MODELS=true to book it at the provider's most expensive known "
            "price"
        )

    def cost(
        self, provider: ProviderName, model: str, prompt_tokens: int, completion_tokens: int
    ) -> float:
        """The call's cost at its quote; an unpriced model is never costed at 0 but refused
        (UnpricedModel), which the service does before any upstream call."""
        quote = self.quote(provider, model)
        if quote is None:
            raise self.refusal(provider, model)
        return quote.cost(prompt_tokens, completion_tokens)

    def blended(self, provider: ProviderName, model: str) -> float:
        """One number to rank models by cost: input and output weighted equally."""
        price = self.price(provider, model)
        if price is None:
            return float("inf")
        return price.input + price.output

    def unpriced_chain_models(self) -> list[tuple[ProviderName, str]]:
        """Models of the configured alias chains (fast, quality) that the table does not price:
        the service skips them (or books them at the worst price when allowed)."""
        return [
            (name, model)
            for name, chain in self._chains.items()
            for model in chain
            if self.price(name, model) is None
        ]

    def _worst_known(self, provider: ProviderName) -> ModelPrice | None:
        # Azure's chain is its deployment, which runs (and is priced as) AZURE_OPENAI_MODEL.
        served = {self._azure.model} if provider is ProviderName.AZURE else set()
        served.update(self._chains[provider])
        family = MODEL_FAMILIES[provider]
        known = [
            price
            for model, price in self._prices.items()
            if model in served or (family and model.startswith(family))
        ] or list(self._prices.values())
        if not known:
            return None
        return ModelPrice(input=max(p.input for p in known), output=max(p.output for p in known))
