"""The gateway as a real process on loopback (`python -m app serve`), for tests that need
signals, restarts or a second process's view."""

from __future__ import annotations

import functools
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.client import CALLER, CALLER_KEY
from tests.support.live import free_port
from tests.support.sandbox import AZURE_KEY, GEMINI_KEY, GROQ_KEYS, OPENAI_KEY

ROOT = Path(__file__).resolve().parents[2]


def sandbox_env(sandbox_url: str, database_url: str, **extra: str) -> dict[str, str]:
    """The environment an operator would set to point the service at the sandbox."""
    return {
        "GATEWAY_API_KEYS": f"{CALLER}:{CALLER_KEY}",
        "GROQ_API_KEYS": ",".join(GROQ_KEYS),
        "GROQ_BASE_URL": f"{sandbox_url}/groq/openai/v1",
        "GROQ_RPM_PER_KEY": "100000",
        "GEMINI_API_KEY": GEMINI_KEY,
        "GEMINI_BASE_URL": f"{sandbox_url}/gemini",
        "AZURE_OPENAI_API_KEY": AZURE_KEY,
        "AZURE_OPENAI_ENDPOINT": f"{sandbox_url}/azure",
        "AZURE_OPENAI_DEPLOYMENT": "gpt-4o-mini",
        "OPENAI_API_KEY": OPENAI_KEY,
        "OPENAI_BASE_URL": f"{sandbox_url}/openai/v1",
        "DATABASE_URL": database_url,
        "GATEWAY_CALLER_RPM": "1000000",
        "LOG_LEVEL": "WARNING",
        **extra,
    }


def limit_descriptors(limit: int) -> None:
    """Run in the child before exec: soft and hard limit both, so it cannot raise its own."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


@dataclass
class ServiceProcess:
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    # Where the service's stdout and stderr go when a test reads its logs (None: inherited).
    log_path: Path | None = None
    # RLIMIT_NOFILE (soft and hard) of the service process (None: inherited).
    descriptor_limit: int | None = None
    # More arguments of `serve` (e.g. --workers 2).
    serve_args: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30) -> ServiceProcess:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("GROQ_", "GEMINI_"))}
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "app", "serve"),
                *("--host", "127.0.0.1", "--port", str(self.port), *self.serve_args),
            ],
            cwd=ROOT,
            env={**base, **self.env, "PYTHONUNBUFFERED": "1"},
            stdout=None if self.log_path is None else self.log_path.open("ab"),
            stderr=None if self.log_path is None else subprocess.STDOUT,
            preexec_fn=None
            if self.descriptor_limit is None
            else functools.partial(limit_descriptors, self.descriptor_limit),
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.url}/health/live", timeout=1, trust_env=False).is_success:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("the service did not become live")

    def logs(self) -> str:
        """What the service has logged so far (needs `log_path`)."""
        assert self.log_path is not None, "start the service with a log_path to read its logs"
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 30) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
