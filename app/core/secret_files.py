"""Secrets from files: every secret variable `NAME` also accepts `NAME_FILE`, a path whose
content is the value (the Docker and Kubernetes secrets convention: a mounted file, never an
environment variable a `docker inspect` or `/proc/<pid>/environ` would show).

pydantic-settings' own `secrets_dir` reads one file per field name from one directory; the
`_FILE` convention names a file per variable, anywhere, so it is a settings source of its own
(`SecretFilesSource`), added by `settings_customise_sources` to the settings classes that hold
secrets.

Rules, each refused at start with a message naming the variable and never the content:
- `NAME` and `NAME_FILE` both set: which one wins would be a guess;
- the file cannot be read, is not UTF-8, or holds nothing but whitespace (an empty mount is a
  deployment mistake, not "no key");
- a single-value secret (a key, a URL) holds more than one line, or any value holds a
  non-printable character (a tab, NUL, an escape, a Unicode separator).
List secrets (`<P>_API_KEYS`, `GATEWAY_API_KEYS`) take one item per line or comma-separated.

`env_names` lists every variable the settings read (the same names pydantic-settings
derives: the section's prefix and the field name, or the field's alias), for the checks of
the deploy manifests and for the key-file watcher.
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

__all__ = [
    "FILE_SUFFIX",
    "SECRET_URL_FIELDS",
    "SecretFileError",
    "SecretFileSettings",
    "SecretFilesSource",
    "env_names",
    "file_env_names",
    "is_secret",
    "read_secret_file",
]

FILE_SUFFIX = "_FILE"
# Plain `str` settings that carry credentials: a password in the database URL, Redis' AUTH in
# its URL, a chat webhook's token in its path.
SECRET_URL_FIELDS = frozenset({"database_url", "redis_url", "budget_alert_webhook_url"})

Kind = Literal["single", "list"]


class SecretFileError(ValueError):
    """A `_FILE` variable that cannot be used; the message names the variable, not the value."""

    def __init__(self, variable: str, reason: str) -> None:
        super().__init__(f"{variable}: {reason}")
        self.variable = variable
        self.reason = reason


def _mentions_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_mentions_secret(arg) for arg in typing.get_args(annotation))


def is_secret(name: str, field: FieldInfo) -> bool:
    """A `SecretStr` anywhere in the field's type, or a URL known to carry credentials."""
    return name in SECRET_URL_FIELDS or _mentions_secret(field.annotation)


def _kind(field: FieldInfo) -> Kind:
    origin = typing.get_origin(field.annotation)
    if origin is types.UnionType or origin is typing.Union:
        args = [a for a in typing.get_args(field.annotation) if a is not type(None)]
        origin = typing.get_origin(args[0]) if len(args) == 1 else None
    return "list" if origin in (list, dict) else "single"


def _env_name(prefix: str, name: str, field: FieldInfo) -> str:
    alias = field.validation_alias
    return alias.upper() if isinstance(alias, str) else f"{prefix}{name}".upper()


def _section(field: FieldInfo) -> type[BaseSettings] | None:
    annotation = field.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseSettings):
        return annotation
    return None


def env_names(settings_cls: type[BaseSettings]) -> dict[str, bool]:
    """Every environment variable the settings tree reads, mapped to whether it is a secret
    (then `<NAME>_FILE` is read too). Nested sections built from their own prefix (`GROQ_`,
    `LITERATURE_`...) are walked."""
    prefix = str(settings_cls.model_config.get("env_prefix", ""))
    names: dict[str, bool] = {}
    for name, field in settings_cls.model_fields.items():
        section = _section(field)
        if section is not None:
            names.update(env_names(section))
        else:
            names[_env_name(prefix, name, field)] = is_secret(name, field)
    return names


def file_env_names(settings_cls: type[BaseSettings]) -> set[str]:
    """The `<NAME>_FILE` variables the settings tree accepts."""
    return {name + FILE_SUFFIX for name, secret in env_names(settings_cls).items() if secret}


def read_secret_file(variable: str, path: str, kind: Kind) -> str:
    """The value in the file `path` (named by `variable`), in the form the field's own
    validators take from the environment: list items joined by commas."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise SecretFileError(
            variable, f"cannot read {path!r}: {exc.strerror or type(exc).__name__}"
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretFileError(variable, f"{path!r} is not UTF-8 text") from None
    if kind == "list":
        items = [item.strip() for line in text.splitlines() for item in line.split(",")]
        items = [item for item in items if item]
    else:
        value = text.strip()
        items = [value] if value else []
        if len(value.splitlines()) > 1:
            raise SecretFileError(
                variable, f"{path!r} holds more than one line (one value expected)"
            )
    if not items:
        raise SecretFileError(variable, f"{path!r} is empty")
    # Keys go into HTTP headers and URLs: a tab, NUL, escape or Unicode separator is a
    # copy-paste accident, never part of a real key.
    if not all(item.isprintable() for item in items):
        raise SecretFileError(variable, f"{path!r} holds a non-printable character")
    return ",".join(items)


@dataclass(frozen=True, slots=True)
class _Secret:
    field: str
    variable: str
    kind: Kind


class SecretFilesSource(PydanticBaseSettingsSource):
    """Values of the secret fields of one settings class from their `<NAME>_FILE` files."""

    def __init__(
        self, settings_cls: type[BaseSettings], environ: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(settings_cls)
        self._environ = os.environ if environ is None else environ

    def secrets(self) -> list[_Secret]:
        prefix = str(self.config.get("env_prefix", ""))
        return [
            _Secret(name, _env_name(prefix, name, field), _kind(field))
            for name, field in self.settings_cls.model_fields.items()
            if _section(field) is None and is_secret(name, field)
        ]

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        # Unused: __call__ reads every secret field at once (so all errors come together).
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        # Environment names are case-insensitive here, as in pydantic-settings' default.
        environ = {key.upper(): value for key, value in self._environ.items()}
        values: dict[str, Any] = {}
        errors: list[InitErrorDetails] = []
        for secret in self.secrets():
            file_variable = secret.variable + FILE_SUFFIX
            path = environ.get(file_variable)
            if path is None:
                continue
            try:
                if secret.variable in environ:
                    raise SecretFileError(
                        file_variable, f"{secret.variable} is set too; set only one of them"
                    )
                if not path.strip():
                    raise SecretFileError(file_variable, "names no file")
                values[secret.field] = read_secret_file(file_variable, path, secret.kind)
            except SecretFileError as exc:
                errors.append(
                    InitErrorDetails(
                        type=PydanticCustomError("secret_file", "{reason}", {"reason": exc.reason}),
                        loc=(file_variable,),
                        input="<file>",
                    )
                )
        if errors:
            raise ValidationError.from_exception_data(self.settings_cls.__name__, errors)
        return values


class SecretFileSettings(BaseSettings):
    """A settings class whose secret fields also accept `<NAME>_FILE`."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The `_FILE` files after the environment (setting both is refused anyway)."""
        return (
            init_settings,
            env_settings,
            SecretFilesSource(settings_cls),
            dotenv_settings,
            file_secret_settings,
        )
