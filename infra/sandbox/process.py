"""Start the sandbox as its own process on a free loopback port (tests, demo, benchmarks)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def spawn_sandbox(*, timeout_s: float = 30.0) -> tuple[subprocess.Popen[bytes], str]:
    """(process, base URL) once the sandbox listens; the caller stops the process."""
    folder = Path(tempfile.mkdtemp(prefix="sandbox-"))
    port_file = folder / "port"
    process = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
        [
            sys.executable,
            "-m",
            "infra.sandbox",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--port-file",
            str(port_file),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + timeout_s
    while not (port_file.exists() and port_file.read_text().strip()):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            shutil.rmtree(folder, ignore_errors=True)
            raise RuntimeError("the sandbox did not start")
        time.sleep(0.05)
    port = port_file.read_text().strip()
    shutil.rmtree(folder, ignore_errors=True)
    return process, f"http://127.0.0.1:{port}"
