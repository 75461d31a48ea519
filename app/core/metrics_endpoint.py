"""`GET /metrics`: this app's registry in Prometheus text format, on the service's own port;
with several workers, every worker's (labelled `worker`), whichever worker answers."""

from __future__ import annotations

from dishka import FromDishka
from dishka.integrations.litestar import inject
from litestar import Request, Response, get

from app.core.telemetry import Telemetry


@get("/metrics", include_in_schema=False)
@inject
async def metrics(request: Request, telemetry: FromDishka[Telemetry]) -> Response[bytes]:  # type: ignore[type-arg]
    body, content_type = await telemetry.render_all(request.headers.get("accept"))
    # As a header, not `media_type`: Litestar appends `; charset=utf-8` to any text/* media
    # type, and prometheus_client's already ends with it (the header said it twice).
    return Response(body, media_type=content_type, headers={"content-type": content_type})
