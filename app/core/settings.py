"""One validated settings tree, read from the environment at start.

Each upstream has its own section with the environment prefix its users already know
(`GROQ_`, `GEMINI_`, `AZURE_OPENAI_`, `OPENAI_`). Secrets are `SecretStr` so that a
settings dump, a log line or a traceback never shows them.
"""

from __future__ import annotations

import ipaddress
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.core.masking import mask_url
from app.core.model_names import check_model_id
from app.core.secret_files import SecretFileSettings


class ProviderName(StrEnum):
    GROQ = "groq"
    GEMINI = "gemini"
    AZURE = "azure"
    OPENAI = "openai"


class RoutingStrategy(StrEnum):
    PRIORITY = "priority"
    COST = "cost"
    LATENCY = "latency"
    QUALITY = "quality"
    BALANCED = "balanced"


def split_csv(value: Any) -> Any:
    """Accept `a,b,c` from the environment as well as a real list from code."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class ProviderSettings(SecretFileSettings):
    """What every upstream shares: keys, base URL, model chains and the default timeout.
    Keys also come from files: `<P>_API_KEY_FILE`, `<P>_API_KEYS_FILE` (app.core.secret_files)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    api_key: SecretStr | None = None
    # Several keys are used round-robin; a key that got 429 rests until its Retry-After.
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    base_url: str = ""
    fast_models: Annotated[list[str], NoDecode] = Field(default_factory=list)
    quality_models: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Used until the adaptive timeout has enough samples (and as its fallback).
    timeout_s: float = Field(default=15.0, gt=0, le=300)
    # Connections kept to this upstream; each is one request in flight.
    max_connections: int = Field(default=200, ge=1, le=10_000)
    # Consecutive provider faults that open the breaker, and how long it stays open.
    breaker_fail_max: int = Field(default=5, ge=1)
    breaker_reset_timeout_s: float = Field(default=30.0, gt=0)
    # Client-side limits per key (None: no limit); at the limit the call moves on at once.
    rpm_per_key: int | None = Field(default=None, ge=1)
    tpm_per_key: int | None = Field(default=None, ge=1)
    # Requests per key per day (the day in BUDGET_TIMEZONE; None: no quota). A key at its
    # quota is skipped until the day resets. Groq's free tier allows about 14,400 a day.
    rpd_per_key: int | None = Field(default=None, ge=1)

    _split = field_validator("api_keys", "fast_models", "quality_models", mode="before")(split_csv)
    # Whether this provider's model ids may hold one '/' (Groq's `openai/gpt-oss-20b`); only
    # providers that send the id in the JSON body, never in a URL path, allow it.
    nested_model_ids: ClassVar[bool] = False

    @field_validator("fast_models", "quality_models", mode="after")
    @classmethod
    def _model_names(cls, value: list[str], info: ValidationInfo) -> list[str]:
        """Model names end up in upstream URLs: refused at start unless strictly well formed."""
        setting = f"{cls.model_config.get('env_prefix', '')}{info.field_name}".upper()
        return [
            check_model_id(name, nested=cls.nested_model_ids, setting=setting) for name in value
        ]

    def all_keys(self) -> list[SecretStr]:
        """All configured keys, the single-key variable first, without duplicates."""
        seen: set[str] = set()
        keys: list[SecretStr] = []
        for key in ([self.api_key] if self.api_key else []) + self.api_keys:
            raw = key.get_secret_value().strip()
            if raw and raw not in seen:
                seen.add(raw)
                keys.append(SecretStr(raw))
        return keys

    @property
    def configured(self) -> bool:
        return bool(self.all_keys()) and bool(self.base_url)

    def models_for(self, alias: str) -> list[str]:
        return list(self.quality_models if alias == "quality" else self.fast_models)


class GroqSettings(ProviderSettings):
    model_config = SettingsConfigDict(env_prefix="GROQ_", extra="ignore", frozen=True)

    base_url: str = "https://api.groq.com/openai/v1"
    fast_models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["llama-3.1-8b-instant", "gemma2-9b-it"]
    )
    quality_models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["llama-3.3-70b-versatile", "llama3-70b-8192"]
    )
    timeout_s: float = Field(default=5.0, gt=0, le=300)
    # Groq free tier: 30 requests per minute per key.
    rpm_per_key: int | None = Field(default=30, ge=1)
    nested_model_ids: ClassVar[bool] = True  # e.g. openai/gpt-oss-20b, sent in the body


class GeminiSettings(ProviderSettings):
    model_config = SettingsConfigDict(env_prefix="GEMINI_", extra="ignore", frozen=True)

    base_url: str = "https://generativelanguage.googleapis.com"
    fast_models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["gemini-1.5-flash"]
    )
    quality_models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["gemini-1.5-flash"]
    )
    timeout_s: float = Field(default=10.0, gt=0, le=300)


class AzureSettings(ProviderSettings):
    """Azure names a deployment, not a model; `model` is what the deployment runs (for prices)."""

    model_config = SettingsConfigDict(env_prefix="AZURE_OPENAI_", extra="ignore", frozen=True)

    endpoint: str = ""
    deployment: str = ""
    api_version: str = "2024-10-21"
    model: str = "gpt-4o-mini"

    @property
    def configured(self) -> bool:
        return bool(self.all_keys()) and bool(self.endpoint) and bool(self.deployment)

    def models_for(self, alias: str) -> list[str]:
        return [self.deployment] if self.deployment else []

    @field_validator("deployment", mode="after")
    @classmethod
    def _deployment_name(cls, value: str) -> str:
        """The deployment is a segment of every Azure URL: a strict name, checked at start."""
        return (
            check_model_id(value, nested=False, setting="AZURE_OPENAI_DEPLOYMENT")
            if value
            else value
        )


class OpenAISettings(ProviderSettings):
    model_config = SettingsConfigDict(env_prefix="OPENAI_", extra="ignore", frozen=True)

    base_url: str = "https://api.openai.com/v1"
    fast_models: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["gpt-4o-mini"])
    quality_models: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["gpt-4o"])
    # OpenAI-compatible servers (a repointed OPENAI_BASE_URL) name models org/model; the id
    # travels in the JSON body, never in the path.
    nested_model_ids: ClassVar[bool] = True


class LiteratureSettings(BaseSettings):
    """Full-text detection: upstream URLs, the outbound-request guard, limits."""

    model_config = SettingsConfigDict(
        env_prefix="LITERATURE_", extra="ignore", frozen=True, populate_by_name=True
    )

    # Unpaywall asks every caller for a contact e-mail (env UNPAYWALL_EMAIL); without one,
    # tier 4 is skipped rather than sending anonymous requests it would answer with 422.
    unpaywall_email: str = Field(default="", validation_alias="UNPAYWALL_EMAIL")

    # --- upstreams -------------------------------------------------------------------------
    unpaywall_base_url: str = "https://api.unpaywall.org/v2"
    doi_resolver_url: str = "https://doi.org"
    pmc_article_base_url: str = "https://pmc.ncbi.nlm.nih.gov/articles"
    # NCBI's ID converter turns a PMID into a PMCID when the paper has no PMCID.
    pmc_idconv_url: str = "https://www.ncbi.nlm.nih.gov/pmc/utils/idconv/v1.0/"

    # --- outbound guard (app.modules.literature.safety / fetcher) --------------------------
    # Hostname -> IP address, used instead of DNS (JSON in the environment). The sandbox maps
    # its publisher hostnames to 127.0.0.1 this way, so tests run the production guard.
    host_overrides: dict[str, str] = Field(default_factory=dict)
    # Hosts that may resolve to private or loopback addresses (exact names). Nothing else may.
    trusted_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Egress allowlist: when not empty, only these hosts (and their subdomains) are fetched;
    # everything else is refused before any DNS lookup.
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Redirect hops followed per request, each re-checked (browsers allow 20; publishers
    # rarely need more than 3: doi.org -> linkinghub -> article).
    max_redirects: int = Field(default=5, ge=0, le=20)
    # Body caps. HTML landing pages are rarely above 2 MB. PDFs are only read whole for tier
    # 7's sample (held in memory, one per busy worker): articles are 0.5-5 MB, above 15 MB it
    # is a book or a scan.
    max_html_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    max_pdf_bytes: int = Field(default=15 * 1024 * 1024, ge=1024)
    max_json_bytes: int = Field(default=1024 * 1024, ge=1024)
    # "Verified by a bounded request": this many bytes are enough to see a PDF's magic number.
    probe_bytes: int = Field(default=64 * 1024, ge=1024)
    connect_timeout_s: float = Field(default=5.0, gt=0, le=60)
    max_connections: int = Field(default=100, ge=1, le=10_000)
    user_agent: str = "LiteratureAIGateway/0.1 (full-text detection)"

    # --- the waterfall -----------------------------------------------------------------------
    # Stored full text shorter than this is an abstract, not a paper (a short article body
    # is about 10 000 characters; an abstract about 1 500).
    database_min_chars: int = Field(default=5000, ge=1)
    # Per-tier timeouts; a request's `tier_timeout_s` can only lower them.
    direct_timeout_s: float = Field(default=10.0, gt=0, le=300)
    pmc_timeout_s: float = Field(default=10.0, gt=0, le=300)
    unpaywall_timeout_s: float = Field(default=10.0, gt=0, le=300)
    publisher_timeout_s: float = Field(default=15.0, gt=0, le=300)
    secondary_timeout_s: float = Field(default=20.0, gt=0, le=300)
    ai_timeout_s: float = Field(default=30.0, gt=0, le=300)
    # One paper's whole waterfall.
    detect_deadline_s: float = Field(default=60.0, gt=0, le=600)
    # Links tier 6 follows per paper, and how deep (a repository landing page -> its PDF).
    max_secondary_links: int = Field(default=6, ge=1, le=50)
    max_secondary_depth: int = Field(default=2, ge=1, le=3)
    # Tier 7: characters of extracted text sent to the model (about 3 000 tokens), PDF pages
    # read, and the verdict confidence needed to call the paper AI-verified.
    ai_sample_chars: int = Field(default=12_000, ge=500, le=100_000)
    ai_pdf_pages: int = Field(default=8, ge=1, le=100)
    ai_min_confidence: float = Field(default=0.7, ge=0, le=1)

    # --- batches -------------------------------------------------------------------------------
    batch_max_size: int = Field(default=500, ge=1, le=10_000)
    # Request bodies: detect and verify carry at most one paper's text (5 M characters); a
    # batch carries references. Bigger bodies are refused (413) before they are read.
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    batch_max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    # Papers worked on at once per batch; each uses at most one connection at a time.
    batch_concurrency: int = Field(default=16, ge=1, le=1000)
    batch_deadline_s: float = Field(default=300.0, gt=0, le=3600)
    # `POST /v1/fulltext/verify` content size.
    verify_max_chars: int = Field(default=5_000_000, ge=1000)

    # --- result cache ----------------------------------------------------------------------------
    cache_ttl_s: float = Field(default=6 * 3600.0, ge=0)  # availability changes slowly
    cache_max_entries: int = Field(default=50_000, ge=0)

    # --- resilience per upstream host ---------------------------------------------------------
    # Consecutive failures (5xx, timeouts, connection errors) that open a host's breaker.
    breaker_fail_max: int = Field(default=5, ge=1)
    breaker_reset_timeout_s: float = Field(default=60.0, gt=0)
    # Requests per minute per publisher (keyed by publisher, or by host for unknown sites);
    # publishers block crawlers well above one request a second.
    publisher_rpm: int = Field(default=60, ge=1)
    # Per-publisher overrides, JSON: {"elsevier": 20, "arxiv": 15} (arXiv asks for 1 per 3 s).
    publisher_rpm_overrides: dict[str, int] = Field(default_factory=dict)
    # Unpaywall: 100 000 calls a day is about 70 a minute.
    unpaywall_rpm: int = Field(default=70, ge=1)
    # A request waits this long at most for a rate-limit slot, then gives up on that host.
    rate_limit_max_wait_s: float = Field(default=2.0, ge=0)
    # Host breakers and limiters kept (least recently used dropped first).
    max_tracked_hosts: int = Field(default=2000, ge=10)

    _split = field_validator("trusted_hosts", "allowed_hosts", mode="before")(split_csv)

    @field_validator("trusted_hosts", "allowed_hosts", mode="after")
    @classmethod
    def _lower_hosts(cls, value: list[str]) -> list[str]:
        return [host.strip().lower().rstrip(".") for host in value if host.strip()]

    @field_validator("host_overrides", mode="after")
    @classmethod
    def _valid_overrides(cls, value: dict[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for host, address in value.items():
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ValueError(
                    f"LITERATURE_HOST_OVERRIDES: {host!r} must map to an IP address"
                ) from None
            out[host.strip().lower().rstrip(".")] = address
        return out


class ModelPrice(BaseModel):
    """USD per one million tokens."""

    model_config = {"frozen": True}

    input: float = Field(ge=0)
    output: float = Field(ge=0)


DEFAULT_PRICES: dict[str, ModelPrice] = {
    "gpt-4o-mini": ModelPrice(input=0.15, output=0.60),
    "gpt-4o": ModelPrice(input=2.50, output=10.00),
    "gpt-3.5-turbo": ModelPrice(input=0.50, output=1.50),
    "gpt-4-turbo": ModelPrice(input=10.00, output=30.00),
    "gemini-1.5-flash": ModelPrice(input=0.075, output=0.30),
}


class Settings(SecretFileSettings):
    """The whole service's configuration; built once at start and passed down through DI.
    Every secret also accepts `<NAME>_FILE` (app.core.secret_files)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: str = "INFO"
    # `serve`'s log lines: one JSON object a line (uvicorn's own lines too), or key=value text.
    log_format: Literal["json", "text"] = "json"
    # OpenTelemetry's standard variables: traces are exported over OTLP/HTTP only when one is
    # set (the traces one as is, the other + "/v1/traces"); unset, no tracer is built at all.
    otel_exporter_otlp_endpoint: str | None = None
    otel_exporter_otlp_traces_endpoint: str | None = None

    # --- the HTTP server's bounds on slow and idle clients (app.core.server) --------------------
    # From the connection (or a later request's first byte) to the end of its headers; bytes
    # trickling in do not extend it (slowloris). Real clients send headers in one packet.
    http_header_timeout_s: float = Field(default=10.0, gt=0, le=300)
    # From the end of the headers to the end of the body: 8 MiB (the largest body limit) at
    # about 1.2 Mbit/s.
    http_body_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    # An idle kept-alive connection is closed after this (uvicorn's default).
    http_keepalive_timeout_s: float = Field(default=5.0, gt=0, le=300)
    # Open client connections at most; lowered at start to what RLIMIT_NOFILE leaves after the
    # upstream pools, the database and the listen backlog. At the cap a new connection evicts
    # the one waiting longest without a request in flight.
    http_max_connections: int = Field(default=4096, ge=8, le=1_000_000)
    # Requests in flight at most (None: three quarters of the connection cap); past it a
    # request is answered 503 at once.
    http_limit_concurrency: int | None = Field(default=None, ge=1)

    # Callers: GATEWAY_API_KEYS=name1:key1,name2:key2. Without keys the service refuses to
    # start unless GATEWAY_AUTH=disabled.
    gateway_api_keys: Annotated[dict[str, SecretStr], NoDecode] = Field(default_factory=dict)
    gateway_auth: Literal["enabled", "disabled"] = "enabled"
    # Requests per minute per caller (None: no limit).
    gateway_caller_rpm: int | None = Field(default=600, ge=1)
    # Callers (names from GATEWAY_API_KEYS) who may see every caller's budget on /v1/budgets;
    # everyone else sees the shared budgets and their own.
    gateway_admin_callers: Annotated[list[str], NoDecode] = Field(default_factory=list)

    ai_provider_priority: Annotated[list[ProviderName], NoDecode] = Field(
        default_factory=lambda: [
            ProviderName.GROQ,
            ProviderName.GEMINI,
            ProviderName.AZURE,
            ProviderName.OPENAI,
        ]
    )
    ai_routing_strategy: RoutingStrategy = RoutingStrategy.PRIORITY
    ai_default_model: str = "fast"
    # Whole-request deadline across every attempt and fallback.
    ai_request_deadline_s: float = Field(default=30.0, gt=0, le=600)
    # Bounds on caller input, checked before any upstream call.
    ai_max_prompt_chars: int = Field(default=200_000, ge=1)
    ai_max_tokens_limit: int = Field(default=8192, ge=1)
    # Request bodies of the completion routes: 200 000 prompt characters fit in well under
    # 2 MiB even JSON-escaped; more is refused (413) before it is read or parsed.
    ai_max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    # Messages per request: past this a body is refused (413) before any message is parsed.
    ai_max_messages: int = Field(default=2048, ge=1, le=100_000)
    # Adaptive timeout: p95 of recent successes x multiplier, clamped to [min, max]; the
    # provider's timeout_s until min_samples successes are in the window.
    ai_timeout_multiplier: float = Field(default=1.5, ge=1.0)
    ai_timeout_min_s: float = Field(default=1.0, gt=0)
    # Below the 30 s request deadline, so a slow provider always leaves time to fall back.
    ai_timeout_max_s: float = Field(default=20.0, gt=0)
    ai_timeout_min_samples: int = Field(default=20, ge=1)
    # The rolling window behind the adaptive timeout, routing by latency and passive health.
    ai_latency_window_samples: int = Field(default=200, ge=1)
    ai_latency_window_s: float = Field(default=300.0, gt=0)
    # Retries of one provider (only when no other provider is available), with full jitter.
    ai_retry_max: int = Field(default=2, ge=0, le=10)
    ai_retry_base_s: float = Field(default=0.2, ge=0)
    ai_retry_cap_s: float = Field(default=5.0, ge=0)
    # How long a call may wait for a free connection of the gateway's own pool to a provider
    # (<P>_MAX_CONNECTIONS all busy) before it is answered 503 or fails over. This wait is
    # ours, not the provider's: it is bounded apart from the provider's timeout and never
    # counts against its breaker.
    ai_pool_wait_s: float = Field(default=1.0, gt=0, le=60)
    # Retry budget: retries stay under this share of requests in the window (Envoy: 20 %).
    ai_retry_budget_ratio: float = Field(default=0.2, ge=0, le=1)
    ai_retry_budget_min: int = Field(default=3, ge=0)
    ai_retry_budget_window_s: float = Field(default=10.0, gt=0)
    # Health: a free probe per provider (model or deployment list) every interval.
    ai_health_probe_interval_s: float = Field(default=30.0, gt=0)
    ai_health_probe_timeout_s: float = Field(default=5.0, gt=0)
    ai_health_degraded_error_rate: float = Field(default=0.1, ge=0, le=1)
    ai_health_unhealthy_error_rate: float = Field(default=0.5, ge=0, le=1)
    # Daily budgets in USD (the day in BUDGET_TIMEZONE). A paid provider with budget 0 is
    # blocked; a model priced 0 is never blocked. None: no limit.
    daily_budget_usd_groq: float | None = Field(default=0.0, ge=0)
    daily_budget_usd_gemini: float | None = Field(default=10.0, ge=0)
    daily_budget_usd_azure: float | None = Field(default=50.0, ge=0)
    daily_budget_usd_openai: float | None = Field(default=100.0, ge=0)
    daily_budget_usd_total: float | None = Field(default=None, ge=0)
    daily_budget_usd_per_caller: float | None = Field(default=None, ge=0)
    # With REDIS_URL: the part of what is left of each budget the replicas keep in reserve
    # for a Redis outage (each its share), the only money a replica spends while cut off.
    budget_outage_share: float = Field(default=0.1, ge=0, le=1)
    # Monthly caps in USD beside the daily ones (the month in BUDGET_TIMEZONE), with the same
    # reservation and alert rules. None: no monthly cap.
    monthly_budget_usd_groq: float | None = Field(default=None, ge=0)
    monthly_budget_usd_gemini: float | None = Field(default=None, ge=0)
    monthly_budget_usd_azure: float | None = Field(default=None, ge=0)
    monthly_budget_usd_openai: float | None = Field(default=None, ge=0)
    monthly_budget_usd_total: float | None = Field(default=None, ge=0)
    monthly_budget_usd_per_caller: float | None = Field(default=None, ge=0)
    budget_timezone: str = "UTC"
    # Optional: alerts at 80/90/100 % are also POSTed here (bounded timeout, never blocking).
    budget_alert_webhook_url: str | None = None
    budget_alert_webhook_timeout_s: float = Field(default=5.0, gt=0)
    # Usage ledger: SQLite by default, PostgreSQL by URL (postgresql+asyncpg://...).
    database_url: str = "sqlite+aiosqlite:///./data/gateway.db"
    # SQLite only: how long a write waits for a lock before it fails (and is retried).
    database_busy_timeout_s: float = Field(default=5.0, gt=0)
    # Shared state for several processes (workers, replicas): redis://, rediss:// or unix://.
    # Unset: every guard keeps its state in this process (one process only).
    redis_url: str | None = None
    # Every Redis operation's timeout; a slow Redis must not make a slow gateway.
    redis_timeout_s: float = Field(default=0.05, gt=0, le=5)
    # Namespace of every key, so several gateways (or test runs) can share a server.
    redis_key_prefix: str = Field(default="gw:", min_length=1, max_length=64)
    # Replicas announce themselves this often; one is gone after three missed beats.
    redis_heartbeat_s: float = Field(default=1.0, gt=0, le=60)
    # Worker processes of `python -m app serve` on this machine (`--workers` overrides). More
    # than one needs REDIS_URL: budgets, limits and breakers must be shared to stay exact.
    workers: int = Field(default=1, ge=1, le=64)
    # With several workers, worker i also serves its own metrics on 127.0.0.1, port
    # METRICS_PORT_BASE + i; /metrics on the service port merges them all (README, Metrics).
    metrics_port_base: int = Field(default=9464, ge=1024, le=65535)
    # Set by `serve` in each worker process it starts (0 .. WORKERS-1); never set it yourself.
    worker_index: int | None = Field(default=None, ge=0, le=63)
    # Rows are written in batches off the request path; the buffer is bounded.
    ledger_batch_size: int = Field(default=200, ge=1)
    ledger_flush_interval_s: float = Field(default=0.5, gt=0)
    ledger_buffer_max_rows: int = Field(default=100_000, ge=1)
    # Response cache: exact match, in memory, bounded by entries and age.
    ai_cache_enabled: bool = True
    ai_cache_ttl_s: float = Field(default=3600.0, gt=0)
    ai_cache_max_entries: int = Field(default=10_000, ge=1)
    # `caller`: a caller only ever gets answers (and shares in-flight calls) it asked for
    # itself; `shared`: identical requests of different callers share one answer.
    ai_cache_scope: Literal["caller", "shared"] = "caller"
    # Price file (JSON or YAML, {"model": {"input": x, "output": y}} in USD per 1M tokens),
    # applied over the defaults and AI_PRICES.
    ai_pricing_file: str | None = None
    # Price overrides, JSON: {"model": {"input": 0.15, "output": 0.6}} (USD per 1M tokens).
    ai_prices: dict[str, ModelPrice] = Field(default_factory=dict)
    # A paid provider's model missing from the price table is refused (404 before any upstream
    # call) unless this is true; then it is reserved and booked at that provider's most
    # expensive known price and its ledger rows are flagged price_estimated.
    ai_allow_unpriced_models: bool = False
    # Models served free whatever their name (Groq's free tier).
    ai_free_providers: Annotated[list[ProviderName], NoDecode] = Field(
        default_factory=lambda: [ProviderName.GROQ]
    )

    groq: GroqSettings = Field(default_factory=GroqSettings)
    gemini: GeminiSettings = Field(default_factory=GeminiSettings)
    azure: AzureSettings = Field(default_factory=AzureSettings)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    literature: LiteratureSettings = Field(default_factory=LiteratureSettings)

    _split = field_validator(
        "ai_provider_priority", "ai_free_providers", "gateway_admin_callers", mode="before"
    )(split_csv)

    @field_validator("gateway_api_keys", mode="before")
    @classmethod
    def _caller_keys(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        keys: dict[str, str] = {}
        for pair in filter(None, (part.strip() for part in value.split(","))):
            name, sep, key = pair.partition(":")
            if not sep or not name.strip() or not key.strip():
                raise ValueError("GATEWAY_API_KEYS must be name:key pairs separated by commas")
            if name.strip() in keys:
                raise ValueError(f"GATEWAY_API_KEYS names caller {name.strip()!r} twice")
            keys[name.strip()] = key.strip()
        return keys

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @model_validator(mode="after")
    def _priority_complete(self) -> Settings:
        if len(set(self.ai_provider_priority)) != len(self.ai_provider_priority):
            raise ValueError("AI_PROVIDER_PRIORITY lists a provider twice")
        if self.ai_timeout_min_s > self.ai_timeout_max_s:
            raise ValueError("AI_TIMEOUT_MIN_S must not exceed AI_TIMEOUT_MAX_S")
        try:
            ZoneInfo(self.budget_timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"BUDGET_TIMEZONE {self.budget_timezone!r} is not a time zone"
            ) from exc
        return self

    @model_validator(mode="after")
    def _admins_known(self) -> Settings:
        unknown = [name for name in self.gateway_admin_callers if name not in self.gateway_api_keys]
        if unknown:
            raise ValueError(
                "GATEWAY_ADMIN_CALLERS names callers that GATEWAY_API_KEYS does not define: "
                + ", ".join(repr(name) for name in unknown)
            )
        return self

    def daily_budget(self, name: ProviderName) -> float | None:
        return {
            ProviderName.GROQ: self.daily_budget_usd_groq,
            ProviderName.GEMINI: self.daily_budget_usd_gemini,
            ProviderName.AZURE: self.daily_budget_usd_azure,
            ProviderName.OPENAI: self.daily_budget_usd_openai,
        }[name]

    def monthly_budget(self, name: ProviderName) -> float | None:
        return {
            ProviderName.GROQ: self.monthly_budget_usd_groq,
            ProviderName.GEMINI: self.monthly_budget_usd_gemini,
            ProviderName.AZURE: self.monthly_budget_usd_azure,
            ProviderName.OPENAI: self.monthly_budget_usd_openai,
        }[name]

    def provider(self, name: ProviderName) -> ProviderSettings:
        return {
            ProviderName.GROQ: self.groq,
            ProviderName.GEMINI: self.gemini,
            ProviderName.AZURE: self.azure,
            ProviderName.OPENAI: self.openai,
        }[name]

    def prices(self) -> dict[str, ModelPrice]:
        """Defaults, then AI_PRICES, then the AI_PRICING_FILE (read once, at start)."""
        from_file = load_price_file(Path(self.ai_pricing_file)) if self.ai_pricing_file else {}
        return DEFAULT_PRICES | self.ai_prices | from_file

    def masked(self) -> dict[str, Any]:
        """The effective configuration with every secret replaced by a short fingerprint, and
        every URL's embedded credentials (password, token parameters) masked."""
        data: dict[str, Any] = _mask_urls(
            self.model_dump(
                mode="json",
                exclude={"groq", "gemini", "azure", "openai", "gateway_api_keys"},
            )
        )
        if self.budget_alert_webhook_url:  # chat webhooks carry their token in the path
            data["budget_alert_webhook_url"] = mask_url(
                self.budget_alert_webhook_url, hide_path=True
            )
        data["gateway_callers"] = {
            name: mask_secret(key) for name, key in self.gateway_api_keys.items()
        }
        providers: dict[str, Any] = {}
        for name in ProviderName:
            section = self.provider(name)
            dumped = _mask_urls(section.model_dump(mode="json", exclude={"api_key", "api_keys"}))
            dumped["keys"] = [mask_secret(key) for key in section.all_keys()]
            dumped["configured"] = section.configured
            providers[name.value] = dumped
        data["providers"] = providers
        return data


def load_price_file(path: Path) -> dict[str, ModelPrice]:
    """A JSON or YAML mapping of model name to {input, output} USD per 1M tokens."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"AI_PRICING_FILE {str(path)!r} cannot be read: {exc.strerror}") from exc
    data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    if isinstance(data, dict) and isinstance(data.get("models"), dict):
        data = data["models"]
    if not isinstance(data, dict):
        raise ValueError("AI_PRICING_FILE must map model names to {input, output}")
    return _PRICE_MAP.validate_python(data)


_PRICE_MAP = TypeAdapter(dict[str, ModelPrice])


def _mask_urls(data: dict[str, Any]) -> dict[str, Any]:
    """Every string that holds a URL, at any depth, through `mask_url`."""

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return mask_url(value) if "://" in value else value
        if isinstance(value, dict):
            return {key: walk(item) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item) for item in value]
        return value

    masked: dict[str, Any] = walk(data)
    return masked


def mask_secret(secret: SecretStr) -> str:
    """Enough to tell two keys apart in a dump, never enough to use one."""
    raw = secret.get_secret_value()
    if len(raw) <= 8:
        return "****"
    return f"{raw[:3]}…{raw[-2:]}"
