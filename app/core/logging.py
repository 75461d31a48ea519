"""Logging: one line per event, as JSON (LOG_FORMAT=json, the default for `serve`) or
key=value text, for our loggers and uvicorn's alike; never a secret or a prompt.

JSON lines come from python-json-logger. Every line written while a request is served carries
its `request_id`, and its `trace_id` / `span_id` when tracing is on (`RequestContextFilter`,
reading the context variables of app.core.request_id and app.core.tracing), so one grep for
an id finds every line about that request.

The configuration is one `logging.config.dictConfig` document (`logging_config`), applied at
start and handed to uvicorn as its `log_config`: uvicorn applies it again in every worker
process it spawns, so workers log in the same format.
"""

from __future__ import annotations

import logging
import logging.config
from typing import Any, Literal

from app.core.request_id import current_request_id
from app.core.tracing import current_ids

LogFormat = Literal["json", "text"]

# uvicorn's records carry a `color_message` copy of the message for its own colour formatter.
_UVICORN_EXTRAS = ("color_message",)
_TEXT_FORMAT = (
    "%(asctime)s level=%(levelname)s logger=%(name)s request_id=%(request_id)s %(message)s"
)


class RequestContextFilter(logging.Filter):
    """Adds the request id (and trace and span ids) of the request being served, if any."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = current_request_id()
        if request_id is not None:
            record.request_id = request_id
            ids = current_ids()
            if ids is not None:
                record.trace_id, record.span_id = ids
        return True


def logging_config(level: str, fmt: LogFormat = "json") -> dict[str, Any]:
    """The whole logging setup as a dictConfig document (also uvicorn's `log_config`)."""
    from pythonjsonlogger.core import RESERVED_ATTRS

    formatter: dict[str, Any]
    if fmt == "json":
        formatter = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": ["asctime", "levelname", "name", "message"],
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            "reserved_attrs": [*RESERVED_ATTRS, *_UVICORN_EXTRAS],
        }
    else:
        formatter = {
            "()": "logging.Formatter",
            "fmt": _TEXT_FORMAT,
            "defaults": {"request_id": "-"},
        }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request": {"()": "app.core.logging.RequestContextFilter"}},
        "formatters": {"default": formatter},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "default",
                "filters": ["request"],
            }
        },
        "root": {"handlers": ["default"], "level": level},
        "loggers": {
            # uvicorn's loggers write through the root handler (same format, same filter).
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": level, "propagate": True},
            # httpx logs every request URL at INFO; our own events say what matters.
            "httpx": {"level": "WARNING"},
        },
    }


def configure_logging(level: str, fmt: LogFormat = "json") -> None:
    logging.config.dictConfig(logging_config(level, fmt))
