"""Papers tiers 5-7 decide: publisher pages, secondary links, AI verification."""

from __future__ import annotations

from dataclasses import replace

from .. import hosts as h
from .. import pages
from ..model import Catalogue, Html, Redirect, u
from ..text import make_article
from .helpers import full_page, landing_page, paper, pdf_of, resolve, unpaywall, yes


def publishers(c: Catalogue) -> None:
    def full_via_doi(
        key: str,
        title: str,
        doi: str,
        journal: str,
        url: str,
        style: str,
        pdf: str | None,
        note: str,
        closed: bool = False,
    ) -> None:
        a = make_article(key, title, doi=doi, journal=journal)
        full_page(c, url, a, style, pdf=pdf)
        c.dois[doi.lower()] = url
        if closed:
            unpaywall(c, a, [])
        paper(c, key, note, yes(5, "html", url), doi=doi, title=title)

    full_via_doi(
        "up-closed-nature",
        "Global patterns of soil nitrogen cycling",
        "10.1038/s41467-020-00019-x",
        "Nat Commun",
        u(h.NATURE, "/articles/s41467-020-00019-x"),
        "nature",
        None,
        "Unpaywall says closed (stale); the publisher page is open",
        closed=True,
    )
    full_via_doi(
        "pub-plos",
        "Pan-trap sampling of wild bees across a land-use gradient",
        "10.1371/journal.pone.0200020",
        "PLOS ONE",
        u(h.PLOS, "/plosone/article?id=10.1371/journal.pone.0200020"),
        "plos",
        "/plosone/article/file?id=10.1371/journal.pone.0200020&type=printable",
        "PLOS full text",
    )
    full_via_doi(
        "pub-springer",
        "Long-term photo-quadrat surveys of reef recovery",
        "10.1007/s00000-020-00022-1",
        "Coral Reefs",
        u(h.SPRINGER, "/article/10.1007/s00000-020-00022-1"),
        "springer",
        "/content/pdf/10.1007/s00000-020-00022-1.pdf",
        "Springer full text",
    )
    full_via_doi(
        "pub-elife",
        "Aggregation-prone folding intermediates in neurons",
        "10.7554/eLife.60023",
        "eLife",
        u(h.ELIFE, "/articles/60023"),
        "elife",
        "/articles/60023.pdf",
        "eLife full text",
    )
    full_via_doi(
        "pub-biorxiv",
        "Metagenomic surveillance of resistance genes (preprint)",
        "10.1101/2020.06.01.000024",
        "bioRxiv",
        u(h.BIORXIV, "/content/10.1101/2020.06.01.000024v1.full"),
        "biorxiv",
        "/content/10.1101/2020.06.01.000024v1.full.pdf",
        "bioRxiv full-text HTML",
    )
    # Elsevier: doi.org -> linkinghub -> ScienceDirect, two redirects.
    e = make_article(
        "pub-elsevier-oa",
        "Open-access trial of urban cooling interventions",
        doi="10.1016/j.sandbox.2020.100021",
        journal="Urban Clim",
    )
    page = u(h.SCIENCEDIRECT, "/science/article/pii/S0000000020100021")
    full_page(c, page, e, "elsevier", pdf="/science/article/pii/S0000000020100021/pdfft")
    c.add(u(h.LINKINGHUB, "/retrieve/pii/S0000000020100021"), Redirect(page))
    resolve(c, e, u(h.LINKINGHUB, "/retrieve/pii/S0000000020100021"))
    unpaywall(c, e, [])
    paper(
        c,
        "pub-elsevier-oa",
        "Elsevier OA article behind two redirects",
        yes(5, "html", page),
        doi=e.doi,
        title=e.title,
    )
    # medRxiv: abstract page; the PDF button is the full text.
    m = make_article(
        "pub-medrxiv-pdf",
        "Sleep duration and mood in adolescents (preprint)",
        doi="10.1101/2020.07.01.20000025",
        journal="medRxiv",
    )
    landing = u(h.MEDRXIV, "/content/10.1101/2020.07.01.20000025v2")
    pdf = u(h.MEDRXIV, "/content/10.1101/2020.07.01.20000025v2.full.pdf")
    landing_page(c, landing, m, "medrxiv", pdf=pdf)
    c.add(pdf, pdf_of(m))
    resolve(c, m, landing)
    paper(
        c,
        "pub-medrxiv-pdf",
        "medRxiv abstract page with the PDF button (same DOI prefix as bioRxiv)",
        yes(5, "pdf", pdf),
        doi=m.doi,
        title=m.title,
    )
    # arXiv: the DOI resolves to /abs/, the full text is /pdf/.
    x = make_article(
        "pub-arxiv-pdf",
        "Laser altimetry of glacier surface lowering",
        doi="10.48550/arXiv.2101.00026",
        journal="arXiv",
    )
    c.add(u(h.ARXIV, "/abs/2101.00026"), Html(lambda _, x=x: pages.arxiv_abstract(x, "2101.00026")))
    pdf = u(h.ARXIV, "/pdf/2101.00026")
    c.add(pdf, pdf_of(x))
    resolve(c, x, u(h.ARXIV, "/abs/2101.00026"))
    paper(
        c,
        "pub-arxiv-pdf",
        "arXiv abstract page; /pdf/ is the full text",
        yes(5, "pdf", pdf),
        doi=x.doi,
        title=x.title,
    )
    # OJS: the galley link opens a viewer; /download/ serves the file.
    o = make_article(
        "pub-ojs-pdf",
        "Open access uptake in small society journals",
        doi="10.5555/jlis.v12i1.27",
        journal="JLIS",
    )
    landing = u(h.OJS, "/index.php/jlis/article/view/27")
    c.add(landing, Html(lambda _, o=o: pages.ojs_landing(o, "/index.php/jlis/article/view/27/127")))
    c.add(
        u(h.OJS, "/index.php/jlis/article/view/27/127"), Html(lambda _: pages.not_found("viewer"))
    )
    pdf = u(h.OJS, "/index.php/jlis/article/download/27/127")
    c.add(pdf, pdf_of(o))
    resolve(c, o, landing)
    paper(
        c,
        "pub-ojs-pdf",
        "OJS journal: galley view link rewritten to its download",
        yes(5, "pdf", pdf),
        doi=o.doi,
        title=o.title,
    )
    # No DOI at all: the paper's own URL.
    t = make_article(
        "pub-url-only", "Heat stress in dairy cattle under shade", doi=None, journal="J Dairy Sci"
    )
    page = u(h.TANDF, "/doi/full/10.1080/00000000.2020.0028")
    full_page(c, page, t, "tandf", pdf="/doi/pdf/10.1080/00000000.2020.0028")
    paper(
        c,
        "pub-url-only",
        "no identifiers but a URL to the full text",
        yes(5, "html", page),
        title=t.title,
        url=page,
    )


def secondary(c: Catalogue) -> None:
    a = make_article(
        "sec-arxiv",
        "Thermal refugia on reef slopes",
        doi="10.1016/j.sandbox.2020.100029",
        journal="Mar Environ Res",
    )
    page = u(h.SCIENCEDIRECT, "/science/article/pii/S0000000020100029")
    pdfft = u(h.SCIENCEDIRECT, "/science/article/pii/S0000000020100029/pdfft")
    landing_page(
        c,
        page,
        a,
        "elsevier",
        wall="paywall",
        pdf=pdfft,
        links=(("Preprint version on arXiv", u(h.ARXIV, "/abs/2102.00029")),),
    )
    c.add(pdfft, Redirect("/user/login?targetURL=%2Fscience%2Farticle%2Fpii%2FS0000000020100029"))
    c.add(u(h.ARXIV, "/abs/2102.00029"), Html(lambda _, a=a: pages.arxiv_abstract(a, "2102.00029")))
    pdf = u(h.ARXIV, "/pdf/2102.00029")
    c.add(pdf, pdf_of(a))
    resolve(c, a, page)
    unpaywall(c, a, [])
    paper(
        c,
        "sec-arxiv",
        "paywalled at Elsevier; the page links the arXiv preprint",
        yes(6, "pdf", pdf),
        doi=a.doi,
        title=a.title,
    )
    b = make_article(
        "sec-repository",
        "Exposure-response curves for urban heat",
        doi="10.1080/00000000.2020.0030",
        journal="Environ Res",
    )
    page = u(h.TANDF, "/doi/abs/10.1080/00000000.2020.0030")
    record = u(h.REPOSITORY, "/handle/1234/2030")
    pdf = u(h.REPOSITORY, "/bitstream/handle/1234/2030/accepted_manuscript.pdf")
    landing_page(
        c,
        page,
        b,
        "tandf",
        wall="paywall",
        pdf="/doi/pdf/10.1080/00000000.2020.0030",
        links=(("Accepted manuscript (institutional repository)", record),),
    )
    c.add(u(h.TANDF, "/doi/pdf/10.1080/00000000.2020.0030"), Redirect("/action/showLogin"))
    c.add(record, Html(lambda x, b=b, pdf=pdf: pages.repository_record(b, x(pdf))))
    c.add(pdf, pdf_of(b))
    resolve(c, b, page)
    paper(
        c,
        "sec-repository",
        "paywalled; a repository record (two hops) holds the manuscript",
        yes(6, "pdf", pdf),
        doi=b.doi,
        title=b.title,
    )
    d = make_article(
        "sec-citation-pdf",
        "Measurement error in actigraphy",
        doi="10.1007/978-3-030-00031-5_31",
        journal="Lect Notes",
    )
    page = u(h.SPRINGER, "/chapter/10.1007/978-3-030-00031-5_31")
    pdf = u(h.SPRINGER, "/content/pdf/10.1007/978-3-030-00031-5_31.pdf")
    landing_page(c, page, d, "springer", meta=pdf)
    c.add(pdf, pdf_of(d))
    resolve(c, d, page)
    paper(
        c,
        "sec-citation-pdf",
        "a chapter page without a PDF button; citation_pdf_url is free",
        yes(6, "pdf", pdf),
        doi=d.doi,
        title=d.title,
    )
    e = make_article(
        "sec-author-version",
        "Pan-trap colour and bee capture rates",
        doi="10.5555/sj.2020.032",
        journal="J Appl Soc Stud",
    )
    page = u(h.SOCIETY, "/articles/sj032")
    pdf = u(h.ZENODO, "/records/700032/files/sj032-author-version.pdf")
    landing_page(c, page, e, "generic", links=(("Author's version (PDF)", pdf),))
    c.add(pdf, pdf_of(e))
    resolve(c, e, page)
    paper(
        c,
        "sec-author-version",
        "an unknown publisher's page links the author's version on Zenodo",
        yes(6, "pdf", pdf),
        doi=e.doi,
        title=e.title,
    )


def ai(c: Catalogue) -> None:
    a = make_article(
        "ai-generic-pdf",
        "Shade trees in coffee agroforestry",
        doi="10.5555/sj.2020.033",
        journal="J Appl Soc Stud",
    )
    page = u(h.SOCIETY, "/articles/sj033")
    pdf = u(h.SOCIETY, "/files/sj033.pdf")
    landing_page(c, page, a, "generic", links=(("Download", pdf),))
    c.add(pdf, pdf_of(a))
    resolve(c, a, page)
    paper(
        c,
        "ai-generic-pdf",
        "an anonymous PDF link (could be a supplement): the AI reads it",
        yes(7, "pdf", pdf),
        doi=a.doi,
        title=a.title,
    )
    b = make_article(
        "ai-short-html",
        "Brief communication: bee decline in city parks",
        doi=None,
        journal="J Appl Soc Stud",
        short=True,
    )
    # A letter citing three papers: full text, but short enough that heuristics hesitate.
    b = replace(b, references=b.references[:3])
    page = u(h.SOCIETY, "/articles/sj034")
    full_page(c, page, b, "generic")
    paper(
        c,
        "ai-short-html",
        "a short article the heuristics are unsure of: the AI reads it",
        yes(7, "html", page),
        title=b.title,
        url=page,
    )
