"""SSRF: URLs aimed at loopback, private and metadata addresses - in every spelling, behind a
redirect, or behind a DNS name - are refused without a connection being made.

The proof is a listening socket on 127.0.0.1 (and ::1 when the machine has IPv6) that records
every connection it accepts: after all the refusals it has accepted none, while a positive
control through a *trusted* name reaches it at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import pytest
from litestar.testing import AsyncTestClient

from app.core.settings import LiteratureSettings
from app.main import create_app
from infra.sandbox.literature import hosts as h
from infra.sandbox.literature.client import LiteratureSandbox
from tests.support.client import gateway_client
from tests.support.listener import Listener, listening
from tests.support.sandbox import Sandbox, sandbox_settings

Client = AsyncTestClient[Any]


@pytest.fixture
def listener() -> Iterator[Listener]:
    with listening() as spy:
        yield spy


@pytest.fixture
async def client(sandbox: Sandbox, lit: LiteratureSandbox) -> AsyncIterator[Client]:
    """The production guard with the sandbox's hosts trusted, no egress allowlist (so every
    address rule is what refuses), and two names resolving to forbidden addresses."""
    overrides = {
        **lit.settings()["host_overrides"],
        "internal.test": "127.0.0.1",
        "intranet.test": "10.0.0.7",
        "trusted-listener.test": "127.0.0.1",
    }
    literature = LiteratureSettings(
        **lit.settings(
            allowed_hosts=[],
            host_overrides=overrides,
            trusted_hosts=[*h.HOSTS, "trusted-listener.test"],
            connect_timeout_s=2.0,
        )
    )
    settings = sandbox_settings(sandbox.base_url, literature=literature)
    async with gateway_client(create_app(settings)) as test_client:
        yield test_client


async def _detect_pdf_url(client: Client, url: str) -> dict[str, Any]:
    response = await client.post(
        "/v1/fulltext/detect",
        json={"paper": {"id": "p", "pdf_url": url}, "options": {"max_tier": 2}},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _targets(port: int, sandbox_port: int, ipv6: bool) -> list[tuple[str, str]]:
    def via_redirect(url: str) -> str:
        return f"http://{h.REDIRECTOR}:{sandbox_port}/to?url={quote(url, safe='')}"

    targets = [
        (f"http://127.0.0.1:{port}/a.pdf", "loopback"),
        (f"http://2130706433:{port}/a.pdf", "loopback"),
        (f"http://0x7f000001:{port}/a.pdf", "loopback"),
        (f"http://0177.0.0.1:{port}/a.pdf", "loopback"),
        (f"http://127.1:{port}/a.pdf", "loopback"),
        (f"http://[::ffff:127.0.0.1]:{port}/a.pdf", "loopback"),
        (f"http://[::1]:{port}/a.pdf", "loopback"),
        ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", "metadata"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "metadata"),
        ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
        ("http://10.0.0.1/a.pdf", "private"),
        # DNS names that resolve to forbidden addresses: an override, and the real resolver.
        (f"http://internal.test:{port}/a.pdf", "loopback"),
        ("http://intranet.test/a.pdf", "private"),
        (f"http://localhost:{port}/a.pdf", "loopback"),
        # A trusted host redirecting into forbidden places: each hop is checked again.
        (via_redirect(f"http://127.0.0.1:{port}/a.pdf"), "loopback"),
        (via_redirect(f"http://internal.test:{port}/a.pdf"), "loopback"),
        (via_redirect("http://169.254.169.254/latest/meta-data/"), "metadata"),
        (via_redirect(f"http://user:secret@{h.ZENODO}:{sandbox_port}/x.pdf"), "credentials"),
        (via_redirect("file:///etc/passwd"), "scheme"),
    ]
    assert ipv6 or targets  # (::1 is refused by address, with or without an IPv6 listener)
    return targets


async def test_forbidden_targets_are_refused_without_a_connection(
    client: Client, listener: Listener, lit: LiteratureSandbox, sandbox: Sandbox
) -> None:
    sandbox_port = int(sandbox.base_url.rsplit(":", 1)[1])
    targets = _targets(listener.port, sandbox_port, listener.ipv6)
    for url, reason in targets:
        result = await _detect_pdf_url(client, url)
        assert result["is_available"] is False, url
        assert result["method"] == f"refused_{reason}", (url, result["method"])
        assert result["tiers_tried"] == [2]
    assert listener.accepted == []
    # The redirects themselves were followed (the redirector is trusted) - only the next
    # hop was refused.
    assert lit.requests(h.REDIRECTOR) == 5

    metrics = (await client.get("/metrics")).text
    for reason in ("loopback", "metadata", "private", "credentials", "scheme"):
        assert f'literature_fetch_refusals_total{{reason="{reason}"}}' in metrics


async def test_the_listener_is_reachable_through_a_trusted_name(
    client: Client, listener: Listener
) -> None:
    """Positive control: the same socket, named by a trusted host, is connected to."""
    result = await _detect_pdf_url(client, f"http://trusted-listener.test:{listener.port}/a.pdf")
    assert (result["is_available"], result["tier"], result["content_type"]) == (True, 2, "pdf")
    assert len(listener.accepted) == 1


async def test_a_doi_redirecting_to_the_metadata_address_is_refused(
    client: Client, lit: LiteratureSandbox
) -> None:
    result = await client.post(
        "/v1/fulltext/detect",
        json={"paper": lit.entry("neg-metadata-ssrf")["paper"], "options": {"max_tier": 5}},
    )
    body = result.json()
    assert body["is_available"] is False
    assert (body["tier"], body["method"]) == (5, "refused_metadata")
    assert lit.requests(h.DOI_RESOLVER) == 1


async def test_the_egress_allowlist_refuses_every_other_host(
    sandbox: Sandbox, lit: LiteratureSandbox, listener: Listener
) -> None:
    settings = sandbox_settings(sandbox.base_url, literature=LiteratureSettings(**lit.settings()))
    async with gateway_client(create_app(settings)) as allowlisted:
        result = await _detect_pdf_url(allowlisted, "https://example.org/a.pdf")
        assert result["method"] == "refused_host_not_allowed"
        result = await _detect_pdf_url(allowlisted, f"http://127.0.0.1:{listener.port}/a.pdf")
        assert result["method"] == "refused_loopback"
    assert listener.accepted == []


async def test_bad_urls_in_the_request_are_a_400(client: Client) -> None:
    response = await client.post(
        "/v1/fulltext/detect", json={"paper": {"pdf_url": "file:///etc/passwd"}}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["errors"][0]["key"] == "paper.pdf_url"
    assert "http(s)" in body["detail"]
