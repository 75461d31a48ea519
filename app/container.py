"""The composition root: one dishka container from every module's provider."""

from __future__ import annotations

from dishka import STRICT_VALIDATION, AsyncContainer, Provider, make_async_container
from dishka.integrations.litestar import LitestarProvider

from app.core.module import CoreModule
from app.core.settings import Settings
from app.modules.ai.module import AIModule
from app.modules.literature.module import LiteratureModule


def make_container(settings: Settings, *overrides: Provider) -> AsyncContainer:
    """Tests pass providers with `override=True` (e.g. a manual clock)."""
    return make_async_container(
        CoreModule(),
        AIModule(),
        LiteratureModule(),
        LitestarProvider(),
        *overrides,
        context={Settings: settings},
        validation_settings=STRICT_VALIDATION,
    )
