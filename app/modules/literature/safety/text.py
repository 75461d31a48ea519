"""Untrusted text on its way in: page bytes decoded for the HTML parser, page text made safe
to quote in a prompt."""

from __future__ import annotations

import codecs
import re
import unicodedata
from dataclasses import dataclass

_META_CHARSET = re.compile(
    rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([a-zA-Z0-9_.:-]{1,40})""", re.IGNORECASE
)
_HEADER_CHARSET = re.compile(r"charset\s*=\s*\"?([a-zA-Z0-9_.:-]{1,40})", re.I)
_HTML_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def html_charset(data: bytes, content_type: str | None) -> str:
    """The encoding to read a page with: BOM, then header, then `<meta charset>`, then UTF-8;
    an unknown name falls back to UTF-8 instead of failing."""
    if data.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    candidates: list[str] = []
    if content_type and (match := _HEADER_CHARSET.search(content_type)):
        candidates.append(match.group(1))
    if match_meta := _META_CHARSET.search(data[:4096]):
        candidates.append(match_meta.group(1).decode("ascii", "ignore"))
    for name in candidates:
        try:
            return codecs.lookup(name).name
        except LookupError:
            continue
    return "utf-8"


def sanitize_html(data: bytes, content_type: str | None, *, max_chars: int) -> str:
    """Decode a fetched page for the parser: a known encoding, invalid bytes replaced,
    control characters (NUL first: C parsers stop at it) removed, length capped."""
    text = data.decode(html_charset(data, content_type), errors="replace")
    return _HTML_CONTROL.sub("", text[:max_chars])


# Invisible and direction-changing characters that hide instructions from a human reviewer.
_INVISIBLE = re.compile("[\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")
_TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Text written to steer a model rather than to be read: instructions aimed at "you", chat
# template tokens, role prefixes, code fences and fragments of our own answer format.
_INJECTION = re.compile(
    "|".join(
        [
            r"\b(?:ignore|disregard|forget|override|bypass)\b[^\n.]{0,60}?"
            r"\b(?:instructions?|prompts?|rules|directions|guidelines|context|system)\b",
            r"\byou\s+(?:are|must|should|will)\s+now\b",
            r"\b(?:new|updated|revised)\s+(?:instructions?|task|rules)\b",
            r"\bsystem\s+prompt\b",
            r"\b(?:respond|answer|reply|output|return|classify)\b[^\n.]{0,40}?"
            r"(?:\bas\b|\bwith\b|:)\s*[\"'`{]",
            r"<\|[^|>\n]{0,40}\|>",
            r"\[/?(?:INST|SYS)\]",
            r"<</?SYS>>",
            r"^\s*(?:system|assistant|user|developer|tool)\s*:",
            r"`{3,}",
            r"\"?(?:is_full_text|content_type|recommendation|decided_by)\"?\s*:",
            # Our answer's own keys are no words of an article: a page naming them is talking
            # to the classifier ("answer is_full_text true").
            r"\b(?:is_full_text|decided_by|needs_review)\b",
        ]
    ),
    re.IGNORECASE | re.MULTILINE,
)
_ANGLE_RUNS = re.compile(r"<{3,}|>{3,}")
_SPACES = re.compile(r"[ \t\u00a0]+")
_BLANK_LINES = re.compile(r"\n\s*\n(?:\s*\n)+")
REMOVED = "[removed]"
_ROLE_ANYWHERE = re.compile(r"\b(?:system|assistant|user|developer|tool)\s*:", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class PromptText:
    text: str
    removed: int  # instruction-like fragments neutralised
    truncated: bool


def sanitize_for_prompt(text: str, *, max_chars: int) -> PromptText:
    """Make untrusted page text safe to quote in a prompt.

    Unicode is normalised (NFKC turns full-width letters into ASCII, so disguised
    instructions are caught), invisible and control characters go, instruction-like fragments
    become `[removed]`, runs of angle brackets (our delimiters) are broken up, and the text is
    cut to `max_chars`, keeping its beginning and its end: the end is where the references of
    a full article are, one of the strongest signs of full text.
    """
    clean = unicodedata.normalize("NFKC", text)
    clean = _INVISIBLE.sub("", clean)
    clean = _TEXT_CONTROL.sub(" ", clean)
    clean, removed = _INJECTION.subn(REMOVED, clean)
    clean = _ANGLE_RUNS.sub(lambda m: m.group(0)[0], clean)
    clean = _SPACES.sub(" ", clean)
    clean = _BLANK_LINES.sub("\n\n", clean).strip()
    truncated = len(clean) > max_chars
    if truncated:
        head = int(max_chars * 0.7)
        tail = max_chars - head - 7
        clean = clean[:head] + "\n[...]\n" + clean[-tail:]
    return PromptText(clean, removed, truncated)


def sanitize_field(value: str | None, *, max_chars: int = 500) -> str:
    """A short caller-supplied field (title, DOI) for a prompt: the same cleaning, then one
    line, and no role marker anywhere in it (a field has no business containing one)."""
    if not value:
        return ""
    cleaned = sanitize_for_prompt(value, max_chars=max_chars).text
    return _ROLE_ANYWHERE.sub(REMOVED, " ".join(cleaned.split()))
