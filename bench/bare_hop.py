"""`python -m bench.bare_hop`: the floor the gateway is compared with.

A Litestar app with one route that forwards an OpenAI chat body to Groq (the sandbox) with
an httpx client over aiohttp's pool (the gateway's factory, `make_upstream_client`, used
through the plain httpx API: `client.post`) and returns the decoded answer. No DI,
validation, routing, guards or metrics: what is left of the gateway's cost after
subtracting this is the cost of those.
Served by uvicorn with the same options as `python -m app serve`.
"""

from __future__ import annotations

import argparse
from typing import Any

import msgspec
import uvicorn
from litestar import Litestar, get, post

from app.core.http import make_upstream_client


def create_app(upstream: str, key: str, model: str) -> Litestar:
    """One client for the app's life, created at start and closed at shutdown."""
    client = make_upstream_client(upstream, max_connections=200)
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}

    @post("/v1/chat/completions", status_code=200)
    async def chat(data: dict[str, Any]) -> Any:
        data["model"] = model
        response = await client.post(
            "chat/completions", content=msgspec.json.encode(data), headers=headers
        )
        return msgspec.json.decode(response.content)

    @get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    return Litestar(route_handlers=[chat, live], on_shutdown=[client.aclose], debug=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_hop", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--upstream", required=True, help="Groq base URL, e.g. {sandbox}/groq/openai/v1"
    )
    parser.add_argument("--key", default="gsk-sandbox-1")
    parser.add_argument("--model", default="llama-3.1-8b-instant")
    args = parser.parse_args(argv)
    uvicorn.run(
        create_app(args.upstream, args.key, args.model),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
