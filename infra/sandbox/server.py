"""Assemble the sandbox app and run it: in-process, in a thread, or via the CLI.

One aiohttp server, one port; each upstream lives under its own path prefix so a
gateway's base URLs can point at it unchanged.  The runner cancels handlers when
clients disconnect and uses a short shutdown timeout, so a hung request never
makes ``stop()`` slow.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from aiohttp import web

from .admin import RECORDER_PATH, admin_routes
from .catalog import Catalog, load_catalog
from .literature import mount_literature
from .state import STATE, SandboxState
from .upstreams import upstream_routes

if TYPE_CHECKING:
    from collections.abc import Mapping

    from aiohttp.typedefs import Handler

MAX_REQUEST_BYTES: Final = 64 * 1024 * 1024  # full-text prompts can be large
SHUTDOWN_TIMEOUT_S: Final = 1.0


def build_app(catalog: Catalog | None = None) -> web.Application:
    """The sandbox as an ``aiohttp.web.Application`` (state under ``app[STATE]``)."""
    state = SandboxState(catalog=catalog or load_catalog(), shutdown=asyncio.Event())

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every request is recorded before anything (routing included) can refuse it."""
        if request.path != RECORDER_PATH:
            state.record_request(request)
        return await handler(request)

    app = web.Application(client_max_size=MAX_REQUEST_BYTES, middlewares=[record])
    app[STATE] = state

    async def release_hangs(_: web.Application) -> None:
        state.shutdown.set()

    app.on_shutdown.append(release_hangs)
    app.add_routes(admin_routes())
    app.add_routes(upstream_routes())
    mount_literature(app)
    return app


def provider_base_urls(base_url: str) -> dict[str, str]:
    """What to configure as each provider's base URL / endpoint in a gateway."""
    return {
        "groq": f"{base_url}/groq/openai/v1",
        "openai": f"{base_url}/openai/v1",
        "azure": f"{base_url}/azure",
        "gemini": f"{base_url}/gemini",
    }


@dataclass(slots=True)
class SandboxServer:
    """A listening sandbox; ``await stop()`` when done."""

    runner: web.AppRunner
    host: str
    port: int

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_urls(self) -> dict[str, str]:
        return provider_base_urls(self.base_url)

    @property
    def state(self) -> SandboxState:
        """Direct access for in-process tests (same event loop only)."""
        return self.runner.app[STATE]

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_sandbox(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    keys: str | Mapping[str, object] | None = None,
    models: str | Mapping[str, object] | None = None,
) -> SandboxServer:
    """Start listening on ``host:port`` (0 = any free port) in the running loop."""
    app = build_app(load_catalog(keys, models))
    runner = web.AppRunner(
        app, access_log=None, handler_cancellation=True, shutdown_timeout=SHUTDOWN_TIMEOUT_S
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = int(runner.addresses[0][1])
    return SandboxServer(runner=runner, host=host, port=bound_port)


class SandboxThread:
    """The sandbox on its own event loop in a daemon thread, for sync code.

    ``with SandboxThread() as sb: httpx.get(sb.base_url + "/_health")``
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        keys: str | Mapping[str, object] | None = None,
        models: str | Mapping[str, object] | None = None,
    ) -> None:
        self._args = (host, port)
        self._catalog_args = (keys, models)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="sandbox", daemon=True)
        self._ready = threading.Event()
        self._server: SandboxServer | None = None
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            keys, models = self._catalog_args
            coro = start_sandbox(*self._args, keys=keys, models=models)
            self._server = self._loop.run_until_complete(coro)
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()
            self._loop.close()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    def start(self, timeout: float = 10.0) -> SandboxThread:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("sandbox thread did not start")
        if self._error is not None:
            raise self._error
        return self

    @property
    def server(self) -> SandboxServer:
        if self._server is None:
            raise RuntimeError("sandbox thread not started")
        return self._server

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def base_urls(self) -> dict[str, str]:
        return self.server.base_urls

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is None or not self._thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self._server.stop(), self._loop)
        future.result(timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)

    def __enter__(self) -> SandboxThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
