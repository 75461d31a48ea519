"""Which providers and models a request tries, in which order.

An alias (`fast`, `quality`) expands to every configured provider's model chain, ordered by a
strategy; a concrete model name pins one provider and one model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from app.core.model_names import RULE, model_id_problem
from app.core.settings import ProviderName, RoutingStrategy, Settings
from app.modules.ai.errors import InvalidModelName, UnknownModel
from app.modules.ai.pricing import MODEL_FAMILIES, PriceTable

ALIASES = ("fast", "quality")

# Relative answer quality of each provider's models, for the `quality` and `balanced`
# strategies (higher is better). Coarse on purpose: it only orders providers.
QUALITY_RANK: dict[ProviderName, dict[str, int]] = {
    ProviderName.OPENAI: {"fast": 3, "quality": 4},
    ProviderName.AZURE: {"fast": 3, "quality": 3},
    ProviderName.GEMINI: {"fast": 2, "quality": 2},
    ProviderName.GROQ: {"fast": 1, "quality": 3},
}


@dataclass(frozen=True, slots=True)
class Route:
    provider: ProviderName
    models: tuple[str, ...]


_PROVIDER_NAMES = frozenset(p.value for p in ProviderName)

LatencyLookup = Callable[[ProviderName], float | None]


class Router:
    def __init__(self, settings: Settings, prices: PriceTable, latency: LatencyLookup) -> None:
        self._settings = settings
        self._prices = prices
        self._latency = latency
        self._priority = list(settings.ai_provider_priority)
        self._known = {
            name: frozenset(
                settings.provider(name).models_for("fast")
                + settings.provider(name).models_for("quality")
            )
            for name in ProviderName
        }

        # An alias's routes in priority order never change: built once, here.
        self._alias_routes = {
            alias: [
                route
                for route in (
                    Route(name, tuple(settings.provider(name).models_for(alias)))
                    for name in self._priority
                )
                if route.models
            ]
            for alias in ALIASES
        }

    def plan(self, model: str, strategy: RoutingStrategy | None = None) -> list[Route]:
        """The routes to try, in order; a fresh list the caller may keep."""
        routes = self._alias_routes.get(model)
        if routes is not None:
            return self._order(routes, model, strategy or self._settings.ai_routing_strategy)
        return [self._checked(self._pin(model))]

    def _checked(self, route: Route) -> Route:
        """A pinned name may reach the provider's URL path (Gemini, Azure): refuse it unless it
        is a well-formed id for that provider. The request edge checks the same rule first;
        this covers every caller of the service (the literature module too)."""
        provider = route.provider
        nested = self._settings.provider(provider).nested_model_ids
        for model in route.models:
            problem = model_id_problem(model, nested=nested)
            if problem is not None:
                raise InvalidModelName(
                    f"the {provider.value} model name {problem}: use {RULE}"
                    + (", with at most one '/'" if nested else ", with no '/'")
                )
        return route

    def _pin(self, model: str) -> Route:
        prefix, _, rest = model.partition("/")
        if rest and prefix in _PROVIDER_NAMES:
            return Route(ProviderName(prefix), (rest,))
        for name in self._priority:
            if model in self._known[name]:
                return Route(name, (model,))
        if self._settings.azure.deployment and model == self._settings.azure.model:
            return Route(ProviderName.AZURE, (self._settings.azure.deployment,))
        if model.startswith(MODEL_FAMILIES[ProviderName.OPENAI]):
            return Route(ProviderName.OPENAI, (model,))
        if model.startswith(MODEL_FAMILIES[ProviderName.GEMINI]):
            return Route(ProviderName.GEMINI, (model,))
        raise UnknownModel(
            f"unknown model {model!r}: use an alias ({', '.join(ALIASES)}), a model name such "
            "as 'gpt-4o-mini', or 'provider/model' with provider one of "
            + ", ".join(p.value for p in ProviderName)
        )

    def _order(self, routes: list[Route], alias: str, strategy: RoutingStrategy) -> list[Route]:
        if strategy is RoutingStrategy.PRIORITY:
            return list(routes)
        position = {route.provider: i for i, route in enumerate(routes)}

        def cost(route: Route) -> float:
            return self._prices.blended(route.provider, route.models[0])

        def latency(route: Route) -> float:
            seen = self._latency(route.provider)
            return seen if seen is not None else float("inf")

        def quality(route: Route) -> int:
            return -QUALITY_RANK[route.provider][alias]

        if strategy is RoutingStrategy.COST:
            return sorted(routes, key=lambda r: (cost(r), position[r.provider]))
        if strategy is RoutingStrategy.LATENCY:
            return sorted(routes, key=lambda r: (latency(r), position[r.provider]))
        if strategy is RoutingStrategy.QUALITY:
            return sorted(routes, key=lambda r: (quality(r), position[r.provider]))
        # balanced: the sum of each route's rank under the three other strategies.
        ranks: dict[ProviderName, int] = dict.fromkeys(position, 0)
        for key in (cost, latency, quality):
            for rank, route in enumerate(sorted(routes, key=key)):
                ranks[route.provider] += rank
        return sorted(routes, key=lambda r: (ranks[r.provider], position[r.provider]))
