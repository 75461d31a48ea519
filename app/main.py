"""create_app(settings): the Litestar app with its routes, container, lifespan and error
handlers. Tests build their own app per test; nothing here is global."""

from __future__ import annotations

import gc
import logging

from dishka import Provider
from dishka.integrations.litestar import setup_dishka
from litestar import Litestar
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from app.container import make_container
from app.core.apidocs import assets_router, render_plugins
from app.core.auth import CallerAuthenticator, CallerAuthMiddleware
from app.core.bodies import BodyLimits, BodyRule, GatewayRequest
from app.core.clock import SystemClock
from app.core.db import migrate
from app.core.http_metrics import HttpMetrics
from app.core.metrics_endpoint import metrics
from app.core.problems import problem_response
from app.core.request_id import RequestMiddleware
from app.core.settings import Settings
from app.core.shared import SharedState
from app.core.telemetry import Telemetry
from app.core.tracing import Tracing
from app.modules.ai.budget import BudgetStore
from app.modules.ai.controller import AIController, HealthController
from app.modules.ai.health import HealthService
from app.modules.ai.key_files import KeyFileWatcher
from app.modules.ai.metrics import AIMetrics
from app.modules.ai.overhead import OverheadMiddleware, OverheadRecorder
from app.modules.ai.service import UnifiedAIService
from app.modules.ai.usage import UsageLedger
from app.modules.literature.controller import LiteratureController
from app.modules.literature.errors import BatchTooLarge

log = logging.getLogger("app")


class ConfigurationError(RuntimeError):
    """The settings are valid one by one but cannot run together."""


def create_app(settings: Settings | None = None, *overrides: Provider) -> Litestar:
    settings = settings or Settings()
    overhead = OverheadRecorder()
    middleware = [DefineMiddleware(OverheadMiddleware, recorder=overhead)]
    authenticator: CallerAuthenticator | None = None
    if settings.gateway_auth == "enabled":
        if not settings.gateway_api_keys:
            raise ConfigurationError(
                "no caller keys: set GATEWAY_API_KEYS=name:key[,name:key...] "
                "(or GATEWAY_AUTH=disabled for a closed network)"
            )
        authenticator = CallerAuthenticator(settings, SystemClock())
        middleware.append(DefineMiddleware(CallerAuthMiddleware, authenticator=authenticator))
    else:
        log.warning("AUTHENTICATION DISABLED (GATEWAY_AUTH=disabled): every caller is anonymous")
    container = make_container(settings, *overrides)
    http_metrics = HttpMetrics()
    tracing = Tracing.from_settings(settings)  # None unless OTEL_EXPORTER_OTLP_*ENDPOINT

    async def start() -> None:
        await migrate(settings.database_url)
        shared = await container.get(SharedState | None)
        if shared is not None:
            await shared.start()  # up or down is known before the first request
            if authenticator is not None:
                authenticator.share(shared)  # GATEWAY_CALLER_RPM across every replica
        ledger = await container.get(UsageLedger)
        ledger.start()
        # A restart must not reset a budget: today's (and this month's) spend comes back from
        # the ledger, or from Redis when it is shared (seeded from the ledger if it is empty).
        await (await container.get(BudgetStore)).rebuild(ledger)
        # Build clients and guards at start, not on the first request.
        await container.get(UnifiedAIService)
        overhead.histogram = (await container.get(AIMetrics)).overhead
        http_metrics.bind((await container.get(Telemetry)).registry)
        (await container.get(HealthService)).start()
        # Rotated provider keys are taken from their files without a restart (and on SIGHUP).
        (await container.get(KeyFileWatcher)).start()
        # Move the ~130k objects made at start-up out of the collector's reach: otherwise each
        # full collection rescans them and stalls the loop for 100+ ms under load.
        gc.collect()
        gc.freeze()

    async def stop() -> None:
        await (await container.get(KeyFileWatcher)).aclose()
        await (await container.get(HealthService)).stop()
        await (await container.get(UsageLedger)).close()
        await (await container.get(BudgetStore)).aclose()
        await container.close()
        if tracing is not None:
            tracing.shutdown()  # flushes the spans still batched

    limits = body_limits(settings)
    app = Litestar(
        route_handlers=[
            AIController,
            HealthController,
            LiteratureController,
            metrics,
            assets_router(),  # the docs pages' scripts, served here (no CDN)
        ],
        middleware=middleware,
        request_class=GatewayRequest,
        before_request=limits,
        request_max_body_size=limits.largest,
        on_startup=[start],
        on_shutdown=[stop],
        exception_handlers={Exception: problem_response},
        openapi_config=OpenAPIConfig(
            title="Literature AI Gateway",
            version="0.1.0",
            description="AI gateway over Groq, Gemini, Azure OpenAI and OpenAI.",
            # Every page and asset from this service (app.core.apidocs); descriptions from the
            # handlers' docstrings.
            render_plugins=render_plugins(),
            use_handler_docstrings=True,
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(
                        type="http", scheme="bearer", description="A caller key (GATEWAY_API_KEYS)"
                    )
                }
            ),
        ),
        debug=False,
        logging_config=None,  # app.core.logging owns the format
    )
    setup_dishka(container, app)
    # Outermost, around Litestar's router and exception handling: every response (404s and
    # errors raised by the middleware above included) gets the request id, a duration and
    # an access line (app.core.request_id).
    app.asgi_handler = RequestMiddleware(
        app.asgi_handler,
        metrics=http_metrics,
        tracing=tracing,
        text_log=settings.log_format == "text",
    )
    return app


def body_limits(settings: Settings) -> BodyLimits:
    """Each POST route's body limit and list bound (see app.core.bodies for why)."""
    ai = BodyRule(
        max_bytes=settings.ai_max_body_bytes,
        setting="AI_MAX_BODY_BYTES",
        list_field="messages",
        max_items=settings.ai_max_messages,
        items_setting="AI_MAX_MESSAGES",
    )
    lit = settings.literature
    paper = BodyRule(max_bytes=lit.max_body_bytes, setting="LITERATURE_MAX_BODY_BYTES")
    batch = BodyRule(
        max_bytes=lit.batch_max_body_bytes,
        setting="LITERATURE_BATCH_MAX_BODY_BYTES",
        list_field="papers",
        max_items=lit.batch_max_size,
        items_setting="LITERATURE_BATCH_MAX_SIZE",
        too_many=BatchTooLarge,
    )
    return BodyLimits(
        {
            "/v1/ai/completions": ai,
            "/v1/chat/completions": ai,
            "/v1/fulltext/detect": paper,
            "/v1/fulltext/verify": paper,
            "/v1/fulltext/detect/batch": batch,
        }
    )
