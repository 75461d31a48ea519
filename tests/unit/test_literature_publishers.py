"""Publisher strategies: lookup by host, DOI prefix and URL shape; landing URL -> PDF URL;
sorting a page's links by how far they can be trusted."""

from __future__ import annotations

import pytest

from app.modules.literature.publishers import GENERIC, PublisherRegistry, brand, read_links

REGISTRY = PublisherRegistry()


def test_brand_is_the_registrable_name_without_its_suffix() -> None:
    assert brand("journals.plos.org") == "plos"
    assert brand("journals.plos.test") == "plos"
    assert brand("www.bbc.co.uk") == "bbc"
    assert brand("localhost") == "localhost"


@pytest.mark.parametrize(
    ("url", "doi", "key"),
    [
        ("https://www.sciencedirect.com/science/article/pii/S1", "10.1016/j.x.1", "elsevier"),
        ("https://link.springer.com/article/10.1007/s1", None, "springer"),
        ("https://bmcbiol.biomedcentral.com/articles/10.1186/x", None, "springer"),
        ("https://www.nature.com/articles/s41467-020-1", None, "nature"),
        ("https://onlinelibrary.wiley.com/doi/full/10.1002/x", None, "wiley"),
        ("https://www.tandfonline.com/doi/full/10.1080/x", None, "tandf"),
        ("https://journals.plos.org/plosone/article?id=10.1371/x", None, "plos"),
        ("https://www.mdpi.com/2072-6643/12/1/12", None, "mdpi"),
        ("https://www.frontiersin.org/articles/10.3389/x/full", None, "frontiers"),
        ("https://elifesciences.org/articles/60023", None, "elife"),
        ("https://arxiv.org/abs/2101.00001", None, "arxiv"),
        ("https://www.biorxiv.org/content/10.1101/2020.01.01.1", "10.1101/2020.01.01.1", "biorxiv"),
        # Same DOI prefix, different server: the host decides.
        ("https://www.medrxiv.org/content/10.1101/2020.01.01.1", "10.1101/2020.01.01.1", "medrxiv"),
        ("https://pmc.ncbi.nlm.nih.gov/articles/PMC1/", None, "pmc"),
        ("https://journal.example.edu/index.php/jlis/article/view/27", None, "ojs"),
        # Unknown host, known DOI prefix (a society journal hosted by Wiley, say).
        ("https://journal.example.org/a/1", "10.1111/x", "wiley"),
        ("https://journal.example.org/a/1", "10.5555/x", "generic"),
    ],
)
def test_strategy_for_a_landing_page(url: str, doi: str | None, key: str) -> None:
    assert REGISTRY.for_page(url, doi).key == key


def test_ojs_is_also_recognised_by_its_generator_tag() -> None:
    strategy = REGISTRY.for_page("https://j.example.org/x/1", None, "Open Journal Systems 3.3")
    assert strategy.key == "ojs"


@pytest.mark.parametrize(
    ("url", "pdf"),
    [
        ("https://arxiv.org/abs/2101.00001v2", "https://arxiv.org/pdf/2101.00001v2"),
        (
            "https://j.example.edu/index.php/jlis/article/view/27/127",
            "https://j.example.edu/index.php/jlis/article/download/27/127",
        ),
        (
            "https://www.biorxiv.org/content/10.1101/2020.06.01.000024v1",
            "https://www.biorxiv.org/content/10.1101/2020.06.01.000024v1.full.pdf",
        ),
        (
            "https://pmc.ncbi.nlm.nih.gov/articles/PMC5000013/",
            "https://pmc.ncbi.nlm.nih.gov/articles/PMC5000013/pdf/",
        ),
        ("https://www.mdpi.com/2072-6643/12/1/12", "https://www.mdpi.com/2072-6643/12/1/12/pdf"),
        ("https://example.org/paper", None),
    ],
)
def test_pdf_url_from_a_landing_url(url: str, pdf: str | None) -> None:
    assert REGISTRY.pdf_from_url(url) == pdf


def test_links_are_sorted_by_trust() -> None:
    html = (
        """<html><head>
      <meta name="citation_pdf_url" content="/content/pdf/10.1007/x.pdf">
      </head><body>
      <a class="c-pdf-download__link" href="/content/pdf/10.1007/x.pdf">Download PDF</a>
      <a href="https://arxiv.org/abs/2101.00001">arXiv</a>
      <a href="https://repo.example.edu/handle/1/2">Record</a>
      <a href="/other/suppl.pdf">Supplementary data</a>
      <a href="https://zenodo.org/records/1">Author's accepted manuscript</a>
      <a href="javascript:void(0)">PDF</a>
      <div class="c-article-body">"""
        + "<p>text</p>" * 10
        + "</div></body></html>"
    )
    links = read_links(html, "https://link.springer.com/article/10.1007/x", "10.1007/x", REGISTRY)
    assert links.strategy.key == "springer"
    assert links.citation_pdf == ("https://link.springer.com/content/pdf/10.1007/x.pdf",)
    assert links.publisher_pdf[0] == "https://link.springer.com/content/pdf/10.1007/x.pdf"
    assert set(links.repository) == {
        "https://arxiv.org/abs/2101.00001",
        "https://repo.example.edu/handle/1/2",
        "https://zenodo.org/records/1",
    }
    assert links.other_pdf == ("https://link.springer.com/other/suppl.pdf",)
    assert links.content_chars == len(" ".join(["text"] * 10))


def test_generic_pages_have_no_publisher_pdf() -> None:
    links = read_links("<a href='/x.pdf'>PDF</a>", "https://j.example.org/a", None, REGISTRY)
    assert links.strategy is GENERIC
    assert links.publisher_pdf == ()
    assert links.other_pdf == ("https://j.example.org/x.pdf",)
