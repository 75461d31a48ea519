"""The URL guard normalises a host before it classifies it: loopback, private, link-local,
metadata, CGNAT and unspecified addresses are refused in every Unicode spelling a URL parser,
IDNA library or C resolver would read as them (digit families and dot separators found by
scanning Unicode, see tests/support/spellings.py), in decimal, hex, octal and short forms,
percent-encoded, with ignorable characters, inside IPv6 brackets.

That refused URLs never reach a socket is shown against a listening socket in
tests/integration/test_fulltext_ssrf_unicode.py."""

from __future__ import annotations

import ipaddress
import socket

import httpx
import pytest
import yarl
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.modules.literature.safety import (
    EgressPolicy,
    Refusal,
    UnsafeTarget,
    address_refusal,
    check_url,
    client_host,
    read_host,
)
from app.modules.literature.safety.hosts import parse_address
from tests.support.spellings import (
    forbidden_ipv4,
    in_family,
    ipv4_text,
    spelling,
    tables,
)

OPEN = EgressPolicy()
# The families the report names; the scan must find at least these (it finds more).
DIGITS_EXPECTED = {
    "FULLWIDTH DIGIT {}",
    "CIRCLED DIGIT {}",
    "SUPERSCRIPT {}",
    "SUBSCRIPT {}",
    "MATHEMATICAL BOLD DIGIT {}",
    "MATHEMATICAL DOUBLE-STRUCK DIGIT {}",
}
ADDRESS_REASONS = frozenset(Refusal) - {
    Refusal.SCHEME,
    Refusal.CREDENTIALS,
    Refusal.MALFORMED,
    Refusal.NOT_ALLOWED,
    Refusal.UNRESOLVABLE,
}


def _refusal(url: str, policy: EgressPolicy = OPEN) -> Refusal:
    with pytest.raises(UnsafeTarget) as refused:
        check_url(url, policy)
    return refused.value.reason


def test_the_tables_found_every_family_the_report_names() -> None:
    t = tables()
    assert set(t.digit_families) >= DIGITS_EXPECTED, set(t.digit_families)
    assert {"\u3002", "\uff0e", "\uff61", "\ufe52", "\u2024"} <= set(t.dots)
    assert t.chunks["7."] == ("\u248e",)  # the character the integer-and-dot trick uses
    assert "\u00ad" in t.ignorables
    assert "\u200b" in t.ignorables


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("\u2460\u2461\u2466.0.0.1", Refusal.LOOPBACK),  # circled digits (the report)
        ("\uff11\uff12\uff17.\uff10.\uff10.\uff11", Refusal.LOOPBACK),  # fullwidth (the report)
        ("127\u30020\u30020\u30021", Refusal.LOOPBACK),  # ideographic full stops (the report)
        (
            "\uff11\uff16\uff19.\uff12\uff15\uff14.\uff11\uff16\uff19.\uff12\uff15\uff14",
            Refusal.METADATA,  # fullwidth 169.254.169.254 (the report)
        ),
        ("12\u248e0.0.1", Refusal.LOOPBACK),  # U+248E is "7." under NFKC
        ("1\u00ad27.0.0.1", Refusal.LOOPBACK),  # a soft hyphen, which UTS-46 drops
        ("0x7f.\uff11", Refusal.LOOPBACK),  # hex and fullwidth mixed
        ("\uff10\uff58\uff17\uff46.1", Refusal.LOOPBACK),  # fullwidth 0x7f
        ("%31%32%37.0.0.1", Refusal.LOOPBACK),  # percent-decoded, then read
        ("%EF%BC%91%EF%BC%92%EF%BC%97.0.0.1", Refusal.LOOPBACK),  # percent-encoded fullwidth
        ("\u0661\u0662\u0667.\u0660.\u0660.\u0661", Refusal.LOOPBACK),  # Arabic-Indic digits
        ("\uff11\uff10.0.0.1.", Refusal.PRIVATE),  # a trailing dot
        ("\U0001d7cf\U0001d7ce\U0001d7ce.\U0001d7d4\U0001d7dc.0.1", Refusal.NOT_GLOBAL),  # CGNAT
        ("\u2070.\u2070.\u2070.\u2070", Refusal.UNSPECIFIED),  # superscript zeros
    ],
)
def test_the_reported_spellings_are_refused_as_what_they_are(host: str, reason: Refusal) -> None:
    assert _refusal(f"http://{host}:8080/x") is reason


@pytest.mark.parametrize("family", sorted(tables().digit_families))
@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.9",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
    ],
)
def test_every_digit_family_with_every_dot(family: str, address: str) -> None:
    ip = ipaddress.IPv4Address(address)
    for dot in tables().dots:
        host = in_family(address, family).replace(".", dot)
        assert _refusal(f"http://{host}/") is address_refusal(ip), (family, hex(ord(dot)))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_spelling_of_a_forbidden_ipv4_address_is_refused_as_that_address(
    data: st.DataObject,
) -> None:
    ip, text = data.draw(ipv4_text())
    host = data.draw(spelling(text))
    reason = _refusal(f"http://{host}:8080/latest/meta-data/")
    assert reason is address_refusal(ip), (host, text)


@settings(max_examples=200)
@given(st.data())
def test_ipv6_forms_of_forbidden_ipv4_addresses_are_refused(data: st.DataObject) -> None:
    """`[::ffff:a.b.c.d]`, `[::ffff:XXXX:XXXX]` and NAT64, written with any Unicode digits:
    refused by address, or as malformed when the URL parser will not take the brackets."""
    ip = data.draw(forbidden_ipv4())
    mapped = ipaddress.IPv6Address(f"::ffff:{ip}")
    text = data.draw(
        st.sampled_from(
            [f"::ffff:{ip}", mapped.compressed, mapped.exploded, f"64:ff9b::{ip}"],
        )
    )
    host = data.draw(spelling(text))
    reason = _refusal(f"http://[{host}]:8080/")
    assert reason in {address_refusal(ip), Refusal.MALFORMED}, host


def test_ipv6_in_fullwidth_digits_never_reaches_a_reading_of_a_public_address() -> None:
    for host in ("\uff1a\uff1a\uff11", "::\uff11", "::ffff:\uff17f00:1", "fe80::1%25eth0"):
        assert _refusal(f"http://[{host}]/") in ADDRESS_REASONS | {Refusal.MALFORMED}


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("%65xample.org", "a percent-encoded name: one decoder or two?"),
        ("%2531%2532%2537.0.0.1", "double-encoded"),
        ("%ff.example.org", "percent-encoded bytes that are not UTF-8"),
        ("127.0.0.1..", "two trailing dots"),
        ("example..org", "an empty label"),
        ("1.2.3.4.5", "five numbers"),
        ("example.0x", "a name whose last label is a number"),
        ("foo.123", "the URL standard's ends-in-a-number"),
        ("[2606:2800:220:1::1%25eth0]", "a zone on a public address"),
        ("[v1.fe80::a+en1]", "an IPvFuture literal"),
    ],
)
def test_ambiguous_hosts_are_refused_as_malformed(host: str, why: str) -> None:
    assert _refusal(f"http://{host}/") is Refusal.MALFORMED, why


def test_public_addresses_and_names_are_sent_in_their_one_ascii_form() -> None:
    target = check_url("http://\uff18.\uff18.\uff18.\uff18:8443/a", OPEN)  # fullwidth 8.8.8.8
    assert (target.url, target.host, target.ip) == (
        "http://8.8.8.8:8443/a",
        "8.8.8.8",
        ipaddress.ip_address("8.8.8.8"),
    )
    assert check_url("http://\uff25xample.org/", OPEN).url == "http://example.org/"
    assert check_url("http://exa\u00admple.org./", OPEN).url == "http://example.org/"
    assert check_url("http://b\u00fccher.de/", OPEN).host == "xn--bcher-kva.de"


def test_trusted_hosts_keep_working_in_any_spelling() -> None:
    policy = EgressPolicy(trusted_hosts=frozenset({"pub.test", "127.0.0.1"}))
    assert check_url("http://\uff50\uff55\uff42.test/", policy).host == "pub.test"
    assert check_url("http://\u2460\u2461\u2466.0.0.1/", policy).url == "http://127.0.0.1/"
    assert _refusal("http://\u2460\u2461\u2466.0.0.\u2461/", policy) is Refusal.LOOPBACK


_HOST_ALPHABET = st.sampled_from(
    sorted(
        {c for family in tables().digit_families.values() for c in family.values()}
        | set(tables().dots)
        | {c for letters in tables().hex_letters.values() for c in letters[:4]}
        | {c for chunk in tables().chunks.values() for c in chunk[:1]}
        | set("0123456789.xabcdef-%")
        | set(tables().ignorables[:8])
    )
)


def _other_readings(url: str) -> list[str]:
    """How clients other than ours read the original URL's host."""
    seen: list[str] = []
    for read in (
        lambda: yarl.URL(url).raw_host,
        lambda: httpx.URL(url).host,
        lambda: yarl.URL(str(httpx.URL(url))).raw_host,
    ):
        try:
            host = read()
        except (ValueError, UnicodeError, httpx.InvalidURL):
            continue
        if host:
            seen.append(host)
    return seen


@settings(max_examples=500)
@given(st.text(_HOST_ALPHABET, min_size=1, max_size=24))
@example("127\u30020\u30020\u30021")
@example("\u2460\u2461\u2466.0.0.1")
def test_whatever_the_client_libraries_read_a_host_as_is_checked(host: str) -> None:
    """Oracle independent of our normaliser: httpx's and yarl's own reading of the original
    URL. If either reads a forbidden address, check_url refused; if check_url accepts, the
    URL it returns reaches the client with exactly the checked host."""
    url = f"http://{host}/x"
    try:
        target = check_url(url, OPEN)
    except UnsafeTarget:
        return
    for seen in _other_readings(url):
        try:
            ip = ipaddress.ip_address(seen.strip("[]"))
        except ValueError:
            continue
        assert address_refusal(ip) is None, (host, seen)
    assert client_host(target.url) == target.host
    assert target.host.isascii()


def test_client_host_is_what_aiohttp_connects_to() -> None:
    assert client_host("http://127.0.0.1:8080/x") == "127.0.0.1"
    assert client_host("http://[::1]/") == "::1"
    # aiohttp's own URL parser reads these as an IP literal (and so skips any resolver): why
    # the guard must read them first. httpx happens to refuse them; the guard does not rely
    # on that.
    for host in ("12\u248e0.0.1", "\u2460\u2461\u2466.0.0.1", "127\u30020.0.1"):
        assert yarl.URL(f"http://{host}/").raw_host == "127.0.0.1"
    assert client_host("http://12\u248e0.0.1/") is None


def test_readings_of_names_and_addresses() -> None:
    assert read_host("Example.ORG.").name == "example.org"
    circled = read_host("\u2460\u2461\u2466.0.0.1")
    assert (circled.address, circled.name) == (ipaddress.ip_address("127.0.0.1"), None)
    encoded = read_host("%31%32%37.0.0.1")
    assert encoded.addresses == {ipaddress.ip_address("127.0.0.1")}
    assert encoded.address is None  # never sent: percent-encoded hosts are refused


@settings(max_examples=500)
@given(st.text(st.sampled_from("0123456789abcdefx."), min_size=1, max_size=20))
@example("0x7f.1")
@example("017700000001")
def test_every_number_the_c_library_reads_as_an_address_we_read_as_the_same(host: str) -> None:
    """glibc's inet_aton is what getaddrinfo applies to a numeric host; our reading of ASCII
    numbers (written out, since glibc also takes trailing garbage) must never differ from it
    where it answers."""
    try:
        c_reading = ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return
    assert parse_address(host) == c_reading
