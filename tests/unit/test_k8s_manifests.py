"""infra/k8s (kustomize base and example overlay) validated offline: every manifest against
the Kubernetes JSON schemas (`kubernetes-validate`, strict: an unknown field fails), the
Prometheus Operator resources structurally, and everything that must agree with the real
service: probe paths against the routes the app serves, ports, variable names against the
settings, the shutdown budget against the server's graceful shutdown, the PrometheusRule
against infra/prometheus/rules.yml."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from app.core.settings import Settings
from tests.support.deploy import (
    INFRA,
    SERVICE_PORT,
    graceful_shutdown_s,
    known_env_names,
    served_routes,
)
from tests.unit.test_dockerfile import DOCKERFILE, _exec_form, image_env, parse

K8S = INFRA / "k8s"
BASE = K8S / "base"
OVERLAY = K8S / "overlays" / "example"
RULES = INFRA / "prometheus" / "rules.yml"
# The oldest Kubernetes we support (autoscaling/v2 and policy/v1 are GA there) and the newest
# the schemas know.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
CRD_GROUP = "monitoring.coreos.com/v1"

Doc = dict[str, Any]


def _load_all(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def base_docs() -> list[Doc]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    docs: list[Doc] = []
    for resource in kustomization["resources"]:
        docs.extend(_load_all(BASE / resource))
    return docs


def _find(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


# --- rendering the overlay -----------------------------------------------------------------------


def _merge(base: Any, patch: Any) -> Any:
    """A strategic merge as kustomize does it for the shapes used here: maps merge, lists of
    named maps (containers) merge by name, anything else is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in base + patch)
    ):
        merged = [copy.deepcopy(i) for i in base]
        for item in patch:
            for index, existing in enumerate(merged):
                if existing["name"] == item["name"]:
                    merged[index] = _merge(existing, item)
                    break
            else:
                merged.append(copy.deepcopy(item))
        return merged
    return copy.deepcopy(patch)


def render_in_python() -> list[Doc]:
    """The overlay without a kustomize binary: the base, the patches, the image, the merged
    ConfigMap literals and the namespace (what this overlay uses, nothing more)."""
    overlay = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    assert overlay["resources"] == ["../../base"]
    docs = base_docs()
    for entry in overlay.get("patches", []):
        patch = yaml.safe_load((OVERLAY / entry["path"]).read_text())
        target = _find(docs, patch["kind"], patch["metadata"]["name"])
        docs[docs.index(target)] = _merge(target, patch)
    for generator in overlay.get("configMapGenerator", []):
        assert generator["behavior"] == "merge"
        target = _find(docs, "ConfigMap", generator["name"])
        for literal in generator.get("literals", []):
            key, _, value = literal.partition("=")
            target["data"][key] = value
    for image in overlay.get("images", []):
        for doc in docs:
            for container in _containers(doc):
                if container["image"].partition(":")[0] == image["name"]:
                    container["image"] = f"{image['newName']}:{image['newTag']}"
    for doc in docs:
        doc["metadata"]["namespace"] = overlay["namespace"]
    return docs


def _containers(doc: Doc) -> list[Doc]:
    if doc["kind"] != "Deployment":
        return []
    containers: list[Doc] = doc["spec"]["template"]["spec"]["containers"]
    return containers


def _kustomize() -> list[str] | None:
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    return None


def rendered_overlay() -> list[Doc]:
    command = _kustomize()
    if command is None:
        return render_in_python()
    result = subprocess.run(
        [*command, str(OVERLAY)], capture_output=True, text=True, check=True, timeout=60
    )
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


RENDERINGS = {"base": base_docs, "overlay": rendered_overlay, "overlay-python": render_in_python}


@pytest.fixture(params=sorted(RENDERINGS), scope="module")
def docs(request: pytest.FixtureRequest) -> list[Doc]:
    return RENDERINGS[request.param]()


# --- schemas -------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_matches_the_kubernetes_schema(docs: list[Doc], version: str) -> None:
    kinds = {d["kind"] for d in docs}
    assert kinds >= {
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ServiceMonitor",
        "PrometheusRule",
    }
    for doc in docs:
        if doc["apiVersion"] == CRD_GROUP:
            continue  # not in the Kubernetes schemas: checked below
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_schema_check_can_fail() -> None:
    deployment = copy.deepcopy(_find(base_docs(), "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pth"] = "x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_the_overlay_renders_the_same_with_kustomize_and_in_python() -> None:
    if _kustomize() is None:
        pytest.skip("no kubectl or kustomize here: the overlay is rendered in Python only")
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in render_in_python()}
    for doc in rendered_overlay():
        name = doc["metadata"]["name"]
        if doc["kind"] == "ConfigMap":
            key = ("ConfigMap", name) if ("ConfigMap", name) in by_kind else None
            key = key or ("ConfigMap", name.rsplit("-", 1)[0])  # a generator's hash suffix
            assert doc["data"] == by_kind[key]["data"]
        elif doc["kind"] == "Deployment":
            ours = by_kind[("Deployment", name)]
            assert doc["spec"]["replicas"] == ours["spec"]["replicas"]
            assert _containers(doc)[0]["resources"] == _containers(ours)[0]["resources"]
            assert _containers(doc)[0]["image"] == _containers(ours)[0]["image"]


# --- the Deployment against the service ----------------------------------------------------------


def _container(docs: list[Doc]) -> Doc:
    (container,) = _containers(_find(docs, "Deployment"))
    return container


def _port_number(container: Doc, port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    assert isinstance(number, int)
    return number


def test_probes_hit_the_real_health_routes_on_the_service_port(docs: list[Doc]) -> None:
    container = _container(docs)
    expected = {
        "startupProbe": "/health/live",
        "livenessProbe": "/health/live",
        "readinessProbe": "/health/ready",
    }
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert path in served_routes()
        assert _port_number(container, get["port"]) == SERVICE_PORT
    assert container["args"] == _exec_form(parse(DOCKERFILE.read_text())[-1].all("CMD")[-1].args)
    assert f"--port {SERVICE_PORT}" in " ".join(container["args"])


def test_shutdown_outlasts_the_prestop_delay_and_the_graceful_shutdown(docs: list[Doc]) -> None:
    deployment = _find(docs, "Deployment")
    container = _container(docs)
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    delay = float(command[1])
    assert delay >= 3, "too short for the endpoints to leave the load balancers"
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > delay + graceful_shutdown_s()
    # The start-up probe allows the migrations and the budget rebuild their time.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30


def test_the_pod_runs_unprivileged_on_a_read_only_root(docs: list[Doc]) -> None:
    spec = _find(docs, "Deployment")["spec"]["template"]["spec"]
    container = _container(docs)
    pod_security = spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] != 0
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    for writable in ("/data", "/tmp"):
        assert "emptyDir" in volumes[mounts[writable]], f"{writable} is not an emptyDir"
    resources = container["resources"]
    assert resources["requests"]["cpu"]
    assert resources["requests"]["memory"]
    assert resources["limits"]["memory"]


def _environment(docs: list[Doc], files: dict[str, Path] | None = None) -> dict[str, str]:
    """What the container's environment holds: the image's, the ConfigMap's, the Secret's."""
    container = _container(docs)
    env = dict(image_env())
    for source in container["envFrom"]:
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            config = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == name]
            env.update(config[0]["data"])
        else:
            env.update(_find(docs, "Secret", source["secretRef"]["name"])["stringData"])
    for item in container.get("env", []):
        env[item["name"]] = item["value"]
    return env


def test_every_variable_is_one_the_settings_read(docs: list[Doc]) -> None:
    env = _environment(docs)
    unknown = set(env) - known_env_names() - set(image_env())
    assert not unknown, f"variables the service does not read: {unknown}"
    twice = {name for name in env if f"{name}_FILE" in env}
    assert not twice, f"set both ways (refused at start): {twice}"


def test_key_files_are_mounted_from_the_provider_secret(docs: list[Doc]) -> None:
    container = _container(docs)
    spec = _find(docs, "Deployment")["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    env = _environment(docs)
    files = {name: path for name, path in env.items() if name.endswith("_FILE")}
    assert files
    for volume in spec["volumes"]:
        if "secret" not in volume:
            continue
        secret = _find(docs, "Secret", volume["secret"]["secretName"])
        for name, path in files.items():
            assert Path(path).parent == Path(mounts[volume["name"]]), name
            assert Path(path).name in secret["stringData"], f"{name}: no such key in the Secret"


def test_the_example_configuration_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, docs: list[Doc]
) -> None:
    """The ConfigMap and the example Secrets, the key files written where the pod mounts them
    (here under tmp_path): the settings build from them."""
    env = _environment(docs)
    provider_keys = _find(docs, "Secret", "gateway-provider-keys")["stringData"]
    for name in list(env):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        if name.endswith("_FILE"):
            path = tmp_path / Path(value).name
            path.write_text(provider_keys[Path(value).name])
            value = str(path)
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.redis_url is not None
    assert settings.database_url.startswith("postgresql+asyncpg://")
    assert len(settings.groq.all_keys()) == 2


def test_the_example_secrets_hold_placeholders_only() -> None:
    for doc in _load_all(BASE / "secret-example.yaml"):
        for key, value in doc["stringData"].items():
            assert "REPLACE-ME" in value, f"{doc['metadata']['name']}.{key} is not a placeholder"


def test_selectors_and_targets_agree(docs: list[Doc]) -> None:
    deployment = _find(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    service = _find(docs, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    container = _container(docs)
    assert _port_number(container, port["targetPort"]) == SERVICE_PORT
    pdb = _find(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    hpa = _find(docs, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    # A drain never takes the last replica; the HPA never goes below what the PDB keeps.
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["minAvailable"]
    assert deployment["spec"]["replicas"] >= hpa["spec"]["minReplicas"]


# --- Prometheus Operator resources (not in the Kubernetes schemas) -------------------------------


def test_the_service_monitor_scrapes_the_metrics_route_as_job_gateway(docs: list[Doc]) -> None:
    monitor = _find(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == CRD_GROUP
    service = _find(docs, "Service")
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] in served_routes()
    assert {"action": "replace", "targetLabel": "job", "replacement": "gateway"} in endpoint[
        "relabelings"
    ]
    # The scrape job the rules select on is the compose one's name too.
    prometheus = yaml.safe_load((INFRA / "prometheus" / "prometheus.yml").read_text())
    assert "gateway" in {job["job_name"] for job in prometheus["scrape_configs"]}


def test_the_prometheus_rule_carries_the_rules_file(docs: list[Doc]) -> None:
    rule = _find(docs, "PrometheusRule")
    assert rule["apiVersion"] == CRD_GROUP
    groups = rule["spec"]["groups"]
    assert groups, "no rule groups"
    for group in groups:
        assert group["name"]
        for item in group["rules"]:
            assert item["expr"]
            assert ("alert" in item) != ("record" in item)
            if "alert" in item:
                assert item["labels"]["severity"]
                assert item["annotations"]["runbook_url"]
    if not RULES.exists():
        pytest.skip("infra/prometheus/rules.yml does not exist yet")
    expected = yaml.safe_load(RULES.read_text())["groups"]
    assert groups == expected, "out of date: run `python -m infra.k8s.sync_rules`"


def test_the_kustomizations_name_files_that_exist() -> None:
    base = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    listed = {BASE / r for r in base["resources"]}
    assert all(p.is_file() for p in listed)
    assert listed == set(BASE.glob("*.yaml")) - {BASE / "kustomization.yaml"}
    overlay = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    for patch in overlay["patches"]:
        assert (OVERLAY / patch["path"]).is_file()
    assert (OVERLAY / overlay["resources"][0]).resolve() == BASE.resolve()
