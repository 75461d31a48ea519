"""Command line: `python -m app serve|check-config|demo`."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from pydantic import ValidationError

from app.core.logging import configure_logging
from app.core.masking import mask_url
from app.core.settings import Settings


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        # Show which variable is wrong, never its value (it may be a key).
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]).upper()
            print(f"configuration error: {where}: {error['msg']}", file=sys.stderr)
        raise SystemExit(2) from None


def serve(args: argparse.Namespace) -> int:
    from app.core.server import DescriptorBudgetError, plan_limits, run_server
    from app.main import ConfigurationError, create_app

    settings = _settings()
    configure_logging(settings.log_level)
    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    configured = [n.value for n in settings.ai_provider_priority if settings.provider(n).configured]
    logging.getLogger("app").info(
        "starting host=%s port=%s providers_configured=%s ledger=%s",
        host,
        port,
        ",".join(configured) or "none",
        mask_url(settings.database_url),
    )
    try:
        # Slow and idle clients are bounded (app.core.server): the numbers come first, so a
        # descriptor limit too low for the pools is a configuration error, not a late EMFILE.
        limits = plan_limits(settings)
        app = create_app(settings)
    except (ConfigurationError, DescriptorBudgetError) as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    return run_server(
        app, host=host, port=port, limits=limits, log_level=settings.log_level.lower()
    )


def check_config(_: argparse.Namespace) -> int:
    print(json.dumps(_settings().masked(), indent=2))
    return 0


def demo(args: argparse.Namespace) -> int:
    from app.demo import run_demo

    return run_demo()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the HTTP service")
    serve_cmd.add_argument("--host", default=None, help="bind address (default HOST or 127.0.0.1)")
    serve_cmd.add_argument("--port", type=int, default=None, help="port (default PORT or 8000)")
    serve_cmd.set_defaults(func=serve)
    commands.add_parser(
        "check-config", help="print the effective configuration, secrets masked"
    ).set_defaults(func=check_config)
    commands.add_parser(
        "demo", help="run the service against the sandbox and show fallback"
    ).set_defaults(func=demo)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
