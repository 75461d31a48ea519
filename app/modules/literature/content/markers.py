"""Phrases and patterns read from a page's *text* (never its markup): walls, citations, DOIs.

Wall phrases are the words a human would read on the wall itself ("Buy this article", "Checking
your browser"); they are matched on the visible text of the whole page, boilerplate included,
because publishers put their access boxes in sidebars that boilerplate removal throws away.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class _Phrase:
    """A phrase pattern and the literal text it must start with.

    `str.__contains__` on the literal is ~20x cheaper than a regex search, and most literals are
    absent from any given page, so most patterns never run. One big alternation instead costs
    ~8 ms on a long article: the regex engine tries every branch at every position.
    """

    literal: str
    pattern: re.Pattern[str]

    def occurs_in(self, text: str) -> bool:
        return self.literal in text and self.pattern.search(text) is not None


_LEADING_LITERAL = re.compile(r"[\w !'-]+")


def _compile(*phrases: str) -> tuple[_Phrase, ...]:
    compiled: list[_Phrase] = []
    for phrase in phrases:
        match = _LEADING_LITERAL.match(phrase)
        literal = match.group(0) if match else ""
        if literal and phrase[len(literal) : len(literal) + 1] in ("?", "*", "{"):
            literal = literal[:-1]  # the last character is optional, so not part of the literal
        if literal.endswith("\\"):
            literal = literal[:-1]
        compiled.append(_Phrase(literal, re.compile(phrase)))
    return tuple(compiled)


# Bot and cookie walls: a page that is nothing but a challenge before the real content.
_CHALLENGE = _compile(
    r"checking if the site connection is secure",
    r"checking your browser",
    r"security check to access",
    r"verify you are (?:a )?human",
    r"verifying you are (?:a )?human",
    r"are you a robot",
    r"not a robot",
    r"unusual traffic from your",
    r"ddos protection by",
    r"attention required",
    r"enable javascript and cookies to continue",
    r"please enable cookies",
    r"please enable javascript",
    r"please enable js",
    r"javascript is (?:disabled|required)",
    r"why do i have to complete a captcha",
    r"captcha\b",
    r"access denied",
    r"403 forbidden",
    r"access to this page has been denied",
    r"request unsuccessful",
    r"your browser will redirect to your requested content",
)

# Cookie-consent walls: only meaningful on a page that shows nothing else.
_COOKIE = _compile(
    r"before you continue",
    r"accept all cookies",
    r"accept cookies",
    r"we use cookies",
    r"cookie settings",
    r"cookie preferences",
    r"manage (?:your )?(?:cookie|consent|privacy) ",
    r"consent to (?:the use of )?cookies",
)

# Purchase and subscription offers for the article itself.
_PAYWALL = _compile(
    # "Buy this article in print" sells a printed copy of an open article: no wall.
    r"buy (?:this )?(?:article|chapter|issue|pdf|now)(?! in print)",
    r"buy \(pdf\)",
    r"buy article",
    r"purchase (?:this |the )?(?:article|chapter|access|pdf|content|options)",
    r"purchase (?:short[- ]term|24[- ]hour|instant) access",
    r"rent (?:this|the) article",
    r"pay[- ]per[- ]view",
    r"price includes vat",
    r"instant access",
    r"get access",
    r"access through your institution",
    r"access via your institution",
    r"check access",
    r"(?:log|sign) ?in to check (?:your )?access",
    r"check for access",
    r"institutional access",
    r"subscribe (?:now )?to (?:read|view|access|continue|the journal)",
    r"log in or (?:subscribe|purchase)",
    r"sign in or (?:subscribe|purchase)",
    r"you do not (?:currently )?have (?:full[- ]text )?access",
    r"available to (?:subscribers|members|registered)",
    r"to read (?:the )?(?:full|whole|rest of)",
    r"to view (?:the )?(?:full|whole|rest of)",
    r"to access (?:the )?(?:full|whole|rest of)",
    r"access options",
    r"preview of subscription content",
)

# Login walls: the page asks for an identity before showing anything.
_LOGIN = _compile(
    r"sign ?in to (?:view|access|read|continue|download|see)",
    r"log ?in to (?:view|access|read|continue|download|see)",
    r"please (?:sign|log) ?in\b",
    r"you must (?:be )?(?:logged|signed) in",
    r"sign ?in with your (?:institution|account)",
    r"log ?in with your (?:institution|account)",
    r"institutional (?:sign|log) ?in",
    r"forgot (?:your )?password",
    r"username and password",
    r"email and password",
    # Email-first account pages (Springer Nature, Elsevier): no password field until later.
    r"(?:log|sign) ?in,? or register",
    r"register a new account",
)

# News, blog and forum shapes: what a scholarly article page does not carry.
_NEWS = _compile(
    r"leave a (?:reply|comment)",
    r"posted (?:by|on|in)\b",
    r"share (?:this|on)\b",
    r"related (?:stories|articles|posts|news)",
    r"newsletter",
    r"most (?:popular|read)\b",
    r"comments? ?\(\d+\)",
    r"read more\b",
)

_NUMERIC_CITATION = re.compile(r"\[\s*\d{1,3}(?:\s*[,\u2013\u2014-]\s*\d{1,3})*\s*\]")
# Author-year citations are found from their year: years are few in a text, while a pattern
# starting with a capitalised name would be tried at every capital letter.
_CITED_YEAR = re.compile(r"(?<=[ (])(?:19|20)\d\d[a-z]?[);,]")
_AUTHOR_BEFORE_YEAR = re.compile(
    r"[A-Z][\w'\u2019-]+(?: et al\.?| (?:and|&) [A-Z][\w'\u2019-]+)?,? \(?$"
)
_AUTHOR_WINDOW = 60
DOI_PATTERN = re.compile(r"10\.\d{4,9}/[^\s\"'<>]+")
_WORD = re.compile(r"\w+")

_TEXT_CAP = 400_000


@dataclass(frozen=True, slots=True)
class WallHits:
    """How many distinct wall phrases of each kind the page's visible text holds."""

    challenge: int
    cookie: int
    paywall: int
    login: int
    news: int


def wall_hits(visible_text: str) -> WallHits:
    """Count distinct wall phrases; distinct, so a sidebar repeated ten times counts once."""
    text = " ".join(visible_text[:_TEXT_CAP].casefold().split())
    return WallHits(
        challenge=_distinct(_CHALLENGE, text),
        cookie=_distinct(_COOKIE, text),
        paywall=_distinct(_PAYWALL, text),
        login=_distinct(_LOGIN, text),
        news=_distinct(_NEWS, text),
    )


def _distinct(phrases: tuple[_Phrase, ...], text: str) -> int:
    """How many of the phrases occur (each phrase counts once however often it repeats)."""
    return sum(1 for phrase in phrases if phrase.occurs_in(text))


def citation_markers(prose: str) -> int:
    """In-text citations: "[12]", "[3-5]", "Smith et al. 2010", "(Jones, 2003)"."""
    text = prose[:_TEXT_CAP]
    numeric = len(_NUMERIC_CITATION.findall(text))
    author_year = sum(
        1
        for match in _CITED_YEAR.finditer(text)
        if _AUTHOR_BEFORE_YEAR.search(text, max(0, match.start() - _AUTHOR_WINDOW), match.start())
    )
    return numeric + max(author_year, text.count("et al"))


def numeric_citations(prose: str) -> int:
    """Only the numbered citations ("[12]", "[3-5]") among `citation_markers`."""
    return len(_NUMERIC_CITATION.findall(prose[:_TEXT_CAP]))


def find_dois(text: str, limit: int = 50) -> list[str]:
    """DOIs written in a text, lower-cased and without trailing punctuation."""
    found: list[str] = []
    for match in DOI_PATTERN.finditer(text[:_TEXT_CAP]):
        found.append(match.group(0).rstrip(".,;)]}").casefold())
        if len(found) >= limit:
            break
    return found


def words(text: str) -> list[str]:
    """Accent-folded lower-case words, for comparing a known title with a page."""
    folded = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(ch for ch in folded if not unicodedata.combining(ch))
    return _WORD.findall(plain)


def title_matches(title: str, candidates: list[str], page_text: str) -> bool:
    """Whether the paper's title is the page's title or appears in its opening text.

    Exact string comparison fails on punctuation, italics split into words and HTML entities, so
    titles are compared as word sequences: the whole sequence inside a candidate or the text, or
    at least 85% of the title's longer words present in a candidate.
    """
    wanted = words(title)
    if len(wanted) < 2:
        return False
    needle = " " + " ".join(wanted) + " "
    haystacks = [*candidates, page_text[:20_000]]
    for haystack in haystacks:
        if needle in " " + " ".join(words(haystack)) + " ":
            return True
    long_words = {w for w in wanted if len(w) > 3}
    if not long_words:
        return False
    for candidate in candidates:
        present = long_words & set(words(candidate))
        if len(present) >= 0.85 * len(long_words):
            return True
    return False
