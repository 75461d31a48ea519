"""What each simulated upstream knows about: accepted API keys and served models.

The catalog is the sandbox's notion of "account state" at the provider: which keys
are valid and which models (or Azure deployments) exist.  It is deliberately plain
data so tests can override it from the CLI (``--keys-json``/``--models-json``) or
the environment (``SANDBOX_KEYS``/``SANDBOX_MODELS``) without touching code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal, get_args

if TYPE_CHECKING:
    from collections.abc import Mapping

Provider = Literal["groq", "openai", "azure", "gemini"]
PROVIDERS: Final[tuple[Provider, ...]] = get_args(Provider)

DEFAULT_KEYS: Final[dict[Provider, tuple[str, ...]]] = {
    "groq": ("gsk-sandbox-1", "gsk-sandbox-2", "gsk-sandbox-3"),
    "openai": ("sk-sandbox-openai",),
    "azure": ("azure-sandbox-key",),
    "gemini": ("gemini-sandbox-key",),
}

DEFAULT_MODELS: Final[dict[Provider, tuple[str, ...]]] = {
    "groq": (
        "llama-3.1-8b-instant",
        "gemma2-9b-it",
        "llama-3.3-70b-versatile",
        "llama3-70b-8192",
    ),
    "openai": ("gpt-4o-mini", "gpt-4o", "gpt-3.5-turbo", "gpt-4-turbo"),
    "gemini": ("gemini-1.5-flash", "gemini-1.5-pro", "gemini-2.0-flash"),
    # Azure serves *deployments*; the value is deployment -> underlying model below.
    "azure": ("gpt-4o-mini",),
}

# Azure deployment name -> model it serves (what Azure echoes back as ``model``).
DEFAULT_AZURE_DEPLOYMENTS: Final[dict[str, str]] = {"gpt-4o-mini": "gpt-4o-mini"}

# Models Groq has really retired; they answer 400 ``model_decommissioned`` even
# without chaos so a gateway pinned to an old name sees the real failure mode.
DEFAULT_RETIRED: Final[dict[Provider, tuple[str, ...]]] = {
    "groq": ("mixtral-8x7b-32768", "llama-3.1-70b-versatile", "llama2-70b-4096"),
    "openai": (),
    "azure": (),
    "gemini": (),
}


@dataclass(slots=True)
class Catalog:
    """Keys and models per provider. Mutable only through :func:`load_catalog`."""

    keys: dict[Provider, frozenset[str]] = field(
        default_factory=lambda: {p: frozenset(v) for p, v in DEFAULT_KEYS.items()}
    )
    models: dict[Provider, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_MODELS))
    azure_deployments: dict[str, str] = field(
        default_factory=lambda: dict(DEFAULT_AZURE_DEPLOYMENTS)
    )
    retired: dict[Provider, frozenset[str]] = field(
        default_factory=lambda: {p: frozenset(v) for p, v in DEFAULT_RETIRED.items()}
    )

    def key_ok(self, provider: Provider, key: str | None) -> bool:
        """True when ``key`` is one the provider accepts."""
        return key is not None and key in self.keys[provider]

    def has_model(self, provider: Provider, model: str) -> bool:
        """True when the provider serves ``model`` (Azure: a deployment name)."""
        if provider == "azure":
            return model in self.azure_deployments
        return model in self.models[provider]

    def served_model(self, provider: Provider, model: str) -> str:
        """Name echoed back in responses (Azure: the deployment's model)."""
        if provider == "azure":
            return self.azure_deployments.get(model, model)
        return model


def _as_mapping(raw: str | Mapping[str, object] | None, what: str) -> dict[str, object]:
    if raw is None or raw == "":
        return {}
    data = json.loads(raw) if isinstance(raw, str) else dict(raw)
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a JSON object keyed by provider")
    unknown = set(data) - set(PROVIDERS)
    if unknown:
        raise ValueError(f"{what}: unknown provider(s) {sorted(unknown)}")
    return data


def _str_list(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what} must be a list of strings")
    return tuple(value)


def load_catalog(
    keys: str | Mapping[str, object] | None = None,
    models: str | Mapping[str, object] | None = None,
) -> Catalog:
    """Build a catalog from defaults, then env (``SANDBOX_KEYS``/``SANDBOX_MODELS``),
    then explicit arguments; each given provider *replaces* that provider's defaults.

    ``models["azure"]`` may be a list of deployment names (each serving the model of
    the same name) or an object ``{"deployment": "model"}``.
    """
    catalog = Catalog()
    for source in (os.environ.get("SANDBOX_KEYS"), keys):
        for provider, value in _as_mapping(source, "keys").items():
            catalog.keys[provider] = frozenset(_str_list(value, f"keys.{provider}"))  # type: ignore[index]
    for source in (os.environ.get("SANDBOX_MODELS"), models):
        for provider, value in _as_mapping(source, "models").items():
            if provider == "azure":
                if isinstance(value, dict):
                    catalog.azure_deployments = {str(k): str(v) for k, v in value.items()}
                else:
                    names = _str_list(value, "models.azure")
                    catalog.azure_deployments = {n: n for n in names}
                catalog.models["azure"] = tuple(catalog.azure_deployments)
            else:
                catalog.models[provider] = _str_list(value, f"models.{provider}")  # type: ignore[index]
    return catalog
