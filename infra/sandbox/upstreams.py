"""HTTP handlers of the four simulated upstreams and the fault pipeline they share.

Every provider request walks the same pipeline so faults mean the same thing
everywhere::

    count -> (azure: api-version) -> reset | hang -> latency -> outage / injected error
          -> auth -> body -> model -> per-key limits -> success variant -> send

Infrastructure faults (reset, hang, latency, outages) come before auth, like a
load balancer in front of the real API; account-level answers (401, 404 model,
429 per key) come after.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import re
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from .chaos import ProviderChaos, ceil_seconds, retry_after_for_429
from .formats import (
    DIALECTS,
    AzureDialect,
    BadRequest,
    CallInfo,
    ChatRequest,
    Dialect,
    GeminiDialect,
    Reply,
    answer_for,
    html_reply,
    truncate,
    usage_for,
)
from .formats.schema_instance import mismatch_for
from .state import NO_KEY, STATE, ProviderStats, SandboxState

if TYPE_CHECKING:
    from aiohttp.typedefs import Handler

    from .catalog import Provider

HANG_POLL_S: Final = 0.1
HANG_MAX_S: Final = 3600.0
SLOW_PIECES: Final = 10
_API_VERSION: Final = re.compile(r"\d{4}-\d{2}-\d{2}(-preview)?")
# Where each upstream is mounted; the rest of the path is the real API's path.
_MOUNT: Final[dict[Provider, str]] = {
    "groq": "/groq",
    "openai": "/openai",
    "azure": "/azure",
    "gemini": "/gemini",
}


@dataclass(slots=True)
class Call:
    """One request to a simulated upstream, with everything the pipeline needs."""

    provider: Provider
    dialect: Dialect
    state: SandboxState
    key: str | None
    probe: bool
    info: CallInfo = field(default_factory=CallInfo)
    record: dict[str, Any] | None = None  # this call's entry in /_last, if a completion

    @property
    def chaos(self) -> ProviderChaos:
        return self.state.chaos[self.provider]

    @property
    def stats(self) -> ProviderStats:
        return self.state.stats[self.provider]

    def outcome(self, status: int | str, fault: str | None = None) -> None:
        """Count how the call ended (status, or ``hang``/``reset``) and why."""
        stats = self.stats
        (stats.probes_by_status if self.probe else stats.by_status)[str(status)] += 1
        if self.record is not None:
            self.record["status"] = status
        if fault is not None:
            stats.by_fault[fault] += 1


# -- transport-level helpers ------------------------------------------------------


def _abort(request: web.Request) -> web.StreamResponse:
    """Drop the connection with a TCP RST (SO_LINGER 0), sending no response."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    # aiohttp fails to write this to the dead transport and drops it quietly.
    return web.Response(status=499)


async def _hang(request: web.Request, state: SandboxState) -> web.StreamResponse:
    """Never answer: wait until the client disconnects, the server stops, or an hour.

    Polls the transport rather than relying on handler cancellation so it also
    ends promptly under runners that do not cancel handlers on disconnect.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HANG_MAX_S
    while not state.shutdown.is_set() and loop.time() < deadline:
        transport = request.transport
        if transport is None or transport.is_closing():
            break
        await asyncio.sleep(HANG_POLL_S)
    return _abort(request)


def _split(body: bytes, n: int) -> list[bytes]:
    size = max(1, -(-len(body) // n))
    return [body[i : i + size] for i in range(0, len(body), size)] or [b""]


async def _stream(
    request: web.Request,
    status: int,
    headers: dict[str, str],
    chunks: list[bytes],
    spread_ms: float,
    content_length: int | None = None,
) -> web.StreamResponse:
    """Send headers now, then the chunks spread evenly over ``spread_ms``."""
    response = web.StreamResponse(status=status, headers=headers)
    if content_length is not None:
        response.content_length = content_length
    delay = spread_ms / 1000.0 / max(len(chunks), 1)
    try:
        await response.prepare(request)
        if delay <= 0:
            await response.write(b"".join(chunks))
        else:
            for chunk in chunks:
                await asyncio.sleep(delay)
                await response.write(chunk)
        await response.write_eof()
    except ConnectionError:
        pass  # the client left mid-body; aiohttp notices and closes quietly
    return response


def _gzipped(reply: Reply) -> Reply:
    headers = {**reply.headers, "Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
    return Reply(reply.status, gzip.compress(reply.body), headers)


async def _send(
    request: web.Request, call: Call, reply: Reply, *, slow_ms: float = 0.0
) -> web.StreamResponse:
    call.outcome(reply.status)
    if call.chaos.config.gzip and "gzip" in request.headers.get("Accept-Encoding", ""):
        reply = _gzipped(reply)
    if slow_ms <= 0:
        return web.Response(status=reply.status, body=reply.body, headers=reply.headers)
    chunks = _split(reply.body, SLOW_PIECES)
    return await _stream(
        request, reply.status, dict(reply.headers), chunks, slow_ms, len(reply.body)
    )


# -- the pipeline -----------------------------------------------------------------


async def _read_body(request: web.Request) -> tuple[Any, bool]:
    """The request body as JSON if it parses, else (a prefix of) its text."""
    raw = await request.read()
    if not raw:
        return None, False
    try:
        return json.loads(raw), True
    except ValueError:
        return raw[:4096].decode("utf-8", "replace"), False


async def _infrastructure_faults(
    request: web.Request, call: Call
) -> web.StreamResponse | Reply | None:
    """Faults that happen "in front of" the API: no auth or body needed."""
    chaos = call.chaos
    cfg = chaos.config
    if cfg.reset:
        call.outcome("reset", "reset")
        return _abort(request)
    if cfg.hang:
        call.outcome("hang", "hang")
        return await _hang(request, call.state)
    delay = chaos.latency_s(time.monotonic())
    if delay > 0:
        await asyncio.sleep(delay)
    fault = "down" if chaos.is_down(time.monotonic()) else chaos.roll_error()
    if fault is not None:
        call.stats.by_fault[fault] += 1
        return call.dialect.server_error(cfg.error_status, cfg.retry_after, call.info)
    return None


def _key_limits(call: Call) -> Reply | None:
    """Per-key 429s: listed keys always, others once over ``rpm_per_key``."""
    chaos = call.chaos
    cfg = chaos.config
    key = call.key or NO_KEY
    limit = cfg.rpm_per_key or 30
    if key in cfg.rate_limited_keys:
        call.stats.by_fault["rate_limited_key"] += 1
        return call.dialect.rate_limited(call.info, retry_after_for_429(cfg), limit)
    now = time.monotonic()
    wait = chaos.admit(key, now)
    if wait is not None:
        call.stats.by_fault["rpm"] += 1
        return call.dialect.rate_limited(call.info, ceil_seconds(wait), limit)
    call.info.rate = chaos.rate_view(key, now)
    return None


def _bad_api_version(request: web.Request) -> bool:
    return not _API_VERSION.fullmatch(request.query.get("api-version", ""))


def _start(request: web.Request, provider: Provider, *, probe: bool) -> Call:
    state = request.app[STATE]
    dialect = DIALECTS[provider]
    key = dialect.extract_key(request.headers, request.query)
    call = Call(provider, dialect, state, key, probe)
    call.info.api_version = request.query.get("api-version")
    stats = call.stats
    if probe:
        stats.probes += 1
        stats.probes_by_key[key or NO_KEY] += 1
    else:
        stats.completions += 1
        stats.by_key[key or NO_KEY] += 1
    return call


async def completion(
    request: web.Request,
    provider: Provider,
    path_model: str | None = None,
    *,
    gemini_stream: bool = False,
) -> web.StreamResponse:
    """A chat completion (or Gemini generateContent) through the whole pipeline."""
    call = _start(request, provider, probe=False)
    body, is_json = await _read_body(request)
    model = path_model or (body.get("model") if isinstance(body, dict) else None)
    if isinstance(model, str) and model:
        call.stats.by_model[model] += 1
        call.info.model = model
    call.record = call.state.remember(
        provider, request, body, call.key, call.dialect.redact_headers()
    )
    dialect = call.dialect
    if isinstance(dialect, AzureDialect) and _bad_api_version(request):
        return await _send(request, call, dialect.resource_not_found())

    early = await _infrastructure_faults(request, call)
    if isinstance(early, web.StreamResponse):
        return early
    if early is not None:
        return await _send(request, call, early)

    catalog = call.state.catalog
    cfg = call.chaos.config
    if not catalog.key_ok(provider, call.key) or call.chaos.refuse(call.key):
        return await _send(request, call, dialect.invalid_key(call.key))
    try:
        req = dialect.parse(body if is_json else None, path_model)
    except BadRequest as exc:
        return await _send(request, call, dialect.bad_request(exc))
    req.stream = req.stream or gemini_stream
    model = call.info.model = req.model
    retired = model in catalog.retired[provider] and not catalog.has_model(provider, model)
    if model in cfg.decommissioned_models or retired:
        return await _send(request, call, dialect.decommissioned(model))
    if model in cfg.missing_models or not catalog.has_model(provider, model):
        return await _send(request, call, dialect.model_not_found(model))
    limited = _key_limits(call)
    if limited is not None:
        return await _send(request, call, limited)
    return await _answer(request, call, req)


async def _answer(request: web.Request, call: Call, req: ChatRequest) -> web.StreamResponse:
    """The 200 family: normal, streamed, or one of the "successful but wrong" faults."""
    provider, dialect, cfg = call.provider, call.dialect, call.chaos.config
    content = answer_for(provider, req, cfg.content)
    if cfg.schema_mismatch and req.schema is not None:
        call.stats.by_fault["schema_mismatch"] += 1
        content = json.dumps(mismatch_for(req.schema))
    usage = usage_for(req, content)
    if call.record is not None:
        call.record["usage"] = {
            "prompt_tokens": usage.prompt,
            "completion_tokens": usage.completion,
            "total_tokens": usage.total,
        }
    served = call.state.catalog.served_model(provider, req.model)
    info = call.info
    # Generation time: an answer of more tokens takes longer, as with a real model.
    generation_ms = cfg.latency_per_token_ms * usage.completion
    if cfg.wrong_content_type:
        call.stats.by_fault["wrong_content_type"] += 1
        return await _send(request, call, html_reply(), slow_ms=cfg.slow_body_ms)

    sse = req.stream and not (
        isinstance(dialect, GeminiDialect) and request.query.get("alt") != "sse"
    )
    if not sse:
        if cfg.empty:
            call.stats.by_fault["empty"] += 1
            reply = dialect.empty(req, usage, served, info)
        elif req.stream:  # Gemini streamGenerateContent without alt=sse: a JSON array
            assert isinstance(dialect, GeminiDialect)
            reply = dialect.array_stream(req, content, usage, served, info)
        else:
            reply = dialect.completion(req, content, usage, served, info)
        if cfg.malformed:
            call.stats.by_fault["malformed"] += 1
            reply = truncate(reply)
        if generation_ms > 0:
            await asyncio.sleep(generation_ms / 1000.0)
        return await _send(request, call, reply, slow_ms=cfg.slow_body_ms)

    if cfg.empty:
        call.stats.by_fault["empty"] += 1
        frames = [dialect.sse_frame(dialect.empty_event(usage, served, info)), dialect.sse_done()]
    else:
        frames = dialect.stream_frames(req, content, usage, served, info)
    if cfg.malformed:
        call.stats.by_fault["malformed"] += 1
        frames = [frames[0], frames[0][: len(frames[0]) // 2]]
    call.outcome(200)
    spread_ms = cfg.slow_body_ms + generation_ms
    return await _stream(request, 200, dialect.stream_headers(info), frames, spread_ms)


async def probe(
    request: web.Request, provider: Provider, name: str | None = None
) -> web.StreamResponse:
    """A models/deployments list (or single item): free health checks for gateways.

    Faults only apply when the provider's ``affect_probes`` is set, so a test can
    break completions while health probes keep saying "up" (and vice versa).
    """
    call = _start(request, provider, probe=True)
    dialect = call.dialect
    cfg = call.chaos.config
    if isinstance(dialect, AzureDialect) and _bad_api_version(request):
        return await _send(request, call, dialect.resource_not_found())
    slow_ms = 0.0
    if cfg.affect_probes:
        early = await _infrastructure_faults(request, call)
        if isinstance(early, web.StreamResponse):
            return early
        if early is not None:
            return await _send(request, call, early)
        slow_ms = cfg.slow_body_ms
    # A refused key (``refuse_keys``) is refused here too, whatever ``affect_probes`` says:
    # a provider that rejects a key rejects it on every endpoint.
    if not call.state.catalog.key_ok(provider, call.key) or call.chaos.refuse(call.key):
        return await _send(request, call, dialect.invalid_key(call.key))
    if cfg.affect_probes:
        if call.key in cfg.rate_limited_keys:
            reply = dialect.rate_limited(call.info, retry_after_for_429(cfg), cfg.rpm_per_key or 30)
            return await _send(request, call, reply)
        if cfg.wrong_content_type:
            return await _send(request, call, html_reply(), slow_ms=slow_ms)
        if cfg.empty:
            return await _send(request, call, dialect.empty_models(call.info), slow_ms=slow_ms)
    catalog = call.state.catalog
    if name is None:
        reply = dialect.models(catalog, call.info)
    elif name in cfg.missing_models:
        reply = dialect.model_not_found(name)
    else:
        reply = dialect.model(catalog, name, call.info)
    if cfg.affect_probes and cfg.malformed:
        reply = truncate(reply)
    return await _send(request, call, reply, slow_ms=slow_ms)


# -- routes -----------------------------------------------------------------------


def _route_not_found(provider: Provider) -> Handler:
    dialect = DIALECTS[provider]

    prefix = _MOUNT[provider]

    async def handler(request: web.Request) -> web.StreamResponse:
        # Report the path as the real API would see it, without the sandbox mount.
        reply = dialect.route_not_found(request.method, request.path.removeprefix(prefix))
        return web.Response(status=reply.status, body=reply.body, headers=reply.headers)

    return handler


def _openai_like(prefix: str, provider: Provider) -> list[web.RouteDef]:
    async def chat(request: web.Request) -> web.StreamResponse:
        return await completion(request, provider)

    async def models(request: web.Request) -> web.StreamResponse:
        return await probe(request, provider)

    async def model(request: web.Request) -> web.StreamResponse:
        return await probe(request, provider, request.match_info["model"])

    return [
        web.post(f"{prefix}/chat/completions", chat),
        web.get(f"{prefix}/models", models),
        web.get(f"{prefix}/models/{{model:.+}}", model),
    ]


async def _azure_chat(request: web.Request) -> web.StreamResponse:
    return await completion(request, "azure", request.match_info["deployment"])


async def _azure_deployments(request: web.Request) -> web.StreamResponse:
    return await probe(request, "azure")


async def _azure_deployment(request: web.Request) -> web.StreamResponse:
    return await probe(request, "azure", request.match_info["deployment"])


async def _gemini_action(request: web.Request) -> web.StreamResponse:
    """``models/{model}:{action}``: the colon lives inside one path segment."""
    model, sep, action = request.match_info["name"].rpartition(":")
    if sep and action == "generateContent":
        return await completion(request, "gemini", model)
    if sep and action == "streamGenerateContent":
        return await completion(request, "gemini", model, gemini_stream=True)
    return await _route_not_found("gemini")(request)


async def _gemini_models(request: web.Request) -> web.StreamResponse:
    return await probe(request, "gemini")


async def _gemini_model(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if ":" in name:
        return await _route_not_found("gemini")(request)
    return await probe(request, "gemini", name)


def upstream_routes() -> list[web.RouteDef]:
    """All provider routes; the per-prefix catch-alls must stay last."""
    return [
        *_openai_like("/groq/openai/v1", "groq"),
        *_openai_like("/openai/v1", "openai"),
        web.post("/azure/openai/deployments/{deployment}/chat/completions", _azure_chat),
        web.get("/azure/openai/deployments", _azure_deployments),
        web.get("/azure/openai/deployments/{deployment}", _azure_deployment),
        web.post("/gemini/v1beta/models/{name}", _gemini_action),
        web.get("/gemini/v1beta/models", _gemini_models),
        web.get("/gemini/v1beta/models/{name}", _gemini_model),
        web.route("*", "/groq/{tail:.*}", _route_not_found("groq")),
        web.route("*", "/openai/{tail:.*}", _route_not_found("openai")),
        web.route("*", "/azure/{tail:.*}", _route_not_found("azure")),
        web.route("*", "/gemini/{tail:.*}", _route_not_found("gemini")),
    ]
