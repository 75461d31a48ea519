"""The API docs pages, served whole by the service: no script, style or icon from a CDN.

Litestar's render plugins load their scripts from public CDNs by default (jsdelivr, unpkg,
redoc.ly, Google Fonts): on an internal network the page stays blank. Swagger UI's dist files
come from the pinned `swagger-ui-py` package instead and are served under ASSETS_PATH. ReDoc,
RapiDoc, Stoplight Elements and Scalar are not offered: no PyPI package ships their bundles
without a web framework of its own (Django, FastAPI) coming along, so they would need a CDN.

`/schema` and `/schema/swagger` are Swagger UI; `/schema/openapi.json` and
`/schema/openapi.yaml` the document itself.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litestar import Request, Router
from litestar.exceptions import NotFoundException
from litestar.openapi.plugins import (
    JsonRenderPlugin,
    OpenAPIRenderPlugin,
    SwaggerRenderPlugin,
    YamlRenderPlugin,
)
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, Schema
from litestar.static_files import create_static_files_router

ASSETS_PATH = "/schema/assets"

# The only files the page needs; the package also ships Swagger Editor, which is not served.
_ASSETS = (
    "swagger-ui-bundle.js",
    "swagger-ui-standalone-preset.js",
    "swagger-ui.css",
    "favicon-32x32.png",
    "LICENSE",
)


def swagger_ui_dir() -> Path:
    """swagger-ui-py's `static/` folder, found without importing the package (its
    `__init__` imports its framework adapters)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed (a runtime dependency)")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def render_plugins() -> list[OpenAPIRenderPlugin]:
    """Swagger UI at /schema and /schema/swagger with local assets, and the raw document."""
    favicon = f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/favicon-32x32.png'>"
    return [
        SwaggerRenderPlugin(
            js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            css_url=f"{ASSETS_PATH}/swagger-ui.css",
            standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
            path=["/", "/swagger"],
            favicon=favicon,
        ),
        JsonRenderPlugin(),
        YamlRenderPlugin(),
    ]


def assets_router() -> Router:
    """The Swagger UI files under ASSETS_PATH (only those the page uses)."""
    folder = swagger_ui_dir()
    missing = [name for name in _ASSETS if not (folder / name).is_file()]
    if missing:
        raise RuntimeError(f"swagger-ui-py ships no {', '.join(missing)} in {folder}")
    return create_static_files_router(
        path=ASSETS_PATH,
        directories=[folder],
        name="api-docs-assets",
        include_in_schema=False,
        before_request=_only_listed,
    )


async def _only_listed(request: Request[Any, Any, Any]) -> None:
    """Swagger Editor's bundles (also in the package) stay unserved: 404 for anything else."""
    name = request.url.path.rsplit("/", 1)[-1]
    if name not in _ASSETS:
        raise NotFoundException()


def event_stream_operation(description: str, example: str) -> type[Operation]:
    """An Operation whose 200 answer also documents `text/event-stream` (Litestar's
    ResponseSpec takes one media type; the streamed answer is a second one)."""

    @dataclass
    class EventStreamOperation(Operation):
        def __post_init__(self) -> None:
            responses: Mapping[str, Any] = self.responses or {}
            ok = responses.get("200")
            content = getattr(ok, "content", None)
            if content is not None:
                content["text/event-stream"] = OpenAPIMediaType(
                    schema=Schema(type=OpenAPIType.STRING, description=description),
                    example=example,
                )

    return EventStreamOperation
