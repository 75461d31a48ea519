"""The running build: the package version and the commit it was built from.

Read once per process (`build_info` is cached, and the app calls it at start): the version
from the installed package's metadata; the commit from GIT_COMMIT (set by the image build or
the deployment), else asked of git once if the code runs from a checkout, else "unknown".
Nothing here runs on a request path.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "literature-ai-gateway"
UNKNOWN = "unknown"
# A commit as git names it (short or full hex); anything else in GIT_COMMIT is not shown.
_COMMIT = re.compile(r"[0-9a-f]{7,40}")
_CHECKOUT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True)
class BuildInfo:
    version: str
    commit: str


def _version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _commit() -> str:
    configured = os.environ.get("GIT_COMMIT", "").strip().lower()
    if configured:
        return configured if _COMMIT.fullmatch(configured) else UNKNOWN
    git = shutil.which("git")
    if git is None or not (_CHECKOUT / ".git").exists():
        return UNKNOWN
    try:
        done = subprocess.run(  # noqa: S603 (a fixed command, no caller input)
            [git, "-C", str(_CHECKOUT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and _COMMIT.fullmatch(commit) else UNKNOWN


@functools.cache
def build_info() -> BuildInfo:
    """This process's version and commit, found on the first call and kept."""
    return BuildInfo(version=_version(), commit=_commit())
