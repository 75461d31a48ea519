"""DOI/URL validation, the SSRF guard's address rules, HTML and prompt sanitising: pure
functions, tested without a network. `fetcher.py` applies them to every outbound request."""

from app.modules.literature.safety.addresses import (
    MAX_URL_CHARS,
    METADATA_ADDRESSES,
    METADATA_HOSTNAMES,
    EgressPolicy,
    Refusal,
    Target,
    UnsafeTarget,
    address_refusal,
    check_url,
    embedded_ipv4,
    host_matches,
    parse_ip_literal,
)
from app.modules.literature.safety.hosts import HostReading, IPAddress, client_host, read_host
from app.modules.literature.safety.identifiers import (
    MAX_DOI_CHARS,
    doi_path,
    normalize_doi,
    normalize_pmcid,
    normalize_pmid,
)
from app.modules.literature.safety.text import (
    REMOVED,
    PromptText,
    html_charset,
    sanitize_field,
    sanitize_for_prompt,
    sanitize_html,
)

__all__ = [
    "MAX_DOI_CHARS",
    "MAX_URL_CHARS",
    "METADATA_ADDRESSES",
    "METADATA_HOSTNAMES",
    "REMOVED",
    "EgressPolicy",
    "HostReading",
    "IPAddress",
    "PromptText",
    "Refusal",
    "Target",
    "UnsafeTarget",
    "address_refusal",
    "check_url",
    "client_host",
    "doi_path",
    "embedded_ipv4",
    "host_matches",
    "html_charset",
    "normalize_doi",
    "normalize_pmcid",
    "normalize_pmid",
    "parse_ip_literal",
    "read_host",
    "sanitize_field",
    "sanitize_for_prompt",
    "sanitize_html",
]
