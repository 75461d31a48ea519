"""Reading a URL's host the way every party that will see it reads it.

One host can be spelled many ways that all mean 127.0.0.1 somewhere between the URL parser,
the IDNA codec, the HTTP client and the C library: `①②⑦.0.0.1` (NFKC turns circled digits
into digits; so it does fullwidth, mathematical, superscript ... digits), `127\u30020.0.1`
(U+3002, the ideographic full stop, is one of IDNA's four label separators), `12⒎0.0.1`
(U+248E is "7." under NFKC), `1\u00ad27.0.0.1` (UTS-46 maps the soft hyphen to nothing),
`%31%32%37.0.0.1` (the URL standard percent-decodes hosts), `0x7f.` followed by a fullwidth
one (`inet_aton` reads hex). yarl, under aiohttp, encodes a Unicode host with IDNA 2008 and
falls back to Python's IDNA 2003 codec, which NFKC-maps such hosts to `127.0.0.1`; aiohttp then
takes that for an IP literal and never asks a resolver. A check made before those
normalisations, or after only some of them, checks something other than what is connected to.

So `read_host` computes every reading the host can have (each normaliser we know of, applied
the way it is applied in the wild, plus Unicode decimal digits of any script read as digits),
classifies each as an address, a name or an invalid number, and reports every address any
reading names and whether the readings disagree. The caller refuses a host if *any* reading is
a forbidden address, refuses ambiguous hosts outright, and rebuilds the URL from the one
canonical ASCII form all readings agreed on, so the HTTP client is given nothing left to
normalise. `client_host` then re-reads the rebuilt URL with the client's own parsers (httpx,
then yarl, as httpx-aiohttp hands it on) to confirm that.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote

import httpx
import idna
import yarl

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# The label separators of IDNA 2003 and UTS-46 (RFC 3490 section 3.1); NFKC maps U+FF0E to
# "." and U+FF61 to U+3002, so U+3002 is the one that survives NFKC.
LABEL_SEPARATORS = "\u002e\u3002\uff0e\uff61"
_TO_DOTS = str.maketrans(dict.fromkeys(LABEL_SEPARATORS, "."))
_LAST_LABEL_NUMERIC = re.compile(r"(?:^|\.)(?:[0-9]+|0x[0-9a-f]*)$")
_NAME_CHARS = re.compile(r"^[a-z0-9._-]+$")
_MAX_NAME = 253
_MAX_LABEL = 63


class NotAnAddress(ValueError):
    """A host that looks numeric but is no valid address (the URL standard calls it a failed
    IPv4 parse; some resolvers would still map it somewhere)."""


def parse_address(host: str) -> IPAddress | None:
    """The address an ASCII host names literally, in any spelling a C library accepts
    (`2130706433`, `0x7f000001`, `0177.0.0.1`, `127.1`), or None for a name. A numeric-looking
    host that is no address raises NotAnAddress. One trailing dot (the DNS root) is allowed."""
    candidate = host.lower().removesuffix(".")
    try:
        return ipaddress.ip_address(candidate)
    except ValueError:
        pass
    if ":" in candidate:
        raise NotAnAddress("the host is not a valid IPv6 address")
    # The URL standard's "ends in a number": such a host is an IPv4 address or an error,
    # never a name (`example.0x` and `foo.123` are errors, not DNS names).
    if _LAST_LABEL_NUMERIC.search(candidate):
        address = _inet_aton(candidate)
        if address is None:
            raise NotAnAddress("the host is not a valid IPv4 address")
        return address
    return None


def _inet_aton(host: str) -> ipaddress.IPv4Address | None:
    """BSD `inet_aton` over ASCII: 1-4 parts in decimal, 0x-hex or 0-octal, the last part
    filling the remaining bytes. Written out (rather than calling the C function) because
    glibc's also accepts trailing garbage after a space."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values: list[int] = []
    for part in parts:
        if part.startswith("0x"):
            digits, base = part[2:], 16
        elif len(part) > 1 and part.startswith("0"):
            digits, base = part[1:], 8
        else:
            digits, base = part, 10
        if digits == "" and base == 16:
            values.append(0)  # "0x" is zero to the URL standard (glibc refuses it)
            continue
        try:
            values.append(int(digits, base))
        except ValueError:
            return None
    *head, last = values
    if any(v > 0xFF for v in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    number = last
    for index, value in enumerate(head):
        number |= value << (8 * (3 - index))
    return ipaddress.IPv4Address(number)


@dataclass(frozen=True, slots=True)
class HostReading:
    """What a host is, by every reading of it.

    `addresses`: every address some reading names (all are checked, so a host that is
    loopback to any party is refused). `name`: the ASCII name to send and resolve, when no
    reading is an address. `ambiguous`: why the host is refused whatever its addresses are
    (the readings disagree, it is percent-encoded, it is no valid name), or None."""

    addresses: frozenset[IPAddress]
    name: str | None
    ambiguous: str | None
    zone: bool = False

    @property
    def address(self) -> IPAddress | None:
        """The one address, when every reading agreed on it."""
        if self.ambiguous is None and len(self.addresses) == 1:
            return next(iter(self.addresses))
        return None


def unscoped(ip: IPAddress) -> IPAddress:
    """`ip` without an IPv6 zone (`fe80::1%eth0`): a scoped address compares unequal to the
    same address unscoped, which would let it slip past a set lookup."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        return ipaddress.IPv6Address(int(ip))
    return ip


def read_host(raw: str, *, bracketed: bool = False) -> HostReading:
    """Every reading of the host `raw` as it stands in a URL (percent-encoding and all; without
    the brackets of an IPv6 literal, which `bracketed` says were there)."""
    zone = False
    if bracketed and "%" in raw:  # RFC 6874 zone: "fe80::1%25eth0"
        raw, _, _ = raw.partition("%")
        zone = True
    try:
        decoded = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        return HostReading(frozenset(), None, "the host is percent-encoded and not UTF-8")
    addresses: set[IPAddress] = set()
    names: set[str] = set()
    invalid = False
    for reading in _readings(decoded):
        try:
            ip = parse_address(reading)
        except NotAnAddress:
            invalid = True
            continue
        if ip is None:
            names.add(reading)
        else:
            addresses.add(unscoped(ip))
    ambiguous: str | None = None
    name: str | None = None
    if len(addresses) > 1:
        ambiguous = "the host reads as different addresses"
    elif addresses and (names or invalid):
        ambiguous = "the host reads both as an address and as a name"
    elif invalid:
        ambiguous = "the host is not a valid IP address"
    elif bracketed and not (addresses and next(iter(addresses)).version == 6):
        ambiguous = "the bracketed host is not an IPv6 address"
    elif not addresses:
        name = ascii_name(decoded)
        if name is None:
            ambiguous = "the host is not a valid domain name"
    if ambiguous is None and decoded != raw:
        ambiguous = "percent-encoded hosts are not fetched"
    return HostReading(frozenset(addresses), name, ambiguous, zone)


def _readings(host: str) -> set[str]:
    """`host` as each normaliser on the way to a socket would leave it.

    - NFKC with case folding and IDNA's separators as dots (what the URL standard's domain
      to ASCII does before anything else, and the check a human would expect);
    - UTS-46 mapping as the idna package has it, which also drops default-ignorable
      characters (soft hyphen, ZWSP, variation selectors, Hangul fillers ...);
    - UTS-46 the lenient way: character by character, NFKC where this version of the table
      disallows a character (older tables, and so other clients, map `⒎` to "7.");
    - Python's IDNA 2003 codec (nameprep is NFKC; yarl falls back to it, and so does the
      socket module for str hosts);
    - each with every decimal digit of any script read as its digit, as `int()` and
      `str.isdigit()` do (a parser built on them reads 127.0.0.1 written in Arabic-Indic
      digits, which NFKC leaves alone, as loopback).
    A normaliser that rejects the host contributes no reading: that client would not connect.
    """
    if host.isascii():  # every normaliser only lower-cases ASCII
        return {host.lower()}
    readings = {_nfkc(host), _lenient_uts46(host)}
    with contextlib.suppress(idna.IDNAError):
        readings.add(idna.uts46_remap(host, std3_rules=False).translate(_TO_DOTS))
    with contextlib.suppress(UnicodeError):
        readings.add(host.encode("idna").decode("ascii").lower())
    readings |= {_fold_digits(r) for r in readings if not r.isascii()}
    return readings


def _nfkc(text: str) -> str:
    folded = unicodedata.normalize("NFKC", text).casefold()
    return unicodedata.normalize("NFKC", folded).translate(_TO_DOTS)


def _lenient_uts46(host: str) -> str:
    mapped: list[str] = []
    for char in host:
        try:
            mapped.append(idna.uts46_remap(char, std3_rules=False))
        except idna.IDNAError:
            mapped.append(_nfkc(char))
    return _nfkc("".join(mapped))


def _fold_digits(text: str) -> str:
    return "".join(
        str(unicodedata.decimal(ch)) if not ch.isascii() and ch.isdecimal() else ch for ch in text
    )


def ascii_name(host: str) -> str | None:
    """The lower-case ASCII (IDNA) form of a DNS name, the way yarl encodes it (IDNA 2008
    with UTS-46 mapping, falling back to IDNA 2003), or None if it is not a valid name."""
    stripped = host.removesuffix(".")
    if stripped.isascii():
        name = stripped.lower()
    else:
        try:
            name = idna.encode(stripped, uts46=True).decode("ascii")
        except UnicodeError:  # idna.IDNAError is one
            try:
                name = stripped.encode("idna").decode("ascii").lower()
            except UnicodeError:
                return None
    labels = name.split(".")
    if (
        not _NAME_CHARS.match(name)
        or len(name) > _MAX_NAME
        or any(not label or len(label) > _MAX_LABEL for label in labels)
    ):
        return None
    return name


def client_host(url: str) -> str | None:
    """The host the HTTP client will connect to for `url`: httpx parses it, httpx-aiohttp
    hands `str(url)` to aiohttp, which parses it with yarl and connects to `raw_host`. None
    when either parser refuses the URL."""
    try:
        seen = yarl.URL(str(httpx.URL(url))).raw_host
    except (httpx.InvalidURL, ValueError, UnicodeError):
        return None
    return seen
