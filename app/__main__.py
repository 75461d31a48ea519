"""Command line: `python -m app serve|check-config|demo`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import TYPE_CHECKING

from pydantic import ValidationError

from app.core.config_check import error_lines, unknown_variables
from app.core.logging import configure_logging, logging_config
from app.core.masking import mask_url
from app.core.settings import Settings

if TYPE_CHECKING:
    from app.core.server import ConnectionLimits


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        # Show which variable is wrong (the whole name: GROQ_TIMEOUT_S), never its value.
        for line in error_lines(exc):
            print(f"configuration error: {line}", file=sys.stderr)
        raise SystemExit(2) from None


# What each worker process loads (uvicorn needs an import string for workers): the factory
# reads the settings from the environment the workers inherit.
WORKER_APP = "app.main:create_app"


def workers_problem(settings: Settings, workers: int) -> str | None:
    """Why `workers` processes cannot run with these settings, or None."""
    if not 1 <= workers <= 64:
        return f"--workers {workers}: between 1 and 64"
    if workers > 1 and settings.redis_url is None:
        return (
            f"{workers} workers need REDIS_URL: budgets, key limits and circuit breakers "
            "must be shared between processes to stay exact (each worker alone would spend "
            "the whole daily budget). Set REDIS_URL=redis://... or run one worker (WORKERS=1)"
        )
    if workers > 1 and settings.metrics_port_base + workers - 1 > 65535:
        return (
            f"METRICS_PORT_BASE {settings.metrics_port_base} leaves no port for {workers} workers"
        )
    return None


def deployment_notes(settings: Settings, workers: int) -> list[str]:
    """What an operator scaling out should know about these settings (check-config, serve)."""
    notes: list[str] = []
    several = workers > 1 or settings.redis_url is not None
    if several and settings.database_url.startswith("sqlite"):
        notes.append(
            "the usage ledger is SQLite (DATABASE_URL): it serves the workers of one machine; "
            "replicas on several machines need a shared ledger database "
            "(PostgreSQL: DATABASE_URL=postgresql+asyncpg://...)"
        )
    if (problem := workers_problem(settings, workers)) is not None:
        notes.append(f"serve will refuse to start: {problem}")
    return notes


def serve(args: argparse.Namespace) -> int:
    from app.core.server import DescriptorBudgetError, plan_limits, run_server
    from app.main import ConfigurationError, create_app

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    workers = args.workers if args.workers is not None else settings.workers
    if (problem := workers_problem(settings, workers)) is not None:
        print(f"configuration error: {problem}", file=sys.stderr)
        return 2
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
    for unknown in unknown_variables(os.environ):  # a typo would leave a default in force
        logging.getLogger("app").warning("configuration: %s", unknown.message())
    try:
        # Slow and idle clients are bounded (app.core.server): the numbers come first, so a
        # descriptor limit too low for the pools is a configuration error, not a late EMFILE.
        limits = plan_limits(settings)
        app = create_app(settings)
    except (ConfigurationError, DescriptorBudgetError) as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if workers > 1:
        return _serve_workers(settings, workers, host, port, limits)
    return run_server(
        app,
        host=host,
        port=port,
        limits=limits,
        log_level=settings.log_level.lower(),
        log_config=logging_config(settings.log_level, settings.log_format),
    )


def _serve_workers(
    settings: Settings, workers: int, host: str, port: int, limits: ConnectionLimits
) -> int:
    """Several processes on one socket (app.core.workers). The app above only proved the
    settings can run; each worker builds its own from the environment it inherits."""
    import asyncio

    from app.core.db import migrate
    from app.core.server import run_server

    for note in deployment_notes(settings, workers):
        logging.getLogger("app").warning("%s", note)
    os.environ["WORKERS"] = str(workers)  # `--workers` reaches the workers' settings
    # Once here, not N times at once in the workers (concurrent migrations race).
    asyncio.run(migrate(settings.database_url))
    return run_server(
        WORKER_APP,
        host=host,
        port=port,
        limits=limits,
        log_level=settings.log_level.lower(),
        workers=workers,
        log_config=logging_config(settings.log_level, settings.log_format),
    )


def check_config(_: argparse.Namespace) -> int:
    settings = _settings()
    report = settings.masked()
    unknown = unknown_variables(os.environ)
    if unknown:  # listed, not refused: see app.core.config_check
        report["unknown_variables"] = {u.name: u.nearest for u in unknown}
        for variable in unknown:
            print(f"warning: {variable.message()}", file=sys.stderr)
    notes = deployment_notes(settings, settings.workers)
    if notes:
        report["notes"] = notes
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
    print(json.dumps(report, indent=2))
    return 0


def demo(args: argparse.Namespace) -> int:
    from app.demo import run_demo

    return run_demo()


def _version_line() -> str:
    from app.core.version import DISTRIBUTION, build_info

    build = build_info()
    return f"{DISTRIBUTION} {build.version} (commit {build.commit})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    parser.add_argument(
        "--version", action="version", version=_version_line(), help="print version and commit"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the HTTP service")
    serve_cmd.add_argument("--host", default=None, help="bind address (default HOST or 127.0.0.1)")
    serve_cmd.add_argument("--port", type=int, default=None, help="port (default PORT or 8000)")
    serve_cmd.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes on this machine (default WORKERS or 1; more than 1 needs REDIS_URL)",
    )
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
