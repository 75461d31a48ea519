"""Paper identifiers: DOI, PMCID and PMID, validated and normalised, with messages that say
what to send instead."""

from __future__ import annotations

import re
from urllib.parse import quote

MAX_DOI_CHARS = 300

_DOI_PREFIXES = (
    "https://doi.org/",
    "http://doi.org/",
    "https://dx.doi.org/",
    "http://dx.doi.org/",
    "doi.org/",
    "doi:",
)
# Crossref's own pattern is stricter than what registered DOIs contain (old Wiley DOIs hold
# `<`, `>` and `;`), so the suffix is anything printable without spaces; it is always
# percent-encoded before it goes into a URL.
_DOI = re.compile(r"^10\.\d{4,9}/[^\s\x00-\x1f\x7f]+$")
_PMCID = re.compile(r"^(?:PMC)?(\d{1,10})$", re.IGNORECASE)
_PMID = re.compile(r"^\d{1,10}$")


def normalize_doi(raw: str) -> str:
    """`10.1371/journal.pone.0111303` from any usual spelling, or ValueError saying why."""
    doi = raw.strip()
    lowered = doi.lower()
    for prefix in _DOI_PREFIXES:
        if lowered.startswith(prefix):
            doi = doi[len(prefix) :].strip()
            break
    if len(doi) > MAX_DOI_CHARS:
        raise ValueError(f"a DOI has at most {MAX_DOI_CHARS} characters")
    if not _DOI.match(doi):
        raise ValueError(
            "not a DOI: expected '10.<registrant>/<suffix>', e.g. '10.1371/journal.pone.0111303'"
        )
    # DOIs are case-insensitive; the lower-case form keys caches and prefix lookups.
    return doi.lower()


def normalize_pmcid(raw: str) -> str:
    match = _PMCID.match(raw.strip())
    if not match:
        raise ValueError("not a PMCID: expected 'PMC' and digits, e.g. 'PMC4267813'")
    return f"PMC{int(match.group(1))}"


def normalize_pmid(raw: str) -> str:
    value = raw.strip()
    if not _PMID.match(value):
        raise ValueError("not a PMID: expected digits only, e.g. '25372390'")
    return str(int(value))


def doi_path(doi: str) -> str:
    """The DOI as a URL path segment (resolvers take the slash literally)."""
    return quote(doi, safe="/;:()._-")
