"""What the deploy artifacts (infra/Dockerfile, infra/compose.yaml, infra/k8s/) are checked
against: the routes the real app serves, the variables the real settings read, and the
server's real graceful-shutdown time. Read from the code, so a renamed route or variable
fails these checks instead of a deployment."""

from __future__ import annotations

import ast
import inspect
import logging
import warnings
from functools import cache
from pathlib import Path

from app.core import server
from app.core.secret_files import env_names
from app.core.settings import Settings
from app.main import create_app

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
# The port the image, compose and the manifests serve on (the settings' default PORT).
SERVICE_PORT = 8000


@cache
def served_routes() -> frozenset[str]:
    """Every path of the app `serve` runs (built, not started: no database, no network)."""
    logging.getLogger("app").disabled = True  # the "auth disabled" warning is expected here
    try:
        with warnings.catch_warnings():  # only the paths matter here (other tests own warnings)
            warnings.simplefilter("ignore")
            app = create_app(Settings(gateway_auth="disabled"))
    finally:
        logging.getLogger("app").disabled = False
    return frozenset(app.route_handler_method_map)


@cache
def known_env_names() -> frozenset[str]:
    """Every variable the settings read, and the `<NAME>_FILE` of every secret one."""
    names = env_names(Settings)
    return frozenset(names) | {f"{name}_FILE" for name, secret in names.items() if secret}


@cache
def secret_env_names() -> frozenset[str]:
    return frozenset(name for name, secret in env_names(Settings).items() if secret)


@cache
def graceful_shutdown_s() -> float:
    """`timeout_graceful_shutdown` as `run_server` passes it to uvicorn (a literal there)."""
    tree = ast.parse(inspect.getsource(server.run_server))
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "timeout_graceful_shutdown":
            value = ast.literal_eval(node.value)
            assert isinstance(value, int | float)
            return float(value)
    raise AssertionError("run_server no longer passes timeout_graceful_shutdown as a literal")


def parse_duration_s(text: str) -> float:
    """`40s`, `1m30s`, `500ms` (compose and Docker durations) in seconds."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    total, number = 0.0, ""
    rest = text.strip()
    while rest:
        if rest[0].isdigit() or rest[0] == ".":
            number += rest[0]
            rest = rest[1:]
            continue
        unit = "ms" if rest.startswith("ms") else rest[0]
        if unit not in units or not number:
            raise ValueError(f"not a duration: {text!r}")
        total += float(number) * units[unit]
        number, rest = "", rest[len(unit) :]
    if number:
        raise ValueError(f"a duration needs a unit: {text!r}")
    return total
