"""Wire formats of the four simulated upstreams: requests in, bodies/errors out.

One dialect per provider knows how that provider authenticates, what its chat
request looks like, and how it spells success, streaming and every error.  Shapes
follow what the real APIs send, including the quirks gateways trip over (Azure's
filter-only first stream chunk, Gemini's 400 for a bad key, Groq's ``x_groq``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from .azure import AzureDialect
from .common import (
    BadRequest,
    CallInfo,
    ChatRequest,
    Reply,
    Usage,
    answer_for,
    html_reply,
    truncate,
    usage_for,
)
from .gemini import GeminiDialect
from .openai import GroqDialect, OpenAIDialect

if TYPE_CHECKING:
    from ..catalog import Provider

Dialect = OpenAIDialect | GeminiDialect

DIALECTS: Final[dict[Provider, Dialect]] = {
    "groq": GroqDialect(),
    "openai": OpenAIDialect(),
    "azure": AzureDialect(),
    "gemini": GeminiDialect(),
}

__all__ = [
    "DIALECTS",
    "AzureDialect",
    "BadRequest",
    "CallInfo",
    "ChatRequest",
    "Dialect",
    "GeminiDialect",
    "GroqDialect",
    "OpenAIDialect",
    "Reply",
    "Usage",
    "answer_for",
    "html_reply",
    "truncate",
    "usage_for",
]
