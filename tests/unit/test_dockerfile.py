"""infra/Dockerfile checked by the rules we would run hadolint for (it has no package here):
non-root final stage, base images pinned, no secrets in layers, pip pinned by
constraints.txt, a HEALTHCHECK on a route the app really serves, a stop signal and a stop
grace above the server's own graceful shutdown. Each rule is a function run on the real file
and on a broken copy, so a rule that cannot fail would show."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

import pytest

from app.core.settings import Settings
from tests.support.deploy import (
    ROOT,
    SERVICE_PORT,
    graceful_shutdown_s,
    parse_duration_s,
    secret_env_names,
    served_routes,
)

DOCKERFILE = ROOT / "infra" / "Dockerfile"
SECRET_NAME = re.compile(r"(KEY|SECRET|TOKEN|PASSW|CREDENTIAL|AUTH)", re.IGNORECASE)
URL_WITH_PASSWORD = re.compile(r"://[^/@\s:]*:[^/@\s]+@")


@dataclass
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse(text: str) -> list[Stage]:
    """Stages of a Dockerfile: comments dropped, continuation lines joined."""
    logical: list[str] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = args.split()
            words = [w for w in words if not w.startswith("--platform")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].instructions.append(Instruction(keyword, args.strip()))
    return stages


def _env_pairs(instruction: Instruction) -> list[tuple[str, str]]:
    """ENV a=b c="d e" (or the legacy `ENV a b`); ARG name[=default]."""
    words = shlex.split(instruction.args)
    if instruction.keyword == "ENV" and len(words) >= 2 and "=" not in words[0]:
        return [(words[0], " ".join(words[1:]))]
    pairs = []
    for word in words:
        name, _, value = word.partition("=")
        pairs.append((name, value))
    return pairs


def _exec_form(args: str) -> list[str]:
    import json

    value = json.loads(args)
    assert isinstance(value, list), f"not the exec form: {args}"
    return [str(v) for v in value]


# --- the rules ----------------------------------------------------------------------------------


def problems(text: str) -> list[str]:
    """Every rule broken by this Dockerfile's text (empty: all kept)."""
    found: list[str] = []
    stages = parse(text)
    if len(stages) < 2:
        found.append("not multi-stage")
    names = {s.name for s in stages if s.name}
    for stage in stages:
        base = stage.base
        if base in names:
            continue
        if "@sha256:" not in base:
            tag = base.rpartition(":")[2] if ":" in base.rpartition("/")[2] else ""
            if not tag or tag == "latest" or not re.match(r"\d+\.\d+\.\d+", tag):
                found.append(f"base {base} is not pinned by version or digest")
        if "latest" in base:
            found.append(f"base {base} uses latest")
        if not re.match(r"(docker\.io/(library/)?)?python:3\.11\.\d+-slim-(bookworm|trixie)", base):
            found.append(f"base {base} is not a slim Debian Python 3.11")
    final = stages[-1] if stages else Stage("", None)
    users = final.all("USER")
    if not users:
        found.append("the final stage has no USER")
    elif users[-1].args.split(":")[0] in {"root", "0"}:
        found.append("the final stage runs as root")
    for stage in stages:
        for ins in stage.all("ENV") + stage.all("ARG"):
            for name, value in _env_pairs(ins):
                if value and SECRET_NAME.search(name):
                    found.append(f"{ins.keyword} {name} holds a value in a layer")
                if URL_WITH_PASSWORD.search(value):
                    found.append(f"{ins.keyword} {name} holds a URL with a password")
        for ins in stage.all("RUN"):
            for pip in re.finditer(r"pip install ([^&;|]*)", ins.args):
                if not re.search(r"(-c|--constraint)\s+\S*constraints\.txt", pip.group(1)):
                    found.append(f"pip install without -c constraints.txt: {pip.group(0)}")
            if "pip install" in ins.args and "--no-cache-dir" not in ins.args:
                found.append("pip install keeps its cache in the layer")
        for ins in stage.all("COPY") + stage.all("ADD"):
            if re.search(r"(^|\s)\.(\s|$)", ins.args) and "--from" not in ins.args:
                found.append(f"{ins.keyword} of the whole context: {ins.args}")
            if ins.keyword == "ADD":
                found.append("ADD (use COPY)")
    healthchecks = final.all("HEALTHCHECK")
    if not healthchecks:
        found.append("no HEALTHCHECK")
    else:
        check = healthchecks[-1].args
        match = re.search(r"https?://[^/'\"]+:(\d+)(/[^'\"\s]*)", check)
        if match is None:
            found.append("HEALTHCHECK calls no URL")
        else:
            port, path = int(match.group(1)), match.group(2)
            if path != "/health/live" or path not in served_routes():
                found.append(f"HEALTHCHECK path {path} is not the served /health/live")
            if port != SERVICE_PORT:
                found.append(f"HEALTHCHECK port {port} is not the service's {SERVICE_PORT}")
    stop = final.all("STOPSIGNAL")
    if not stop or stop[-1].args not in {"SIGTERM", "SIGINT", "15", "2"}:
        found.append("no STOPSIGNAL uvicorn drains on (SIGTERM or SIGINT)")
    grace = [
        value
        for ins in final.all("LABEL")
        for name, value in _env_pairs(Instruction("LABEL", ins.args))
        if name.endswith("stop-grace-period")
    ]
    if not grace:
        found.append("no stop-grace-period label")
    elif parse_duration_s(grace[-1]) <= graceful_shutdown_s():
        found.append(f"stop grace {grace[-1]} is not above the server's {graceful_shutdown_s()} s")
    cmd = final.all("CMD")
    expected = ["python", "-m", "app", "serve", "--host", "0.0.0.0", "--port", str(SERVICE_PORT)]
    if not cmd or _exec_form(cmd[-1].args) != expected:
        found.append("CMD is not the exec form of `python -m app serve` on 0.0.0.0:8000")
    for ins in final.all("ENV"):
        for name, value in _env_pairs(ins):
            if name in secret_env_names() and value:
                # A deployment's <NAME>_FILE and the image's NAME would both be set: refused.
                found.append(f"ENV {name} is a secret the deployment gives through {name}_FILE")
    workdir = final.all("WORKDIR")
    default_db = Settings.model_fields["database_url"].default
    relative = default_db.partition(":///")[2]
    links = [ins.args for ins in final.all("RUN") if re.search(r"ln -s /data \S+/data\b", ins.args)]
    if not (
        workdir
        and relative.startswith("./data/")
        and any(f"ln -s /data {workdir[-1].args}/data" in link for link in links)
    ):
        found.append("the default ledger (./data) is not the writable /data")
    return found


def test_the_dockerfile_keeps_every_rule() -> None:
    assert problems(DOCKERFILE.read_text()) == []


def test_the_dockerfile_is_python_3_11_like_the_project() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"].startswith(">=3.11,<3.12")
    for stage in parse(DOCKERFILE.read_text()):
        if stage.base.startswith("python"):
            assert stage.base.startswith("python:3.11.")


def _broken(old: str, new: str) -> str:
    text = DOCKERFILE.read_text()
    assert old in text, f"the Dockerfile changed: {old!r} not found"
    return text.replace(old, new)


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("USER 10001:10001", "USER root", "runs as root"),
        ("USER 10001:10001", "", "has no USER"),
        ("python:3.11.14-slim-bookworm AS runtime", "python:latest AS runtime", "not pinned"),
        ("python:3.11.14-slim-bookworm AS runtime", "python:3.11-slim AS runtime", "not pinned"),
        (
            "PYTHONUNBUFFERED=1 \\",
            "PYTHONUNBUFFERED=1 \\\n    GROQ_API_KEY=gsk-oops \\",
            "in a layer",
        ),
        (
            "PYTHONUNBUFFERED=1 \\",
            'PYTHONUNBUFFERED=1 \\\n    LEDGER="postgresql+asyncpg://gw:pw@db/gw" \\',
            "URL with a password",
        ),
        ("-c constraints.txt ", "", "without -c constraints.txt"),
        (
            "HOST=0.0.0.0 \\",
            'DATABASE_URL="sqlite+aiosqlite:////data/g.db" \\\n    HOST=0.0.0.0 \\',
            "through DATABASE_URL_FILE",
        ),
        ("/health/live", "/healthz", "not the served"),
        ("127.0.0.1:8000", "127.0.0.1:8080", "port 8080"),
        ("STOPSIGNAL SIGTERM", "STOPSIGNAL SIGKILL", "STOPSIGNAL"),
        ('stop-grace-period="40s"', 'stop-grace-period="10s"', "stop grace 10s"),
        ("COPY app ./app", "COPY . .", "whole context"),
        ("ln -s /data /srv/gateway/data", "true", "writable /data"),
    ],
)
def test_each_rule_catches_its_break(old: str, new: str, problem: str) -> None:
    assert any(problem in p for p in problems(_broken(old, new)))


def test_the_build_context_keeps_secrets_and_local_state_out() -> None:
    """.dockerignore denies everything, then lets in only what the Dockerfile copies."""
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for stage in parse(DOCKERFILE.read_text()):
        for ins in stage.all("COPY"):
            if "--from" in ins.args:
                continue
            copied.update(w.rstrip("/") for w in ins.args.split()[:-1])
    assert copied <= allowed
    assert not allowed & {".env", "data", ".venv", "tests", ".git"}


def image_env() -> dict[str, str]:
    """The variables the image's final stage sets (the compose and k8s checks add theirs)."""
    final = parse(DOCKERFILE.read_text())[-1]
    return {name: value for ins in final.all("ENV") for name, value in _env_pairs(ins)}
