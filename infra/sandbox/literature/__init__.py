"""Loopback stand-ins for the literature upstreams: Unpaywall, PubMed Central (and NCBI's ID
converter), the doi.org resolver, publisher sites and repositories, with a catalogue of papers
whose full-text answers are known. See `infra/sandbox/README.md`, "Literature"."""

from __future__ import annotations

from .catalogue import AI_FULL_TEXT_VERDICT, AI_NOT_FULL_TEXT_VERDICT
from .hosts import HOSTS, gateway_env, gateway_settings
from .sites import mount_literature

__all__ = [
    "AI_FULL_TEXT_VERDICT",
    "AI_NOT_FULL_TEXT_VERDICT",
    "HOSTS",
    "gateway_env",
    "gateway_settings",
    "mount_literature",
]
