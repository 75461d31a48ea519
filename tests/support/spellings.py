"""Hostile spellings of forbidden addresses, for the SSRF guard's tests.

The tables are built by scanning Unicode, not by hand, so no family is forgotten:

- `DIGIT_FAMILIES`: every set of characters NFKC maps one-to-one onto the ASCII digits
  (fullwidth, circled, superscript, subscript, mathematical bold/double-struck/sans-serif/
  monospace, segmented ...), keyed by their Unicode name with the digit's word taken out;
- `CHUNKS`: characters NFKC maps onto *several* digits and dots (`⑩` is "10", `⒎` is "7.",
  `🄀` is "0."), so one character can stand for a piece of an address;
- `DOTS`: every character NFKC maps to a full stop or to U+3002, plus U+3002 itself (IDNA's
  label separators: UTS-46 and IDNA 2003 treat it as a dot though NFKC does not);
- `HEX_LETTERS`: characters NFKC maps onto `a-f` and `x` (either case), for `0x7f` spellings;
- `IGNORABLES`: characters UTS-46 maps to nothing (soft hyphen, ZWSP, variation selectors ...).

`spelling()` is a hypothesis strategy writing an ASCII host with any mix of them;
`sample_spellings()` draws the same kinds of spellings from a seeded `random.Random` for tests
that cannot run under `@given` (the integration tests), covering every family and separator.
"""

from __future__ import annotations

import ipaddress
import random
import sys
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import idna
from hypothesis import strategies as st

_DIGIT_WORDS = ("ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")
_NUMBER_CHARS = frozenset("0123456789.")


@dataclass(frozen=True, slots=True)
class Tables:
    digit_families: dict[str, dict[str, str]]  # family -> ASCII digit -> character
    chunks: dict[str, tuple[str, ...]]  # ASCII digits/dots -> characters NFKC maps onto them
    dots: tuple[str, ...]
    hex_letters: dict[str, tuple[str, ...]]  # a-f, x -> characters
    ignorables: tuple[str, ...]


def _family(char: str) -> str:
    words = unicodedata.name(char, "UNNAMED").split()
    for index in range(len(words) - 1, -1, -1):
        if words[index] in _DIGIT_WORDS:
            return " ".join([*words[:index], "{}", *words[index + 1 :]])
    return f"U+{ord(char):04X}"


@cache
def tables() -> Tables:
    """Scan every code point once (about 0.3 s)."""
    families: dict[str, dict[str, str]] = {}
    chunks: dict[str, list[str]] = {}
    dots = ["\u3002"]
    hex_letters: dict[str, list[str]] = {letter: [] for letter in "abcdefx"}
    ignorable_candidates: list[str] = []
    for code in range(sys.maxunicode + 1):
        if 0xD800 <= code <= 0xDFFF:
            continue
        char = chr(code)
        category = unicodedata.category(char)
        filler = "FILLER" in unicodedata.name(char, "")
        if category in ("Cf", "Mn", "Me") or 0xE0000 <= code <= 0xE0FFF or filler:
            ignorable_candidates.append(char)
        mapped = unicodedata.normalize("NFKC", char)
        if mapped == char:
            if char.isascii() and char.isupper() and char.lower() in hex_letters:
                hex_letters[char.lower()].append(char)
            continue
        if len(mapped) == 1 and mapped.isascii() and mapped.isdigit():
            families.setdefault(_family(char), {})[mapped] = char
        elif mapped and set(mapped) <= _NUMBER_CHARS and mapped.strip(".") and ".." not in mapped:
            chunks.setdefault(mapped, []).append(char)
        if mapped in (".", "\u3002"):
            dots.append(char)
        if len(mapped) == 1 and mapped.lower() in hex_letters:
            hex_letters[mapped.lower()].append(char)
    ignorables = tuple(c for c in ignorable_candidates if _uts46_drops(c))
    return Tables(
        digit_families={k: v for k, v in families.items() if len(v) == 10},
        chunks={k: tuple(v) for k, v in chunks.items()},
        dots=tuple(dots),
        hex_letters={k: tuple(v) for k, v in hex_letters.items()},
        ignorables=ignorables,
    )


def _uts46_drops(char: str) -> bool:
    try:
        return idna.uts46_remap(char, std3_rules=False) == ""
    except idna.IDNAError:
        return False


# --- addresses and their ASCII spellings ---------------------------------------------------

FORBIDDEN_NETWORKS: tuple[str, ...] = (
    "127.0.0.0/8",  # loopback
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",  # link-local (and the metadata address)
    "100.64.0.0/10",  # carrier-grade NAT
    "0.0.0.0/32",
)
METADATA = ("169.254.169.254", "169.254.170.2", "100.100.100.200", "168.63.129.16")


def forbidden_ipv4() -> st.SearchStrategy[ipaddress.IPv4Address]:
    def in_network(cidr: str) -> st.SearchStrategy[ipaddress.IPv4Address]:
        net = ipaddress.IPv4Network(cidr)
        return st.integers(0, net.num_addresses - 1).map(lambda i: net[i])

    return st.one_of(
        st.sampled_from([ipaddress.IPv4Address(a) for a in METADATA]),
        *(in_network(cidr) for cidr in FORBIDDEN_NETWORKS),
    )


def _radix(value: int, radix: str) -> str:
    if radix == "hex":
        return f"0x{value:x}"
    if radix == "octal":
        return f"0{value:o}"
    return str(value)


RADIXES = ("dec", "hex", "octal")


def ascii_forms(ip: ipaddress.IPv4Address, parts: int, radixes: Sequence[str]) -> str:
    """`ip` the way inet_aton reads it: `parts` numbers (1-4), the last filling the rest."""
    number = int(ip)
    head = [(number >> (8 * (3 - i))) & 0xFF for i in range(parts - 1)]
    last = number & ((1 << (8 * (5 - parts))) - 1)
    values = [*head, last]
    return ".".join(_radix(v, radixes[i % len(radixes)]) for i, v in enumerate(values))


def ipv4_text() -> st.SearchStrategy[tuple[ipaddress.IPv4Address, str]]:
    """A forbidden address and one ASCII spelling of it (decimal, hex, octal, short, mixed)."""

    @st.composite
    def build(draw: st.DrawFn) -> tuple[ipaddress.IPv4Address, str]:
        ip = draw(forbidden_ipv4())
        parts = draw(st.integers(1, 4))
        radixes = draw(st.lists(st.sampled_from(RADIXES), min_size=1, max_size=4))
        return ip, ascii_forms(ip, parts, radixes)

    return build()


# --- Unicode spellings -----------------------------------------------------------------------

Pick = Callable[[Sequence[str]], str]


def respell(text: str, pick: Pick, *, chunk: Callable[[], bool], keep: Callable[[], bool]) -> str:
    """`text` with each digit, dot and hex letter replaced by a character NFKC (or IDNA) maps
    onto it, or a run of them by one `CHUNKS` character; `pick` chooses among candidates."""
    t = tables()
    out: list[str] = []
    i = 0
    while i < len(text):
        runs = [text[i:j] for j in range(i + 2, min(len(text), i + 3) + 1)]
        runs = [r for r in runs if r in t.chunks]
        if runs and chunk():
            run = pick(runs)
            out.append(pick(t.chunks[run]))
            i += len(run)
            continue
        char = text[i]
        i += 1
        if keep():
            out.append(char)
        elif char.isdigit():
            family = t.digit_families[pick(sorted(t.digit_families))]
            out.append(family[char])
        elif char == ".":
            out.append(pick(t.dots))
        elif char in t.hex_letters:
            out.append(pick(t.hex_letters[char]))
        else:
            out.append(char)
    return "".join(out)


def percent_encode_some(host: str, chosen: Callable[[], bool]) -> str:
    """Each chosen character as its UTF-8 bytes in %XX form (digits and dots too, which
    `urllib.parse.quote` would leave alone)."""
    return "".join("".join(f"%{byte:02X}" for byte in c.encode()) if chosen() else c for c in host)


@st.composite
def spelling(draw: st.DrawFn, ascii_host: str) -> str:
    """A Unicode spelling of `ascii_host`: any mix of the tables, ignorables sprinkled in,
    sometimes a trailing dot, sometimes percent-encoded in part."""
    t = tables()

    def pick(options: Sequence[str]) -> str:
        return draw(st.sampled_from(options))

    spelled = respell(
        ascii_host,
        pick,
        chunk=lambda: draw(st.booleans()),
        keep=lambda: draw(st.integers(0, 3)) == 0,
    )
    if draw(st.booleans()):
        at = draw(st.integers(1, len(spelled)))
        spelled = spelled[:at] + pick(t.ignorables) + spelled[at:]
    if draw(st.booleans()):
        spelled += pick(t.dots)
    if draw(st.integers(0, 4)) == 0:
        spelled = percent_encode_some(spelled, lambda: draw(st.booleans()))
    return spelled


def in_family(ascii_host: str, family: str) -> str:
    """Every digit of `ascii_host` written in one family (the other characters kept)."""
    digits = tables().digit_families[family]
    return "".join(digits.get(c, c) for c in ascii_host)


@dataclass(frozen=True, slots=True)
class Spelled:
    ip: ipaddress.IPv4Address
    host: str  # as it goes into the URL
    note: str  # which family / separator / form, for failure messages


def sample_spellings(rng: random.Random, addresses: Sequence[str]) -> list[Spelled]:
    """Seeded spellings covering every digit family, every dot and each ASCII form at least
    once (for the integration tests, where `@given` does not fit an app fixture)."""
    t = tables()
    families = sorted(t.digit_families)
    samples: list[Spelled] = []
    for index, family in enumerate(families):
        ip = ipaddress.IPv4Address(addresses[index % len(addresses)])
        dot = t.dots[index % len(t.dots)]
        host = in_family(str(ip), family).replace(".", dot)
        samples.append(Spelled(ip, host, f"{family} / U+{ord(dot):04X}"))
    for index, dot in enumerate(t.dots):
        ip = ipaddress.IPv4Address(addresses[index % len(addresses)])
        samples.append(Spelled(ip, str(ip).replace(".", dot), f"U+{ord(dot):04X}"))
    for parts in (1, 2, 3, 4):
        for radix in RADIXES:
            ip = ipaddress.IPv4Address(rng.choice(addresses))
            text = ascii_forms(ip, parts, [radix, rng.choice(RADIXES)])
            host = respell(
                text, rng.choice, chunk=lambda: rng.random() < 0.3, keep=lambda: rng.random() < 0.3
            )
            samples.append(Spelled(ip, host, f"{parts} {radix} parts: {text}"))
    ip = ipaddress.IPv4Address(addresses[0])
    samples.append(Spelled(ip, percent_encode_some(str(ip), lambda: True), "percent-encoded"))
    fullwidth = percent_encode_some(in_family(str(ip), families[1]), lambda: rng.random() < 0.5)
    samples.append(Spelled(ip, fullwidth, f"{families[1]}, percent-encoded in part"))
    samples.append(Spelled(ip, in_family(str(ip), families[0]) + ".", "trailing dot"))
    samples.append(
        Spelled(ip, str(ip)[:1] + rng.choice(t.ignorables) + str(ip)[1:], "an ignorable")
    )
    return samples
