"""Loopback stand-ins for the gateway's LLM upstreams (Groq, OpenAI, Azure, Gemini).

Wire-faithful paths, headers, bodies and errors, plus HTTP-controlled chaos
(``/_chaos``) and counters (``/_stats``), so tests, the demo and benchmarks can
exercise the gateway against "the far side of the network" without internet.
See ``infra/sandbox/README.md``.
"""

from __future__ import annotations

from .catalog import PROVIDERS, Catalog, Provider, load_catalog
from .chaos import ChaosConfig
from .server import SandboxServer, SandboxThread, build_app, provider_base_urls, start_sandbox

__all__ = [
    "PROVIDERS",
    "Catalog",
    "ChaosConfig",
    "Provider",
    "SandboxServer",
    "SandboxThread",
    "build_app",
    "load_catalog",
    "provider_base_urls",
    "start_sandbox",
]
