"""The sandbox's own control plane: chaos, counters, last requests, health.

Everything lives under ``/_`` so it can never collide with a provider path.
Bodies are JSON; mistakes (unknown provider, unknown chaos field, bad value)
are 4xx with an explanation rather than being silently ignored.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import ValidationError

from .catalog import PROVIDERS
from .state import STATE

if TYPE_CHECKING:
    from .catalog import Provider

# The request recorder's own endpoint; requests to it are not recorded.
RECORDER_PATH = "/_requests"


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def _provider(request: web.Request) -> Provider:
    name = request.match_info["provider"]
    for provider in PROVIDERS:
        if provider == name:
            return provider
    raise web.HTTPNotFound(
        text=json.dumps({"error": f"unknown provider {name!r}", "providers": PROVIDERS}),
        content_type="application/json",
    )


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        data = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"body is not JSON: {exc}"}), content_type="application/json"
        ) from exc
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body must be a JSON object"}),
            content_type="application/json",
        )
    return data


def _invalid(exc: ValidationError) -> web.Response:
    detail = json.loads(exc.json(include_url=False))
    return _json({"error": "invalid chaos config", "detail": detail}, status=400)


async def health(request: web.Request) -> web.Response:
    return _json({"ok": True})


async def get_all_chaos(request: web.Request) -> web.Response:
    chaos = request.app[STATE].chaos
    return _json({p: chaos[p].config.model_dump() for p in PROVIDERS})


async def clear_all_chaos(request: web.Request) -> web.Response:
    """Heal every provider but keep the counters (``/_chaos/reset`` zeroes them too)."""
    state = request.app[STATE]
    for chaos in state.chaos.values():
        chaos.clear()
    return await get_all_chaos(request)


async def reset_everything(request: web.Request) -> web.Response:
    request.app[STATE].reset_all()
    return _json({"ok": True})


async def get_chaos(request: web.Request) -> web.Response:
    provider = _provider(request)
    return _json(request.app[STATE].chaos[provider].config.model_dump())


async def put_chaos(request: web.Request) -> web.Response:
    provider = _provider(request)
    data = await _body(request)
    try:
        config = request.app[STATE].chaos[provider].put(data)
    except ValidationError as exc:
        return _invalid(exc)
    return _json(config.model_dump())


async def patch_chaos(request: web.Request) -> web.Response:
    provider = _provider(request)
    data = await _body(request)
    try:
        config = request.app[STATE].chaos[provider].patch(data)
    except ValidationError as exc:
        return _invalid(exc)
    return _json(config.model_dump())


async def delete_chaos(request: web.Request) -> web.Response:
    provider = _provider(request)
    chaos = request.app[STATE].chaos[provider]
    chaos.clear()
    return _json(chaos.config.model_dump())


async def get_stats(request: web.Request) -> web.Response:
    return _json(request.app[STATE].stats_json())


async def reset_stats(request: web.Request) -> web.Response:
    request.app[STATE].reset_stats()
    return _json({"ok": True})


async def get_last(request: web.Request) -> web.Response:
    provider = _provider(request)
    last = request.app[STATE].last.get(provider)
    if last is None:
        return _json({"error": f"no completion request to {provider} yet"}, status=404)
    return _json(last)


async def get_requests(request: web.Request) -> web.Response:
    """Every request received since the last ``DELETE /_requests``, oldest first."""
    return _json(list(request.app[STATE].received))


async def clear_requests(request: web.Request) -> web.Response:
    request.app[STATE].received.clear()
    return _json({"ok": True})


async def get_config(request: web.Request) -> web.Response:
    """The catalog in effect: which keys and models each upstream accepts."""
    catalog = request.app[STATE].catalog
    return _json(
        {
            p: {
                "keys": sorted(catalog.keys[p]),
                "models": list(catalog.models[p]),
                "retired_models": sorted(catalog.retired[p]),
                **({"deployments": catalog.azure_deployments} if p == "azure" else {}),
            }
            for p in PROVIDERS
        }
    )


def admin_routes() -> list[web.RouteDef]:
    return [
        web.get("/_health", health),
        web.get("/_config", get_config),
        web.get("/_chaos", get_all_chaos),
        web.delete("/_chaos", clear_all_chaos),
        web.post("/_chaos/reset", reset_everything),
        web.get("/_chaos/{provider}", get_chaos),
        web.put("/_chaos/{provider}", put_chaos),
        web.patch("/_chaos/{provider}", patch_chaos),
        web.delete("/_chaos/{provider}", delete_chaos),
        web.get("/_stats", get_stats),
        web.post("/_stats/reset", reset_stats),
        web.get("/_last/{provider}", get_last),
        web.get(RECORDER_PATH, get_requests),
        web.delete(RECORDER_PATH, clear_requests),
    ]
