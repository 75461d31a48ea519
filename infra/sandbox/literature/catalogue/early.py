"""Papers tiers 1-4 decide: stored text, known PDF links, PubMed Central, Unpaywall."""

from __future__ import annotations

from .. import hosts as h
from ..model import Catalogue, Pdf, Redirect, u
from ..text import make_article
from .helpers import full_page, landing_page, location, paper, pdf_of, resolve, unpaywall, yes


def database(c: Catalogue) -> None:
    a = make_article(
        "db-stored",
        "Nitrogen fixation in restored grassland soils",
        doi="10.5555/db.0001",
        journal="Soil Biol",
    )
    paper(
        c,
        "db-stored",
        "stored full text, status available",
        yes(1, None, None),
        doi=a.doi,
        title=a.title,
        full_text=a.body_text,
        full_text_status="available",
    )
    b = make_article(
        "db-stored-pdf",
        "Thermal tolerance of reef-building corals",
        doi="10.5555/db.0002",
        journal="Coral Reefs",
    )
    pdf = u(h.REPOSITORY, "/bitstream/handle/1234/2002/paper.pdf")
    paper(
        c,
        "db-stored-pdf",
        "stored full text; the answer is the stored PDF URL (no request)",
        yes(1, "pdf", pdf),
        doi=b.doi,
        title=b.title,
        pdf_url=pdf,
        full_text=b.body_text,
        full_text_status="available",
    )
    d = make_article(
        "db-short-pmc",
        "Adolescent sleep and school performance",
        doi="10.5555/db.0003",
        journal="Sleep Med",
    )
    page = u(h.PMC, "/articles/PMC5000003/")
    full_page(c, page, d, "pmc", pdf="/articles/PMC5000003/pdf/main.pdf")
    paper(
        c,
        "db-short-pmc",
        "stored text is only the abstract: falls through to PMC",
        yes(3, "html", page),
        title=d.title,
        pmcid="PMC5000003",
        full_text=d.abstract,
        full_text_status="available",
    )


def direct(c: Catalogue) -> None:
    a = make_article(
        "direct-pdf",
        "Urban tree canopy and land-surface temperature",
        doi=None,
        journal="Urban Clim",
    )
    pdf = u(h.REPOSITORY, "/bitstream/handle/1234/2004/paper.pdf")
    c.add(pdf, pdf_of(a))
    paper(c, "direct-pdf", "pdf_url serves the PDF", yes(2, "pdf", pdf), title=a.title, pdf_url=pdf)
    b = make_article(
        "direct-oa-pdf", "Pollinator visits and flowering phenology", doi=None, journal="Oikos"
    )
    pdf = u(h.ZENODO, "/records/700005/files/article.pdf")
    c.add(pdf, pdf_of(b))
    paper(
        c,
        "direct-oa-pdf",
        "open_access_pdf serves the PDF",
        yes(2, "pdf", pdf),
        title=b.title,
        open_access_pdf=pdf,
    )
    d = make_article(
        "direct-octet",
        "Hydrogen-deuterium exchange of folding intermediates",
        doi=None,
        journal="Protein Sci",
    )
    pdf = u(h.EUROPEPMC, "/backend/ptpmcrender.fcgi?accid=PMC5000006&blobtype=pdf")
    c.add(pdf, Pdf("direct-octet", d.title, d.body_text, content_type="application/octet-stream"))
    paper(
        c,
        "direct-octet",
        "a PDF served as application/octet-stream",
        yes(2, "pdf", pdf),
        title=d.title,
        open_access_pdf=pdf,
    )
    e = make_article(
        "direct-404-up",
        "Gene transfer in hospital wastewater",
        doi="10.1186/s12862-020-0007-1",
        journal="BMC Evol Biol",
    )
    missing = u(h.REPOSITORY, "/bitstream/handle/1234/2007/missing.pdf")
    pdf = u(h.SPRINGER, "/content/pdf/10.1186/s12862-020-0007-1.pdf")
    c.add(pdf, pdf_of(e))
    unpaywall(
        c, e, [location(pdf=pdf, landing=u(h.SPRINGER, "/article/10.1186/s12862-020-0007-1"))]
    )
    paper(
        c,
        "direct-404-up",
        "pdf_url is gone (404); Unpaywall knows the publisher PDF",
        yes(4, "pdf", pdf),
        doi=e.doi,
        title=e.title,
        pdf_url=missing,
    )
    f = make_article(
        "direct-login-pub",
        "Meltwater runoff from mountain glaciers",
        doi="10.1002/advs.202000008",
        journal="Adv Sci",
    )
    pdfdirect = u(h.WILEY, "/doi/pdfdirect/10.1002/advs.202000008")
    c.add(
        pdfdirect, Redirect("/action/showLogin?uri=%2Fdoi%2Fpdfdirect%2F10.1002%2Fadvs.202000008")
    )
    page = u(h.WILEY, "/doi/full/10.1002/advs.202000008")
    full_page(c, page, f, "wiley", pdf=pdfdirect)
    resolve(c, f, page)
    paper(
        c,
        "direct-login-pub",
        "open_access_pdf leads to a login page; the publisher page is OA",
        yes(5, "html", page),
        doi=f.doi,
        title=f.title,
        open_access_pdf=pdfdirect,
    )


def pmc(c: Catalogue) -> None:
    for key, pmcid, extra in (
        ("pmc-basic", "PMC5000009", {}),
        ("pmc-with-doi", "PMC5000010", {"doi": "10.3390/ijms21000010"}),
    ):
        a = make_article(
            key,
            f"Working memory training: transfer effects ({pmcid})",
            doi=extra.get("doi"),
            journal="Int J Mol Sci",
        )
        page = u(h.PMC, f"/articles/{pmcid}/")
        full_page(c, page, a, "pmc", pdf=f"/articles/{pmcid}/pdf/main.pdf")
        paper(
            c,
            key,
            "PMC has the full text",
            yes(3, "html", page),
            title=a.title,
            pmcid=pmcid,
            **extra,
        )
    a = make_article(
        "pmc-from-pmid", "Gut microbiota and insulin sensitivity", doi=None, journal="Cell Metab"
    )
    page = u(h.PMC, "/articles/PMC5000011/")
    full_page(c, page, a, "pmc")
    c.idconv["31000011"] = "PMC5000011"
    paper(
        c,
        "pmc-from-pmid",
        "only a PMID: NCBI's ID converter gives the PMCID",
        yes(3, "html", page),
        title=a.title,
        pmid="31000011",
    )
    b = make_article(
        "pmc-scanned",
        "Coral bleaching surveys, 1998 (scanned back issue)",
        doi=None,
        journal="Mar Ecol",
    )
    pdf = u(h.PMC, "/articles/PMC5000013/pdf/scan.pdf")
    landing_page(c, u(h.PMC, "/articles/PMC5000013/"), b, "pmc", pdf=pdf)
    c.add(pdf, pdf_of(b))
    paper(
        c,
        "pmc-scanned",
        "a scanned back issue: PMC's page has only the abstract, the PDF is it",
        yes(3, "pdf", pdf),
        title=b.title,
        pmcid="PMC5000013",
    )
    d = make_article(
        "pmc-missing-mdpi",
        "Dietary patterns and metabolic health",
        doi="10.3390/nu12000012",
        journal="Nutrients",
    )
    page = u(h.MDPI, "/2072-6643/12/1/12")
    full_page(c, page, d, "mdpi", pdf="/2072-6643/12/1/12/pdf")
    resolve(c, d, page)
    paper(
        c,
        "pmc-missing-mdpi",
        "the PMCID is unknown to PMC (404); the MDPI page is full text",
        yes(5, "html", page),
        doi=d.doi,
        title=d.title,
        pmcid="PMC5999999",
    )


def unpaywall_papers(c: Catalogue) -> None:
    a = make_article(
        "up-publisher-pdf",
        "A randomised trial of school-based sleep education",
        doi="10.1186/s13063-020-0014-2",
        journal="Trials",
    )
    pdf = u(h.SPRINGER, "/content/pdf/10.1186/s13063-020-0014-2.pdf")
    c.add(pdf, pdf_of(a))
    unpaywall(
        c, a, [location(pdf=pdf, landing=u(h.SPRINGER, "/article/10.1186/s13063-020-0014-2"))]
    )
    paper(
        c,
        "up-publisher-pdf",
        "Unpaywall's best location is the publisher's PDF",
        yes(4, "pdf", pdf),
        doi=a.doi,
        title=a.title,
    )
    b = make_article(
        "up-green-repo",
        "Tree cover and heat-related mortality",
        doi="10.1080/00000000.2020.0015",
        journal="Int J Biometeorol",
    )
    pdf = u(h.EPRINTS, "/15/1/manuscript.pdf")
    c.add(pdf, pdf_of(b))
    unpaywall(
        c,
        b,
        [
            location(
                pdf=pdf,
                landing=u(h.EPRINTS, "/15/"),
                host_type="repository",
                version="acceptedVersion",
            )
        ],
    )
    paper(
        c,
        "up-green-repo",
        "green OA: the accepted manuscript in a repository",
        yes(4, "pdf", pdf),
        doi=b.doi,
        title=b.title,
    )
    d = make_article(
        "up-first-broken",
        "Chaperone-assisted folding in vivo",
        doi="10.1016/j.cell.2020.00016",
        journal="Cell",
    )
    broken = u(h.SCIENCEDIRECT, "/science/article/pii/S0092000020000016/pdfft")
    pdf = u(h.ZENODO, "/records/700016/files/preprint.pdf")
    c.add(pdf, pdf_of(d))
    unpaywall(
        c,
        d,
        [
            location(
                pdf=broken, landing=u(h.SCIENCEDIRECT, "/science/article/pii/S0092000020000016")
            ),
            location(
                pdf=pdf,
                landing=u(h.ZENODO, "/records/700016"),
                host_type="repository",
                version="submittedVersion",
            ),
        ],
    )
    paper(
        c,
        "up-first-broken",
        "Unpaywall's best PDF link is broken; its second location works",
        yes(4, "pdf", pdf),
        doi=d.doi,
        title=d.title,
    )
    e = make_article(
        "up-landing-only",
        "Rhizosphere bacteria under drought",
        doi="10.3389/fmicb.2020.00017",
        journal="Front Microbiol",
    )
    page = u(h.FRONTIERS, "/articles/10.3389/fmicb.2020.00017/full")
    full_page(c, page, e, "frontiers", pdf="/articles/10.3389/fmicb.2020.00017/pdf")
    unpaywall(c, e, [location(pdf=None, landing=page)])
    paper(
        c,
        "up-landing-only",
        "Unpaywall gives only a landing page, which is the full text",
        yes(4, "html", page),
        doi=e.doi,
        title=e.title,
    )
