"""Input bounds that keep every assessment fast, whatever a server sends.

Two things make an HTML page expensive: its size, and its nesting depth. Size is simply capped.
Depth needs a guard of its own because the HTML parsing algorithm (lexbor follows the standard)
scans the stack of open elements for many tags, so parse time grows with tags x depth: 20,000
nested `<div>`s take ~0.75 s and 200,000 take minutes. Browsers bound this too (Blink stops
nesting at 512). The guard is a linear scan of tag names with one regex, an estimate of depth
that ignores void and implicitly-closed elements, used only to decide where to cut the input;
structure itself is always read from the parsed DOM.
"""

from __future__ import annotations

import re
from itertools import accumulate

MAX_HTML_CHARS = 3_000_000
MAX_NESTING = 400

_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9]*)")
# Elements that stay open until explicitly closed, so unclosed ones pile up on the stack.
# Void elements (br, img, ...) and those closed by their next sibling (p, li, td, ...) do not.
_CONTAINERS = frozenset(
    {
        *("div", "span", "font", "section", "article", "main", "aside", "nav", "header"),
        *("footer", "figure", "table", "tbody", "blockquote", "ul", "ol", "dl", "center"),
        *("form", "fieldset", "details", "object", "button", "select", "label"),
        *("a", "b", "i", "u", "s", "em", "strong", "small", "big", "sup", "sub", "mark"),
        *("code", "pre", "q", "cite", "abbr"),
    }
)


def bounded_html(html: str) -> tuple[str, bool]:
    """The part of `html` that is safe to parse, and whether anything was cut off."""
    truncated = len(html) > MAX_HTML_CHARS
    capped = html[:MAX_HTML_CHARS]
    deltas = [
        -1 if slash else 1 for slash, name in _TAG.findall(capped) if name.casefold() in _CONTAINERS
    ]
    if max(accumulate(deltas), default=0) <= MAX_NESTING:
        return capped, truncated
    return capped[: _too_deep_at(capped)], True


def _too_deep_at(html: str) -> int:
    """Where the estimated nesting depth first exceeds the limit."""
    depth = 0
    for match in _TAG.finditer(html):
        if match.group(2).casefold() not in _CONTAINERS:
            continue
        depth += -1 if match.group(1) else 1
        if depth > MAX_NESTING:
            return match.start()
    return len(html)
