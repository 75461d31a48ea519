"""infra/compose.yaml against the real service: every gateway variable is one the settings
read, every secret arrives through its `_FILE` variable from a file that exists and that the
settings accept, health checks call routes the apps serve, ports agree between compose, the
proxy, Prometheus and Grafana, and the stop grace is above the server's graceful shutdown."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.core.settings import Settings
from infra.sandbox.server import build_app
from tests.support.deploy import (
    INFRA,
    SERVICE_PORT,
    graceful_shutdown_s,
    known_env_names,
    parse_duration_s,
    secret_env_names,
    served_routes,
)
from tests.unit.test_dockerfile import image_env

COMPOSE = INFRA / "compose.yaml"
GATEWAYS = ("gateway-1", "gateway-2")
SANDBOX_PORT = 8900
_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's `${NAME:-default}` with an empty environment (what a fresh checkout runs)."""
    env = env or {}
    return _VAR.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)


def load() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def _services() -> dict[str, Any]:
    services: dict[str, Any] = load()["services"]
    return services


def _url_in(test: list[str] | str) -> tuple[int, str]:
    text = test if isinstance(test, str) else " ".join(test)
    match = re.search(r"http://127\.0\.0\.1:(\d+)(/[\w/.-]*)", text)
    assert match is not None, f"no URL in health check {text!r}"
    return int(match.group(1)), match.group(2)


def test_the_services_and_the_sandbox_profile() -> None:
    services = _services()
    assert set(services) == {
        *GATEWAYS,
        "proxy",
        "redis",
        "postgres",
        "prometheus",
        "alertmanager",
        "grafana",
        "sandbox",
    }
    assert services["sandbox"]["profiles"] == ["sandbox"]
    assert [name for name, s in services.items() if s.get("profiles")] == ["sandbox"]


def test_images_are_pinned_by_version() -> None:
    for name, service in _services().items():
        image = service.get("image", "")
        assert image, f"{name} has no image"
        tag = image.rpartition(":")[2]
        assert tag != "latest"
        if "build" not in service:
            assert re.match(r"v?\d+\.\d+(\.\d+)?(-|$)", tag), f"{name}: {image} is not pinned"


def test_gateway_variables_are_the_settings_own() -> None:
    known = known_env_names()
    for name in GATEWAYS:
        environment: dict[str, str] = _services()[name]["environment"]
        unknown = set(environment) - known
        assert not unknown, f"{name} sets variables the service does not read: {unknown}"
        assert environment["REDIS_URL"].startswith("redis://redis:")
        # A secret never sits in the compose file itself: it comes through its _FILE.
        inline = set(environment) & (secret_env_names() - {"REDIS_URL"})
        assert not inline, f"{name} sets secrets inline: {inline}"
        for variable in ("DATABASE_URL_FILE", "GATEWAY_API_KEYS_FILE", "GROQ_API_KEYS_FILE"):
            assert variable in environment
        # With the image's own variables, no secret is set twice (NAME and NAME_FILE).
        merged = set(image_env()) | set(environment)
        twice = {name for name in merged if f"{name}_FILE" in merged}
        assert not twice, f"{name}: set both ways (refused at start): {twice}"


def test_the_replicas_are_the_same_service_with_their_own_data() -> None:
    services = _services()
    one, two = (services[name] for name in GATEWAYS)
    assert {k: v for k, v in one.items() if k != "volumes"} == {
        k: v for k, v in two.items() if k != "volumes"
    }
    assert one["volumes"] != two["volumes"]
    for service in (one, two):
        assert service["read_only"] is True
        assert any(v.endswith(":/data") for v in service["volumes"])


def test_secret_files_exist_and_the_settings_accept_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The gateway's environment as compose gives it, with /run/secrets/<name> mapped to the
    repository's file: Settings() builds from it, so the demo starts."""
    data = load()
    secrets = {name: INFRA / interpolate(spec["file"]) for name, spec in data["secrets"].items()}
    for name, path in secrets.items():
        assert path.is_file(), f"secret {name}: {path} does not exist"
    environment: dict[str, str] = data["services"]["gateway-1"]["environment"]
    granted = set(data["services"]["gateway-1"]["secrets"])
    monkeypatch.delenv("GATEWAY_API_KEYS")  # the tests' own caller (conftest)
    monkeypatch.delenv("DATABASE_URL")
    for variable, value in environment.items():
        value = interpolate(str(value))
        if variable.endswith("_FILE"):
            secret = value.removeprefix("/run/secrets/")
            assert secret in granted, f"{variable} reads {secret}, not granted to the service"
            value = str(secrets[secret])
        monkeypatch.setenv(variable, value)
    settings = Settings()
    assert settings.database_url.startswith("postgresql+asyncpg://gateway:")
    assert settings.redis_url == "redis://redis:6379/0"
    assert set(settings.gateway_api_keys) == {"demo"}
    for provider in settings.ai_provider_priority:
        assert settings.provider(provider).configured, provider
    postgres = data["services"]["postgres"]
    password = secrets["postgres_password"].read_text().strip()
    assert f":{password}@postgres:5432/" in settings.database_url
    assert postgres["environment"]["POSTGRES_USER"] == "gateway"


def test_provider_urls_point_at_the_sandbox_port() -> None:
    environment = _services()["gateway-1"]["environment"]
    command = _services()["sandbox"]["command"]
    assert command[command.index("--port") + 1] == str(SANDBOX_PORT)
    for variable in (
        "GROQ_BASE_URL",
        "GEMINI_BASE_URL",
        "AZURE_OPENAI_ENDPOINT",
        "OPENAI_BASE_URL",
    ):
        assert interpolate(environment[variable]).startswith(f"http://sandbox:{SANDBOX_PORT}/")


def test_health_checks_call_routes_that_exist() -> None:
    services = _services()
    for name in (*GATEWAYS, "proxy"):
        port, path = _url_in(services[name]["healthcheck"]["test"])
        assert path in served_routes(), f"{name} checks {path}, not served"
        assert port == (SERVICE_PORT if name != "proxy" else 8080)
    sandbox_paths = {
        info.get("path") or info.get("formatter")
        for info in (r.resource.get_info() for r in build_app().router.routes() if r.resource)
    }
    port, path = _url_in(services["sandbox"]["healthcheck"]["test"])
    assert (port, path) == (SANDBOX_PORT, "/_health")
    assert path in sandbox_paths


def test_the_proxy_balances_both_replicas_on_the_service_port() -> None:
    conf = (INFRA / "nginx" / "nginx.conf").read_text()
    servers = re.findall(r"^\s*server\s+([\w-]+):(\d+)", conf, re.MULTILINE)
    assert sorted(servers) == [(name, str(SERVICE_PORT)) for name in GATEWAYS]
    listen = re.search(r"listen\s+(\d+);", conf)
    assert listen is not None
    assert _services()["proxy"]["ports"] == [f"8080:{listen.group(1)}"]


def test_stop_grace_is_above_the_servers_graceful_shutdown() -> None:
    for name in GATEWAYS:
        service = _services()[name]
        assert parse_duration_s(service["stop_grace_period"]) > graceful_shutdown_s()
        assert service["stop_signal"] == "SIGTERM"


def _mounts() -> list[tuple[str, Path, str]]:
    mounts = []
    for name, service in _services().items():
        for volume in service.get("volumes", []):
            source, _, target = volume.partition(":")
            if source.startswith("."):
                mounts.append((name, INFRA / source, target.removesuffix(":ro")))
    return mounts


def test_mounted_files_exist() -> None:
    mounts = _mounts()
    assert {name for name, _, _ in mounts} >= {"proxy", "prometheus", "alertmanager", "grafana"}
    for name, source, _ in mounts:
        assert source.exists(), f"{name} mounts {source}, which does not exist"


def test_prometheus_scrapes_both_replicas_and_loads_the_rules() -> None:
    config = yaml.safe_load((INFRA / "prometheus" / "prometheus.yml").read_text())
    mounted = {target: source for name, source, target in _mounts() if name == "prometheus"}
    base = mounted["/etc/prometheus"]
    for rule_file in config["rule_files"]:
        assert (base / Path(rule_file).relative_to("/etc/prometheus")).is_file()
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    gateway = jobs["gateway"]
    assert gateway["metrics_path"] in served_routes()
    targets = [t for c in gateway["static_configs"] for t in c["targets"]]
    assert sorted(targets) == [f"{name}:{SERVICE_PORT}" for name in GATEWAYS]
    alertmanagers = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanagers == ["alertmanager:9093"]
    assert _services()["alertmanager"]["ports"] == ["9093:9093"]
    manager = yaml.safe_load((INFRA / "prometheus" / "alertmanager.yml").read_text())
    receivers = {r["name"] for r in manager["receivers"]}
    assert manager["route"]["receiver"] in receivers


def test_grafana_provisions_the_prometheus_source_and_the_mounted_dashboards() -> None:
    mounted = {target: source for name, source, target in _mounts() if name == "grafana"}
    provisioning = mounted["/etc/grafana/provisioning"]
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())
    (source,) = sources["datasources"]
    assert source["url"] == "http://prometheus:9090"
    assert _services()["prometheus"]["ports"] == ["9090:9090"]
    boards = yaml.safe_load((provisioning / "dashboards" / "gateway.yaml").read_text())
    (provider,) = boards["providers"]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    assert "/var/lib/grafana/dashboards" in mounted


def _docker_compose() -> list[str] | None:
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        probe = subprocess.run([*command, "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return command
    return None


def test_docker_compose_config_accepts_it() -> None:
    command = _docker_compose()
    if command is None:
        pytest.skip("no docker compose here (the checks above run without it)")
    result = subprocess.run(
        [*command, "-f", str(COMPOSE), "--profile", "sandbox", "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
