"""SSRF through Unicode spellings of private addresses (the external report): `①②⑦.0.0.1`,
fullwidth digits, ideographic full stops and the rest reached a loopback listener through
`POST /v1/fulltext/detect`. Here a seeded sample of such spellings (every Unicode digit family
and dot-like separator, decimal/hex/octal/short forms, percent-encoded, with an ignorable
character; tests/support/spellings.py) goes through `/detect`, `/detect/batch` and a sandbox
redirect, and the listener must accept nothing; each refusal must name the address it hid.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import pytest
from litestar.testing import AsyncTestClient

from app.core.settings import LiteratureSettings
from app.main import create_app
from app.modules.literature.safety import address_refusal
from infra.sandbox.literature import hosts as h
from infra.sandbox.literature.client import LiteratureSandbox
from tests.support.client import gateway_client
from tests.support.listener import Listener, listening
from tests.support.sandbox import Sandbox, sandbox_settings
from tests.support.spellings import Spelled, in_family, sample_spellings, tables

Client = AsyncTestClient[Any]
ADDRESSES = (
    "127.0.0.1",
    "169.254.169.254",
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.1.1",
    "100.64.0.1",
    "0.0.0.0",  # connecting to 0.0.0.0 reaches this machine, so the listener too
)
SEED = 20240611
TRUSTED = "trusted-listener.test"


@pytest.fixture
def listener() -> Iterator[Listener]:
    with listening() as spy:
        yield spy


@pytest.fixture
async def client(sandbox: Sandbox, lit: LiteratureSandbox) -> AsyncIterator[Client]:
    """The production guard, the sandbox's hosts (and the listener's name) trusted, no egress
    allowlist: the address rules alone must refuse."""
    literature = LiteratureSettings(
        **lit.settings(
            allowed_hosts=[],
            host_overrides={**lit.settings()["host_overrides"], TRUSTED: "127.0.0.1"},
            trusted_hosts=[*h.HOSTS, TRUSTED],
            connect_timeout_s=1.0,
        )
    )
    settings = sandbox_settings(sandbox.base_url, literature=literature)
    async with gateway_client(create_app(settings)) as test_client:
        yield test_client


def _samples() -> list[Spelled]:
    return sample_spellings(random.Random(SEED), ADDRESSES)


def _url(spelled: Spelled, port: int) -> str:
    return f"http://{spelled.host}:{port}/a.pdf"


def _paper(index: int, url: str) -> dict[str, Any]:
    return {"id": f"p{index}", "pdf_url": url}


def _expected(spelled: Spelled) -> str:
    reason = address_refusal(spelled.ip)
    assert reason is not None
    return f"refused_{reason.value}"


async def test_the_sample_covers_every_family_and_separator() -> None:
    samples = _samples()
    notes = " | ".join(s.note for s in samples)
    for family in tables().digit_families:
        assert family in notes
    for dot in tables().dots:
        assert f"U+{ord(dot):04X}" in notes
    assert len(samples) < 80  # one batch, well under the time budget


async def test_spellings_sent_one_by_one_are_refused_without_a_connection(
    client: Client, listener: Listener
) -> None:
    for spelled in _samples()[::3]:
        response = await client.post(
            "/v1/fulltext/detect",
            json={"paper": _paper(0, _url(spelled, listener.port)), "options": {"max_tier": 2}},
        )
        assert response.status_code == 200, (spelled.note, response.text)
        result = response.json()
        assert result["is_available"] is False
        assert result["method"] == _expected(spelled), (spelled.note, spelled.host)
        assert result["tiers_tried"] == [2]
    assert listener.accepted == []


async def test_a_batch_of_spellings_is_refused_without_a_connection(
    client: Client, listener: Listener
) -> None:
    samples = _samples()
    papers = [_paper(i, _url(s, listener.port)) for i, s in enumerate(samples)]
    response = await client.post(
        "/v1/fulltext/detect/batch", json={"papers": papers, "options": {"max_tier": 2}}
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    wrong = [
        f"{s.note} ({s.host!r}): {r['method']}"
        for s, r in zip(samples, results, strict=True)
        if r["method"] != _expected(s) or r["is_available"]
    ]
    assert wrong == []
    assert listener.accepted == []


async def test_ipv6_brackets_with_unicode_digits_never_connect(
    client: Client, listener: Listener
) -> None:
    """The URL parser refuses these brackets outright (a 400 naming the field); whichever
    layer refuses, the listener (also on ::1) sees nothing."""
    family = sorted(tables().digit_families)[0]
    for text in ("::ffff:127.0.0.1", "::ffff:7f00:1", "::1", "::ffff:0.0.0.0"):
        host = in_family(text, family)
        response = await client.post(
            "/v1/fulltext/detect",
            json={"paper": {"pdf_url": f"http://[{host}]:{listener.port}/a.pdf"}},
        )
        if response.status_code == 400:
            assert response.json()["errors"][0]["key"] == "paper.pdf_url"
        else:
            assert response.json()["method"].startswith("refused_"), host
    assert listener.accepted == []


async def test_a_redirect_to_a_unicode_spelling_is_refused_at_the_next_hop(
    client: Client, listener: Listener, lit: LiteratureSandbox, sandbox: Sandbox
) -> None:
    """A trusted sandbox host answers 302 with the spelling as its raw (UTF-8) Location, or
    percent-encoded; the guard reads the Location itself, so even one httpx could not parse
    is refused by address rather than blamed on the redirecting host."""
    sandbox_port = int(sandbox.base_url.rsplit(":", 1)[1])
    samples = _samples()[1::4]
    papers: list[dict[str, Any]] = []
    for index, spelled in enumerate(samples):
        location = quote(_url(spelled, listener.port), safe="")
        redirect = f"http://{h.REDIRECTOR}:{sandbox_port}/to?url={location}"
        papers.append(_paper(index, redirect))
    response = await client.post(
        "/v1/fulltext/detect/batch", json={"papers": papers, "options": {"max_tier": 2}}
    )
    results = response.json()["results"]
    wrong = [
        f"{s.note} ({s.host!r}): {r['method']}"
        for s, r in zip(samples, results, strict=True)
        if r["method"] != _expected(s)
    ]
    assert wrong == []
    assert listener.accepted == []
    assert lit.requests(h.REDIRECTOR) == len(samples)  # each redirect was followed to the guard


async def test_a_publisher_redirecting_to_the_fullwidth_metadata_address_is_refused(
    client: Client, lit: LiteratureSandbox
) -> None:
    entry = lit.entry("neg-unicode-metadata-ssrf")
    response = await client.post(
        "/v1/fulltext/detect", json={"paper": entry["paper"], "options": {"max_tier": 5}}
    )
    body = response.json()
    assert body["is_available"] is False
    assert (body["tier"], body["method"]) == (5, "refused_metadata")
    assert lit.path_requests(h.SOCIETY, "/article/43") == 1  # the publisher's 302 was read

    metrics = (await client.get("/metrics")).text
    assert 'literature_fetch_refusals_total{reason="metadata"}' in metrics
    # The redirecting host did nothing wrong: no fetch of this test failed as a connection.
    assert 'outcome="connection"' not in metrics


async def test_a_trusted_name_in_fullwidth_letters_still_reaches_its_listener(
    client: Client, listener: Listener
) -> None:
    """Positive control: the same socket, named by the trusted host spelled in fullwidth
    letters, is connected to (normalising does not break trust)."""
    fullwidth = "".join(chr(ord(c) + 0xFEE0) if c.isalnum() else c for c in TRUSTED)
    response = await client.post(
        "/v1/fulltext/detect",
        json={
            "paper": {"pdf_url": f"http://{fullwidth}:{listener.port}/a.pdf"},
            "options": {"max_tier": 2},
        },
    )
    result = response.json()
    assert (result["is_available"], result["tier"], result["content_type"]) == (True, 2, "pdf")
    assert len(listener.accepted) == 1
