"""The literature sandbox's hostnames, and how a gateway is configured to reach them.

Every host is a `.test` name (RFC 2606: never resolvable on the internet). The gateway maps
them to 127.0.0.1 with `LITERATURE_HOST_OVERRIDES`, trusts exactly these names to resolve to
loopback (`LITERATURE_TRUSTED_HOSTS`), and may fetch nothing else
(`LITERATURE_ALLOWED_HOSTS`), so tests and the demo run the production guard unchanged.
"""

from __future__ import annotations

import json
from typing import Any

UNPAYWALL = "api.unpaywall.test"
DOI_RESOLVER = "doi.test"
PMC = "pmc.ncbi.nlm.nih.test"
NCBI = "www.ncbi.nlm.nih.test"
EUROPEPMC = "europepmc.test"
PLOS = "journals.plos.test"
LINKINGHUB = "linkinghub.elsevier.test"
SCIENCEDIRECT = "www.sciencedirect.test"
SPRINGER = "link.springer.test"
NATURE = "www.nature.test"
WILEY = "onlinelibrary.wiley.test"
TANDF = "www.tandfonline.test"
MDPI = "www.mdpi.test"
FRONTIERS = "www.frontiersin.test"
ELIFE = "elifesciences.test"
ARXIV = "arxiv.test"
BIORXIV = "www.biorxiv.test"
MEDRXIV = "www.medrxiv.test"
OJS = "journals.ojs-press.test"
SOCIETY = "www.society-journal.test"
REPOSITORY = "repository.univ.test"
EPRINTS = "eprints.univ.test"
ZENODO = "zenodo.test"
DOWN = "www.down-publisher.test"
LOOP = "www.loop-publisher.test"
HUGE = "www.huge-publisher.test"
NEWS = "news.example-media.test"
# Test helper: `/to?url=...` answers 302 to any URL (redirect checks in the guard's tests).
REDIRECTOR = "redirector.test"

HOSTS: tuple[str, ...] = (
    UNPAYWALL,
    DOI_RESOLVER,
    PMC,
    NCBI,
    EUROPEPMC,
    PLOS,
    LINKINGHUB,
    SCIENCEDIRECT,
    SPRINGER,
    NATURE,
    WILEY,
    TANDF,
    MDPI,
    FRONTIERS,
    ELIFE,
    ARXIV,
    BIORXIV,
    MEDRXIV,
    OJS,
    SOCIETY,
    REPOSITORY,
    EPRINTS,
    ZENODO,
    DOWN,
    LOOP,
    HUGE,
    NEWS,
    REDIRECTOR,
)
UNPAYWALL_EMAIL = "sandbox@literature-gateway.test"


def gateway_settings(base_url: str) -> dict[str, Any]:
    """`LiteratureSettings(**gateway_settings(sandbox.base_url))` for tests."""
    port = int(base_url.rsplit(":", 1)[1].strip("/"))
    return {
        "unpaywall_email": UNPAYWALL_EMAIL,
        "unpaywall_base_url": f"http://{UNPAYWALL}:{port}/v2",
        "doi_resolver_url": f"http://{DOI_RESOLVER}:{port}",
        "pmc_article_base_url": f"http://{PMC}:{port}/articles",
        "pmc_idconv_url": f"http://{NCBI}:{port}/pmc/utils/idconv/v1.0/",
        "host_overrides": dict.fromkeys(HOSTS, "127.0.0.1"),
        "trusted_hosts": list(HOSTS),
        "allowed_hosts": list(HOSTS),
    }


def gateway_env(base_url: str) -> dict[str, str]:
    """The same configuration as environment variables (for a service process)."""
    settings = gateway_settings(base_url)
    return {
        "UNPAYWALL_EMAIL": settings["unpaywall_email"],
        "LITERATURE_UNPAYWALL_BASE_URL": settings["unpaywall_base_url"],
        "LITERATURE_DOI_RESOLVER_URL": settings["doi_resolver_url"],
        "LITERATURE_PMC_ARTICLE_BASE_URL": settings["pmc_article_base_url"],
        "LITERATURE_PMC_IDCONV_URL": settings["pmc_idconv_url"],
        "LITERATURE_HOST_OVERRIDES": json.dumps(settings["host_overrides"]),
        "LITERATURE_TRUSTED_HOSTS": ",".join(settings["trusted_hosts"]),
        "LITERATURE_ALLOWED_HOSTS": ",".join(settings["allowed_hosts"]),
    }
