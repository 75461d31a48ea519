"""A rough token count, used only when an upstream answers without a usage block."""

from __future__ import annotations

from collections.abc import Sequence

from app.modules.ai.domain import ChatMessage

# About four characters per token for English text with the common BPE vocabularies.
CHARS_PER_TOKEN = 4
# Role and separator tokens the chat templates add per message.
TOKENS_PER_MESSAGE = 4


def estimate_tokens(text: str | Sequence[ChatMessage]) -> int:
    if isinstance(text, str):
        return max(1, len(text) // CHARS_PER_TOKEN)
    return sum(len(m.content) // CHARS_PER_TOKEN + TOKENS_PER_MESSAGE for m in text)
