"""The README's configuration tables and the code cannot drift apart.

Rules the tables follow (and this test reads):
- a configuration table is a Markdown table whose header is `| variable | default | meaning |`;
- its first column names variables in backticks: a full name (`AI_RETRY_MAX`); `_X` after a
  full name in the same cell, that name with its last `_` part replaced (`DAILY_BUDGET_USD_GROQ`,
  `_GEMINI`); `<P>_X`, the same setting of every provider (`GROQ_X`, `GEMINI_X`,
  `AZURE_OPENAI_X`, `OPENAI_X`); `<NAME>_FILE`, documented once, the file variant of every
  secret; anything else in backticks there (`serve --workers N`) is not a variable;
- the settings model (`Settings`, with its provider and literature sections and aliases) is the
  list of what the code reads, plus any name app/ reads from `os.environ` directly;
- standard OpenTelemetry variables the settings model declares are listed like any other; the
  SDK's other `OTEL_*` variables are the SDK's, not ours, and are not listed.
A variable added to the settings fails this test until its row is written, and a row whose
variable is gone fails it too.

The README also points nowhere outside the repository: no `../` path, no absolute path of this
machine, every relative link to a file that exists, and web links only to the upstreams'
own addresses the service talks to (documentation defaults).
"""

from __future__ import annotations

import re
from pathlib import Path

from app.core.secret_files import env_names, file_env_names
from app.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PROVIDER_PREFIXES = ("GROQ", "GEMINI", "AZURE_OPENAI", "OPENAI")
HEADER = re.compile(r"^\|\s*variable\s*\|\s*default\s*\|\s*meaning\s*\|\s*$")
NAME = re.compile(r"[A-Z][A-Z0-9_]*")
FILE_PATTERN = "<NAME>_FILE"


def config_rows(text: str) -> list[str]:
    """The first cell of every row of every configuration table."""
    cells: list[str] = []
    in_table = False
    for line in text.splitlines():
        if HEADER.match(line):
            in_table = True
            continue
        if in_table and line.startswith("|"):
            if set(line) <= {"|", "-", " ", ":"}:
                continue
            cells.append(line.split("|")[1])
        else:
            in_table = False
    return cells


def documented(text: str) -> set[str]:
    names: set[str] = set()
    for cell in config_rows(text):
        previous: str | None = None
        for token in re.findall(r"`([^`]+)`", cell):
            if token == FILE_PATTERN:
                names.add(FILE_PATTERN)
            elif token.startswith("<P>_") and NAME.fullmatch(token[4:]):
                names.update(f"{p}_{token[4:]}" for p in PROVIDER_PREFIXES)
            elif token.startswith("_") and previous and NAME.fullmatch(token[1:]):
                names.add(previous.rsplit("_", 1)[0] + token)
            elif NAME.fullmatch(token):
                names.add(token)
                previous = token
    return names


def read_by_code() -> set[str]:
    names = set(env_names(Settings))
    pattern = re.compile(r"""(?:environ\.get\(|environ\[|getenv\()\s*["']([A-Z][A-Z0-9_]*)["']""")
    for path in (ROOT / "app").rglob("*.py"):
        names.update(pattern.findall(path.read_text(encoding="utf-8")))
    return names


def test_the_rules_read_a_table_as_written() -> None:
    text = (
        "| variable | default | meaning |\n|---|---|---|\n"
        "| `DAILY_BUDGET_USD_GROQ`, `_GEMINI` | 0, 10 | |\n"
        "| `<P>_TIMEOUT_S` | 5 | `NOT_A_ROW_NAME` in the meaning column |\n"
        "| `WORKERS` (or `serve --workers N`) | 1 | |\n"
        "| `<NAME>_FILE` | none | |\n\n"
        "| `OUTSIDE_A_TABLE` | | |\n"
    )
    assert documented(text) == {
        "DAILY_BUDGET_USD_GROQ",
        "DAILY_BUDGET_USD_GEMINI",
        "GROQ_TIMEOUT_S",
        "GEMINI_TIMEOUT_S",
        "AZURE_OPENAI_TIMEOUT_S",
        "OPENAI_TIMEOUT_S",
        "WORKERS",
        FILE_PATTERN,
    }


def test_every_variable_the_code_reads_is_in_the_readme() -> None:
    missing = read_by_code() - documented(README)
    assert not missing, f"add rows to the README's configuration tables: {sorted(missing)}"


def test_every_variable_in_the_readme_exists() -> None:
    stale = documented(README) - read_by_code() - {FILE_PATTERN}
    assert not stale, f"the README documents variables nothing reads: {sorted(stale)}"


def test_secret_files_are_documented_once_as_a_pattern() -> None:
    assert file_env_names(Settings), "secrets accept <NAME>_FILE"
    assert FILE_PATTERN in documented(README)


# The only web addresses the README may show: the upstreams' defaults and example hosts.
ALLOWED_HOSTS = {
    "api.groq.com",
    "generativelanguage.googleapis.com",
    "api.openai.com",
    "x.openai.azure.com",
    "api.unpaywall.org",
    "doi.org",
    "pmc.ncbi.nlm.nih.gov",
    "host:8000",
}


def test_the_readme_points_nowhere_outside_the_repository() -> None:
    assert "../" not in README, "a path outside the repository"
    for absolute in ("/work/", "/tmp/", "/home/", "/root/", "/Users/", "file://"):
        assert absolute not in README, absolute
    for target in re.findall(r"\]\(([^)\s]+)\)", README):  # Markdown links
        if not target.startswith(("http://", "https://", "#")):
            assert (ROOT / target.split("#")[0]).exists(), target
    for host in re.findall(r"https?://([^/\s`)\"'|]+)", README):
        assert host in ALLOWED_HOSTS, host


def test_every_make_target_is_in_the_readme_and_every_listed_one_exists() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][a-z-]*):.*## ", makefile, flags=re.MULTILINE))
    rows = [line for line in README.splitlines() if line.startswith("| `make ")]
    listed = {name for row in rows for name in re.findall(r"`make ([a-z][a-z-]*)", row)}
    assert targets - listed == set(), "targets missing from the README's table"
    assert listed - targets == set(), "the README lists targets the Makefile lacks"
