"""What `GET /v1/models` lists: every name the gateway can route, as OpenAI lists models.

The aliases first (they route to every configured provider), then, for each configured
provider in priority order, `provider/model` for the models of its alias chains and the
priced models of its family (a pinned `openai/gpt-4.1` routes when the price table has it).
A model the gateway would refuse (a paid model without a price, unless
AI_ALLOW_UNPRICED_MODELS) is not listed. Azure routes only its deployment. Built once at
start: the settings and the price table do not change while the process runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.core.clock import Clock
from app.core.settings import ProviderName, Settings
from app.modules.ai.pricing import MODEL_FAMILIES, PriceTable
from app.modules.ai.routing import ALIASES

GATEWAY_OWNER = "literature-ai-gateway"


@dataclass(frozen=True, slots=True)
class ListedModel:
    id: str
    created: int
    owned_by: str


class ModelCatalog:
    """The routable names, in the order `GET /v1/models` lists them."""

    def __init__(self, settings: Settings, prices: PriceTable, clock: Clock) -> None:
        created = int(clock.now().timestamp())
        configured = [
            name for name in settings.ai_provider_priority if settings.provider(name).configured
        ]
        listed = [ListedModel(alias, created, GATEWAY_OWNER) for alias in ALIASES]
        listed += [
            ListedModel(f"{name.value}/{model}", created, name.value)
            for name in configured
            for model in self._routable(settings, prices, name)
        ]
        self._listed = tuple(listed) if configured else ()
        self._by_id = {model.id: model for model in self._listed}

    @staticmethod
    def _routable(settings: Settings, prices: PriceTable, name: ProviderName) -> list[str]:
        section = settings.provider(name)
        chain = section.models_for("fast") + section.models_for("quality")
        family = MODEL_FAMILIES[name] if name is not ProviderName.AZURE else ()
        priced = sorted(m for m in prices.models() if family and m.startswith(family))
        return [m for m in dict.fromkeys(chain + priced) if prices.quote(name, m) is not None]

    def all(self) -> tuple[ListedModel, ...]:
        return self._listed

    def find(self, model: str) -> ListedModel | None:
        """The listed model `model` names: its id, or a bare model name served by a
        provider (the first in priority order), listed under the name asked for."""
        found = self._by_id.get(model)
        if found is not None:
            return found
        for listed in self._listed:
            if listed.owned_by != GATEWAY_OWNER and listed.id.split("/", 1)[1] == model:
                return ListedModel(model, listed.created, listed.owned_by)
        return None
