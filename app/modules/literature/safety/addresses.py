"""The outbound guard's pure parts: URLs and addresses.

Everything here is a pure function over strings and addresses so that it can be tested without
a network. The parts that touch the network (resolving a name once, connecting only to the
address that was checked, following redirects) live in `fetcher.py` and call these.

Why each rule exists:

- Only http(s), no credentials in the authority, no backslashes or control characters: these
  are where URL parsers disagree, and a disagreement between our check and the HTTP client's
  parser is an SSRF. Every URL is rebuilt from its checked parts, so what is sent is what was
  checked.
- Normalise, then classify: a host is read the way every normaliser on the way to the socket
  reads it (percent-decoding, NFKC, UTS-46, IDNA 2003, IDNA's four dot separators, digits of
  any script; see `hosts.py`), refused if any reading is a forbidden address or the readings
  disagree, sent in its one canonical ASCII form, and read once more with the HTTP client's
  own parsers. So `①②⑦.0.0.1`, `127\u30020.0.1` (an ideographic full stop) and
  `%31%32%37.0.0.1` are loopback.
- Literal IPv4 hosts are read the way `inet_aton` (and so the C library) reads them:
  `2130706433`, `0x7f000001`, `0177.0.0.1` and `127.1` all mean 127.0.0.1. IPv6 hosts are
  unwrapped when they embed an IPv4 address (`::ffff:127.0.0.1`, 6to4, NAT64, Teredo).
- Refused: loopback, private, link-local, multicast, unspecified, reserved and every other
  non-global range, and the cloud metadata endpoints (one of which, Azure's 168.63.129.16, is a
  public address), unless the host is explicitly trusted in the settings.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from app.modules.literature.safety.hosts import (
    IPAddress,
    NotAnAddress,
    client_host,
    parse_address,
    read_host,
    unscoped,
)

MAX_URL_CHARS = 2048


class Refusal(StrEnum):
    """Why a request was refused before any connection; the values are metric labels."""

    SCHEME = "scheme"
    CREDENTIALS = "credentials"
    MALFORMED = "malformed_url"
    NOT_ALLOWED = "host_not_allowed"
    LOOPBACK = "loopback"
    PRIVATE = "private"
    LINK_LOCAL = "link_local"
    MULTICAST = "multicast"
    UNSPECIFIED = "unspecified"
    RESERVED = "reserved"
    NOT_GLOBAL = "not_global"
    METADATA = "metadata"
    UNRESOLVABLE = "unresolvable"


class UnsafeTarget(Exception):
    """A URL or address the guard refuses; `message` is safe to show (no URL in it)."""

    def __init__(self, reason: Refusal, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message


# Instance metadata services: AWS/GCP/Azure/OpenStack/DigitalOcean, AWS ECS task metadata,
# AWS IPv6 IMDS, Alibaba, Oracle, and Azure's WireServer (a public address).
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "169.254.169.123",
        "fd00:ec2::254",
        "100.100.100.200",
        "192.0.0.192",
        "168.63.129.16",
    )
)
METADATA_HOSTNAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.internal",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries, for the spellings that route to it."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_refusal(ip: IPAddress) -> Refusal | None:
    """Why connecting to `ip` is refused, or None when it is a public unicast address."""
    ip = unscoped(ip)
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None:
            reason = address_refusal(inner)
            if reason is not None:
                return reason
    if ip in METADATA_ADDRESSES:
        return Refusal.METADATA
    checks = (
        (ip.is_loopback, Refusal.LOOPBACK),
        (ip.is_unspecified, Refusal.UNSPECIFIED),
        (ip.is_link_local, Refusal.LINK_LOCAL),
        (ip.is_multicast, Refusal.MULTICAST),
        (ip.is_reserved, Refusal.RESERVED),
        (ip.is_private, Refusal.PRIVATE),
    )
    for matched, reason in checks:
        if matched:
            return reason
    if not ip.is_global:  # shared address space (100.64/10), documentation ranges, ...
        return Refusal.NOT_GLOBAL
    return None


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address an ASCII host names literally, in any spelling a C library accepts, or None
    for a DNS name. A host that looks numeric but is no valid address raises UnsafeTarget (the
    URL standard calls it a failed IPv4 parse; some resolvers would still map it somewhere).
    Unicode spellings are `hosts.read_host`'s business: this reads one ASCII form."""
    candidate = host.strip().removeprefix("[").removesuffix("]")
    try:
        return parse_address(candidate)
    except NotAnAddress as invalid:
        raise UnsafeTarget(Refusal.MALFORMED, str(invalid)) from None


# --- policy ---------------------------------------------------------------------------------


def host_matches(host: str, patterns: Iterable[str]) -> bool:
    """`host` equals a pattern or is a subdomain of one."""
    return any(host == p or host.endswith("." + p) for p in patterns)


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """Which hosts may be reached, and how names resolve (settings, read once at start)."""

    trusted_hosts: frozenset[str] = frozenset()
    allowed_hosts: tuple[str, ...] = ()
    host_overrides: Mapping[str, str] | None = None

    def override(self, host: str) -> IPAddress | None:
        address = (self.host_overrides or {}).get(host)
        return ipaddress.ip_address(address) if address else None

    def check_host_name(self, host: str) -> None:
        """Refusals that need no address: metadata names and the egress allowlist."""
        if host in METADATA_HOSTNAMES or host.endswith(".internal"):
            raise UnsafeTarget(Refusal.METADATA, "the host is a cloud metadata name")
        if self.allowed_hosts and not host_matches(host, self.allowed_hosts):
            raise UnsafeTarget(Refusal.NOT_ALLOWED, "the host is not in the egress allowlist")

    def check_address(self, host: str, ip: IPAddress) -> None:
        """Refuse `ip` (what `host` resolved to) unless it is public or `host` is trusted."""
        reason = address_refusal(ip)
        if reason is not None and host not in self.trusted_hosts:
            raise UnsafeTarget(reason, f"the host resolves to a {reason.value} address")


@dataclass(frozen=True, slots=True)
class Target:
    """A URL that passed the checks that need no DNS, rebuilt from its checked parts."""

    url: str
    scheme: str
    host: str  # lower-case ASCII (IDNA), or the canonical address for IP literals
    port: int
    ip: IPAddress | None  # set when the host is an IP literal


_FORBIDDEN_URL_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


def check_url(url: str, policy: EgressPolicy) -> Target:
    """Every check that can be made before resolving the host; raises UnsafeTarget.

    The host is normalised first, in every way a party on the way to the socket normalises it
    (`hosts.read_host`), and refused if any reading of it is a forbidden address or if the
    readings disagree; the URL is rebuilt with its one canonical ASCII form, and that form is
    read again with the HTTP client's own parsers before it is accepted."""
    if len(url) > MAX_URL_CHARS:
        raise UnsafeTarget(Refusal.MALFORMED, f"the URL is longer than {MAX_URL_CHARS} characters")
    url = url.strip().replace(" ", "%20")
    if _FORBIDDEN_URL_CHARS.search(url):
        raise UnsafeTarget(Refusal.MALFORMED, "the URL holds control characters or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeTarget(Refusal.MALFORMED, "the URL cannot be parsed") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeTarget(Refusal.SCHEME, "only http and https URLs are fetched")
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise UnsafeTarget(Refusal.CREDENTIALS, "URLs with credentials are not fetched")
    raw_host = parts.hostname or ""
    if not raw_host:
        raise UnsafeTarget(Refusal.MALFORMED, "the URL has no host")
    reading = read_host(raw_host, bracketed=parts.netloc.startswith("["))
    for address in sorted(reading.addresses, key=str):  # any forbidden reading refuses
        policy.check_address(address.compressed, address)
    if reading.ambiguous is not None:
        raise UnsafeTarget(Refusal.MALFORMED, reading.ambiguous)
    ip = reading.address
    if ip is not None:
        if reading.zone:
            raise UnsafeTarget(Refusal.MALFORMED, "IPv6 zones are not fetched")
        host = ip.compressed
        authority = f"[{host}]" if ip.version == 6 else host
        if policy.allowed_hosts and not host_matches(host, policy.allowed_hosts):
            raise UnsafeTarget(Refusal.NOT_ALLOWED, "the host is not in the egress allowlist")
    else:
        assert reading.name is not None  # neither an address nor ambiguous: a name
        host = authority = reading.name
        policy.check_host_name(host)
    if port is not None:
        authority += f":{port}"
    path = parts.path or "/"
    rebuilt = f"{scheme}://{authority}{path}" + (f"?{parts.query}" if parts.query else "")
    _check_client_reading(rebuilt, host, ip)
    default_port = 443 if scheme == "https" else 80
    return Target(rebuilt, scheme, host, port or default_port, ip)


def _check_client_reading(url: str, host: str, ip: IPAddress | None) -> None:
    """The rebuilt URL must reach the HTTP client with exactly the host that was checked."""
    seen = client_host(url)
    if ip is None:
        same = seen == host
    else:
        try:
            same = seen is not None and parse_address(seen) == ip
        except NotAnAddress:
            same = False
    if not same:
        raise UnsafeTarget(Refusal.MALFORMED, "the HTTP client would read the host differently")
