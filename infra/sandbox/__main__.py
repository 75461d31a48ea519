"""``python -m infra.sandbox``: run the sandbox until SIGINT/SIGTERM.

``--port 0`` picks a free port; ``--port-file`` receives it (written atomically,
once listening) so a test can start the process and wait for the file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path

from .catalog import PROVIDERS
from .server import start_sandbox
from .state import STATE

log = logging.getLogger("infra.sandbox")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m infra.sandbox",
        description="Simulated Groq/OpenAI/Azure OpenAI/Gemini upstreams with chaos controls.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8900, help="0 = any free port (default 8900)")
    parser.add_argument("--port-file", type=Path, help="write the bound port here once listening")
    parser.add_argument(
        "--keys-json",
        help='accepted keys per provider, e.g. \'{"groq":["k1","k2"]}\' (env SANDBOX_KEYS)',
    )
    parser.add_argument(
        "--models-json",
        help='served models per provider, e.g. \'{"gemini":["gemini-1.5-flash"]}\''
        " (env SANDBOX_MODELS)",
    )
    parser.add_argument(
        "--chaos-json", help='initial chaos per provider, e.g. \'{"groq":{"latency_ms":50}}\''
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return parser.parse_args(argv)


def _write_port_file(path: Path, port: int) -> None:
    """Atomic, so a poller never reads a half-written number."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{port}\n")
    tmp.replace(path)


async def serve(args: argparse.Namespace) -> None:
    server = await start_sandbox(args.host, args.port, keys=args.keys_json, models=args.models_json)
    try:
        if args.chaos_json:
            initial = json.loads(args.chaos_json)
            for provider, config in initial.items():
                if provider not in PROVIDERS:
                    raise SystemExit(f"--chaos-json: unknown provider {provider!r}")
                server.runner.app[STATE].chaos[provider].put(config)
        if args.port_file:
            _write_port_file(args.port_file, server.port)
        log.info("sandbox listening on %s", server.base_url)
        for name, url in server.base_urls.items():
            log.info("  %-6s %s", name, url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await server.stop()
        log.info("sandbox stopped")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s sandbox %(message)s"
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
