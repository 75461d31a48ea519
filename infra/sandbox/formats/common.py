"""Provider-neutral pieces: the request view, replies, token maths, JSON helpers.

Builders return plain bytes + headers (no aiohttp) so they stay cheap per request
and trivially testable.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final

from .schema_instance import instance_for

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..catalog import Provider
    from ..chaos import RateView


JSON_CT: Final = "application/json"
SSE_CT: Final = "text/event-stream; charset=utf-8"
STREAM_PIECE_CHARS: Final = 16

HTML_BODY: Final = (
    b"<!DOCTYPE html><html lang='en-US'><head><title>Just a moment...</title></head>"
    b"<body><h1>Checking your browser before accessing the API.</h1>"
    b"<p>This process is automatic.</p></body></html>"
)


@dataclass(slots=True, frozen=True)
class Reply:
    """A complete HTTP answer: status, body bytes and headers (incl. Content-Type)."""

    status: int
    body: bytes
    headers: Mapping[str, str]


@dataclass(slots=True)
class ChatRequest:
    """Provider-neutral view of a chat request: just what the sandbox needs."""

    model: str
    texts: list[str]
    last_user_text: str
    json_mode: bool = False
    max_tokens: int | None = None
    stream: bool = False
    include_usage: bool = False
    # The response schema asked for (OpenAI's json_schema.schema, Gemini's responseSchema).
    schema: Any = None


@dataclass(slots=True, frozen=True)
class Usage:
    """Deterministic token accounting (see :func:`usage_for`)."""

    prompt: int
    completion: int

    @property
    def total(self) -> int:
        return self.prompt + self.completion


class BadRequest(Exception):
    """The request body is invalid; rendered by the dialect as its 400."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(slots=True)
class CallInfo:
    """Per-call facts some error texts and headers mention."""

    model: str = ""
    api_version: str | None = None
    rate: RateView | None = None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)


# -- helpers -------------------------------------------------------------------


def dumps(obj: Any, *, pretty: bool = False) -> bytes:
    """JSON bytes; ``pretty`` mimics APIs that indent (OpenAI, Google)."""
    if pretty:
        return json.dumps(obj, ensure_ascii=False, indent=2).encode()
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def fmt_seconds(value: float) -> str:
    """``2`` for whole seconds, ``0.25`` otherwise (what SDKs parse as float)."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def fmt_duration(seconds: float) -> str:
    """Groq/OpenAI style durations for x-ratelimit-reset-*: ``1m2.5s`` / ``7.66s``."""
    if seconds >= 60:
        minutes, rest = divmod(seconds, 60)
        return f"{int(minutes)}m{rest:.3g}s"
    return f"{seconds:.3g}s"


def usage_for(req: ChatRequest, content: str) -> Usage:
    """prompt = sum(len(text)//4 + 4) (>=1); completion = len//4 + 1, capped by max."""
    prompt = max(1, sum(len(t) // 4 + 4 for t in req.texts))
    completion = len(content) // 4 + 1
    if req.max_tokens is not None:
        completion = min(completion, req.max_tokens)
    return Usage(prompt=prompt, completion=completion)


def answer_for(provider: Provider, req: ChatRequest, override: str | None) -> str:
    """The deterministic answer text (chaos ``content`` wins verbatim)."""
    if override is not None:
        return override
    echo = req.last_user_text[:60]
    if req.schema is not None:
        return json.dumps(instance_for(req.schema))
    if req.json_mode:
        return json.dumps({"provider": provider, "model": req.model, "echo": echo})
    return f"[sandbox:{provider}/{req.model}] {echo}"


def pieces(text: str) -> list[str]:
    """Split streamed content into small deterministic deltas."""
    if not text:
        return [""]
    return [text[i : i + STREAM_PIECE_CHARS] for i in range(0, len(text), STREAM_PIECE_CHARS)]


def json_reply(
    status: int,
    obj: Any,
    headers: Mapping[str, str] | None = None,
    *,
    pretty: bool = False,
    content_type: str = JSON_CT,
) -> Reply:
    return Reply(
        status, dumps(obj, pretty=pretty), {"Content-Type": content_type, **(headers or {})}
    )


def reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def openai_text(content: object) -> str:
    """Text of an OpenAI message ``content`` (string or list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "")
            for p in content
            if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def html_reply() -> Reply:
    """A 200 that is not JSON at all (captive portal / CDN challenge page)."""
    return Reply(200, HTML_BODY, {"Content-Type": "text/html; charset=UTF-8"})


def truncate(reply: Reply) -> Reply:
    """Same status/headers, body cut mid-JSON so parsers fail."""
    body = reply.body
    return Reply(reply.status, body[: max(1, len(body) // 2)], reply.headers)
