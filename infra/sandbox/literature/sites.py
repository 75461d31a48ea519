"""Serving the literature sandbox: every `.test` host on the sandbox's one port, routed by the
Host header, plus its control plane under `/_literature`.

- `api.unpaywall.test`  `GET /v2/{doi}?email=`  Unpaywall v2 records (404 for unknown DOIs,
  422 without an email, as the real API does)
- `doi.test`            `GET /{doi}`  302 to the landing page (404 page for unknown DOIs)
- `www.ncbi.nlm.nih.test`  `GET /pmc/utils/idconv/v1.0/?ids=`  NCBI's ID converter (JSON)
- `redirector.test`     `GET /to?url=`  302 to anything (for the guard's redirect tests)
- every other host      the catalogue's pages, PDFs, redirects and errors

Control plane: `GET /_literature/catalogue`, `GET /_literature/gateway` (the settings a
gateway needs), `GET /_literature/stats`, `POST /_literature/reset`,
`PUT|DELETE /_literature/faults/{host}` (`{"status": 503}`, `{"latency_ms": 200}`,
`{"hang": true}`).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from aiohttp import web

from . import hosts as h
from . import pages
from .catalogue import AI_FULL_TEXT_VERDICT, AI_NOT_FULL_TEXT_VERDICT, build
from .hosts import HOSTS, gateway_env, gateway_settings
from .model import Catalogue, Expand, Html, Huge, Pdf, Redirect, Status, expander
from .pdf import make_pdf

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HOST_SET = frozenset(HOSTS)
_CHUNK = 64 * 1024


@dataclass(slots=True)
class Fault:
    status: int | None = None
    latency_ms: int = 0
    hang: bool = False


@dataclass(slots=True)
class LiteratureState:
    catalogue: Catalogue
    requests: Counter[str] = field(default_factory=Counter)  # by host
    paths: Counter[str] = field(default_factory=Counter)  # by host + path
    faults: dict[str, Fault] = field(default_factory=dict)
    pdfs: dict[str, bytes] = field(default_factory=dict)
    shutdown: asyncio.Event = field(default_factory=asyncio.Event)

    def reset(self) -> None:
        self.requests.clear()
        self.paths.clear()
        self.faults.clear()


LITERATURE: web.AppKey[LiteratureState] = web.AppKey("literature_state", LiteratureState)


def _port(request: web.Request) -> int:
    host = request.headers.get("Host", "")
    _, _, port = host.rpartition(":")
    if port.isdigit():
        return int(port)
    sock = request.transport.get_extra_info("sockname") if request.transport else None
    return int(sock[1]) if sock else 80


@web.middleware
async def literature_hosts(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Requests for a sandbox `.test` host are served here; everything else goes on."""
    host = request.headers.get("Host", "").rsplit(":", 1)[0].lower()
    if host not in _HOST_SET:
        return await handler(request)
    state = request.app[LITERATURE]
    state.requests[host] += 1
    state.paths[f"{host}{request.path}"] += 1
    fault = state.faults.get(host)
    if fault is not None:
        if fault.hang:
            await state.shutdown.wait()
        if fault.latency_ms:
            await asyncio.sleep(fault.latency_ms / 1000)
        if fault.status:
            return web.Response(status=fault.status, text="injected fault\n")
    expand = expander(_port(request))
    special = {
        h.UNPAYWALL: _unpaywall,
        h.DOI_RESOLVER: _doi,
        h.REDIRECTOR: _redirector,
    }.get(host)
    if special is not None:
        return await special(request, state, expand)
    if host == h.NCBI and request.path.startswith("/pmc/utils/idconv/"):
        return _idconv(request, state)
    return await _serve(request, host, state, expand)


async def _serve(
    request: web.Request, host: str, state: LiteratureState, expand: Expand
) -> web.StreamResponse:
    routes = state.catalogue.routes.get(host, {})
    resource = routes.get(request.path_qs) or routes.get(request.path)
    if resource is None:
        return web.Response(status=404, text=pages.not_found(host), content_type="text/html")
    if isinstance(resource, Html):
        return web.Response(
            status=resource.status, text=resource.render(expand), content_type="text/html"
        )
    if isinstance(resource, Pdf):
        data = resource.data or state.pdfs.get(resource.key)
        if data is None:
            data = state.pdfs[resource.key] = make_pdf(resource.title, resource.body)
        return web.Response(body=data, headers={"Content-Type": resource.content_type})
    if isinstance(resource, Redirect):
        return web.Response(status=resource.status, headers={"Location": expand(resource.to)})
    if isinstance(resource, Status):
        return web.Response(status=resource.status, text=resource.text)
    assert isinstance(resource, Huge)
    return await _huge(request, resource.size)


async def _huge(request: web.Request, size: int) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/html; charset=utf-8"})
    await response.prepare(request)
    chunk = (b"<p>" + b"All work and no play makes a very long page. " * 1400 + b"</p>\n")[:_CHUNK]
    await response.write(b"<!DOCTYPE html><html><head><title>Huge</title></head><body>")
    sent = 0
    while sent < size:
        await response.write(chunk)
        sent += len(chunk)
    await response.write(b"</body></html>")
    return response


async def _unpaywall(
    request: web.Request, state: LiteratureState, expand: Expand
) -> web.StreamResponse:
    if not request.path.startswith("/v2/"):
        return web.json_response({"error": True, "message": "not found"}, status=404)
    doi = unquote(request.path[len("/v2/") :]).lower()
    if not request.query.get("email"):
        return web.json_response(
            {
                "HTTP_status_code": 422,
                "error": True,
                "message": "Please provide an email address as a query parameter, e.g. "
                "?email=you@example.com",
            },
            status=422,
        )
    record = state.catalogue.unpaywall.get(doi)
    if record is None:
        return web.json_response(
            {
                "HTTP_status_code": 404,
                "error": True,
                "message": f"'{doi}' is an invalid doi. See https://doi.org/{doi}",
            },
            status=404,
        )
    return web.json_response(_expand_json(record, expand))


def _expand_json(value: Any, expand: Expand) -> Any:
    if isinstance(value, str):
        return expand(value)
    if isinstance(value, dict):
        return {k: _expand_json(v, expand) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_json(v, expand) for v in value]
    return value


async def _doi(request: web.Request, state: LiteratureState, expand: Expand) -> web.StreamResponse:
    doi = unquote(request.path.lstrip("/")).lower()
    target = state.catalogue.dois.get(doi)
    if target is None:
        return web.Response(status=404, text=pages.doi_not_found(doi), content_type="text/html")
    return web.Response(status=302, headers={"Location": expand(target)})


async def _redirector(
    request: web.Request, state: LiteratureState, expand: Expand
) -> web.StreamResponse:
    target = request.query.get("url")
    if request.path != "/to" or not target:
        return web.Response(status=404, text="use /to?url=...")
    return web.Response(status=302, headers={"Location": expand(target)})


def _idconv(request: web.Request, state: LiteratureState) -> web.StreamResponse:
    ids = [i.strip() for i in request.query.get("ids", "").split(",") if i.strip()]
    records: list[dict[str, Any]] = []
    for pmid in ids:
        pmcid = state.catalogue.idconv.get(pmid)
        if pmcid:
            records.append({"pmcid": pmcid, "pmid": pmid, "requested-id": pmid})
        else:
            records.append(
                {
                    "pmid": pmid,
                    "requested-id": pmid,
                    "status": "error",
                    "errmsg": "invalid article id",
                }
            )
    return web.json_response(
        {
            "status": "ok",
            "responseDate": "2024-01-10 08:00:00",
            "request": "ids=" + ",".join(ids),
            "records": records,
        }
    )


# --- control plane ------------------------------------------------------------------------------


async def catalogue(request: web.Request) -> web.Response:
    state = request.app[LITERATURE]
    expand = expander(_port(request))
    return web.json_response(
        {
            "papers": [entry.to_json(expand) for entry in state.catalogue.entries],
            "ai_full_text_verdict": AI_FULL_TEXT_VERDICT,
            "ai_not_full_text_verdict": AI_NOT_FULL_TEXT_VERDICT,
        }
    )


async def gateway(request: web.Request) -> web.Response:
    base = f"http://127.0.0.1:{_port(request)}"
    return web.json_response({"settings": gateway_settings(base), "env": gateway_env(base)})


async def stats(request: web.Request) -> web.Response:
    state = request.app[LITERATURE]
    return web.json_response(
        {
            "total": sum(state.requests.values()),
            "by_host": dict(state.requests),
            "by_path": dict(state.paths),
        }
    )


async def reset(request: web.Request) -> web.Response:
    request.app[LITERATURE].reset()
    return web.json_response({"ok": True})


async def put_fault(request: web.Request) -> web.Response:
    host = request.match_info["host"]
    if host not in _HOST_SET:
        return web.json_response({"error": f"unknown host {host!r}", "hosts": HOSTS}, status=404)
    try:
        data = json.loads(await request.read() or b"{}")
        fault = Fault(
            status=data.get("status"),
            latency_ms=int(data.get("latency_ms", 0)),
            hang=bool(data.get("hang", False)),
        )
    except (ValueError, TypeError, AttributeError) as exc:
        return web.json_response({"error": f"bad fault: {exc}"}, status=400)
    request.app[LITERATURE].faults[host] = fault
    return web.json_response(
        {"host": host, "status": fault.status, "latency_ms": fault.latency_ms, "hang": fault.hang}
    )


async def delete_fault(request: web.Request) -> web.Response:
    request.app[LITERATURE].faults.pop(request.match_info["host"], None)
    return web.json_response({"ok": True})


def mount_literature(app: web.Application) -> None:
    """Add the literature hosts and their control plane to the sandbox app."""
    state = LiteratureState(catalogue=build())
    app[LITERATURE] = state

    async def release_hangs(_: web.Application) -> None:
        state.shutdown.set()

    app.on_shutdown.append(release_hangs)
    app.middlewares.append(literature_hosts)
    app.add_routes(
        [
            web.get("/_literature/catalogue", catalogue),
            web.get("/_literature/gateway", gateway),
            web.get("/_literature/stats", stats),
            web.post("/_literature/reset", reset),
            web.put("/_literature/faults/{host}", put_fault),
            web.delete("/_literature/faults/{host}", delete_fault),
        ]
    )
