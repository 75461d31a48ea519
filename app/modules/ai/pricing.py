"""Cost from real token counts, with a default price table that settings can override."""

from __future__ import annotations

from app.core.settings import AzureSettings, ModelPrice, ProviderName, Settings

FREE = ModelPrice(input=0.0, output=0.0)
TOKENS_PER_PRICE_UNIT = 1_000_000


class PriceTable:
    """USD per 1M tokens by model; free-tier providers cost nothing whatever the model."""

    def __init__(self, settings: Settings) -> None:
        self._prices = settings.prices()
        self._free = frozenset(settings.ai_free_providers)
        self._azure: AzureSettings = settings.azure

    def models(self) -> frozenset[str]:
        """Every model the table prices."""
        return frozenset(self._prices)

    def price(self, provider: ProviderName, model: str) -> ModelPrice | None:
        """The price, or None when the model is unknown (its cost cannot be stated)."""
        if provider in self._free:
            return FREE
        if provider is ProviderName.AZURE and model == self._azure.deployment:
            model = self._azure.model
        return self._prices.get(model)

    def cost(
        self, provider: ProviderName, model: str, prompt_tokens: int, completion_tokens: int
    ) -> float:
        """Unknown models are priced at 0 rather than guessed; check-config lists them."""
        price = self.price(provider, model)
        if price is None:
            return 0.0
        usd = (prompt_tokens * price.input + completion_tokens * price.output) / (
            TOKENS_PER_PRICE_UNIT
        )
        return round(usd, 10)

    def blended(self, provider: ProviderName, model: str) -> float:
        """One number to rank models by cost: input and output weighted equally."""
        price = self.price(provider, model)
        if price is None:
            return float("inf")
        return price.input + price.output
