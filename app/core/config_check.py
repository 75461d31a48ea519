"""Configuration that cannot drift silently: names in errors, and variables nobody reads.

pydantic-settings ignores an environment variable it does not know, so a typo
(`GROQ_TIMOUT_S=2`) leaves the default in force without a word. `unknown_variables` lists the
variables that carry one of this service's prefixes but that the settings do not read, each
with the nearest name it does read; `serve` logs each as a warning at start and
`check-config` lists them (`unknown_variables`) and prints them on stderr. Neither refuses to
run: the prefixes are shared with other tools (the OpenAI SDK reads `OPENAI_ORG_ID`), so an
unknown name is a question for the operator, not proof of a mistake.

A nested section (`GroqSettings`, `LiteratureSettings`) validates on its own, so pydantic names
only its field (`TIMEOUT_S`); `error_variable` gives back the whole variable
(`GROQ_TIMEOUT_S`) that the operator set.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from app.core.secret_files import env_names, file_env_names
from app.core.settings import Settings

__all__ = [
    "OUR_PREFIXES",
    "UnknownVariable",
    "error_lines",
    "error_variable",
    "known_variables",
    "unknown_variables",
]

# Prefixes only this service gives meaning to (in this deployment). OTEL_ is not one: the
# OpenTelemetry SDK reads many standard OTEL_* variables of its own that the settings do not
# list (OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_HEADERS...).
OUR_PREFIXES = (
    "GROQ_",
    "GEMINI_",
    "AZURE_OPENAI_",
    "OPENAI_",
    "LITERATURE_",
    "AI_",
    "GATEWAY_",
    "DAILY_BUDGET_",
    "MONTHLY_BUDGET_",
    "BUDGET_",
    "LEDGER_",
    "DATABASE_",
    "REDIS_",
    "HTTP_",
    "METRICS_",
    "LOG_",
)
# Well-known variables of other programs that share a prefix; never reported.
_OTHERS = frozenset({"HTTP_PROXY", "HTTPS_PROXY"})


@dataclass(frozen=True, slots=True)
class UnknownVariable:
    name: str
    nearest: str | None  # the closest variable the service reads, if any is close

    def message(self) -> str:
        hint = f"; did you mean {self.nearest}?" if self.nearest else ""
        return f"{self.name} is not a setting of this service (ignored){hint}"


def known_variables() -> set[str]:
    """Every variable the settings read, `<NAME>_FILE` secrets included."""
    return set(env_names(Settings)) | file_env_names(Settings)


def unknown_variables(environ: Mapping[str, str]) -> list[UnknownVariable]:
    """Variables with one of OUR_PREFIXES that no setting reads, in name order."""
    known = known_variables()
    found: list[UnknownVariable] = []
    for name in sorted(environ):
        upper = name.upper()  # pydantic-settings matches names case-insensitively
        if upper in known or upper in _OTHERS or not upper.startswith(OUR_PREFIXES):
            continue
        nearest = difflib.get_close_matches(upper, known, n=1, cutoff=0.75)
        found.append(UnknownVariable(name, nearest[0] if nearest else None))
    return found


def _sections() -> dict[str, type[BaseSettings]]:
    sections: dict[str, type[BaseSettings]] = {Settings.__name__: Settings}
    for field in Settings.model_fields.values():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseSettings):
            sections[annotation.__name__] = annotation
    return sections


def error_variable(title: str, loc: Sequence[int | str]) -> str:
    """The environment variable behind one validation error of the settings class named
    `title` at `loc`, as the operator spells it: `GROQ_TIMEOUT_S`, `UNPAYWALL_EMAIL`, or
    `AI_PRICES` with the inner path after it (`AI_PRICES.gpt-4o.input`). A `loc` that is no
    field (a secret file's error names its `<NAME>_FILE` itself) is kept as it is."""
    section = _sections().get(title, Settings)
    parts = list(loc)
    while parts:
        head = str(parts.pop(0))
        field = section.model_fields.get(head)
        nested = field.annotation if field is not None else None
        if isinstance(nested, type) and issubclass(nested, BaseSettings):
            section = nested  # Settings(groq={...}) from code: the section's own variable
            continue
        alias = field.validation_alias if field is not None else None
        if field is None:
            name = head
        elif isinstance(alias, str):
            name = alias.upper()
        else:
            name = f"{section.model_config.get('env_prefix', '')}{head}".upper()
        inner = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts)
        return name + inner
    return ""


def error_lines(exc: ValidationError) -> list[str]:
    """One line per error: the variable and pydantic's message, never the value (a key)."""
    lines = []
    for error in exc.errors():
        where = error_variable(exc.title, error["loc"])
        lines.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
    return lines
