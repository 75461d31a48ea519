"""`<NAME>_FILE` for every secret variable (app.core.secret_files): the value comes from the
file, and every way the file can be wrong is refused at start naming the variable, never the
content."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from app.__main__ import main
from app.core.secret_files import (
    SecretFileError,
    SecretFilesSource,
    env_names,
    file_env_names,
    read_secret_file,
)
from app.core.settings import GroqSettings, Settings


def _write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_every_secret_has_a_file_variable_and_nothing_else_does() -> None:
    files = file_env_names(Settings)
    for provider in ("GROQ", "GEMINI", "AZURE_OPENAI", "OPENAI"):
        assert f"{provider}_API_KEY_FILE" in files
        assert f"{provider}_API_KEYS_FILE" in files
    for name in ("GATEWAY_API_KEYS", "DATABASE_URL", "REDIS_URL", "BUDGET_ALERT_WEBHOOK_URL"):
        assert f"{name}_FILE" in files
    names = env_names(Settings)
    assert not names["GROQ_BASE_URL"]
    assert not names["LOG_LEVEL"]
    assert "UNPAYWALL_EMAIL" in names  # an alias, not LITERATURE_UNPAYWALL_EMAIL
    assert "LITERATURE_UNPAYWALL_EMAIL" not in names
    assert "GROQ_BASE_URL_FILE" not in files


def test_values_come_from_the_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GATEWAY_API_KEYS")  # the tests' caller (conftest), from a file here
    monkeypatch.delenv("DATABASE_URL")
    monkeypatch.setenv("GROQ_API_KEY_FILE", _write(tmp_path / "one", "gsk-single\n"))
    monkeypatch.setenv("GROQ_API_KEYS_FILE", _write(tmp_path / "many", "gsk-a\ngsk-b, gsk-c\n\n"))
    monkeypatch.setenv("GATEWAY_API_KEYS_FILE", _write(tmp_path / "callers", "lit:k1\nops:k2\n"))
    url = "postgresql+asyncpg://gw:s3cret@db/gw"
    monkeypatch.setenv("DATABASE_URL_FILE", _write(tmp_path / "db", url + "\n"))
    monkeypatch.setenv("REDIS_URL_FILE", _write(tmp_path / "redis", "redis://:pw@r:6379/0"))
    loaded = Settings()
    assert [k.get_secret_value() for k in loaded.groq.all_keys()] == [
        "gsk-single",
        "gsk-a",
        "gsk-b",
        "gsk-c",
    ]
    assert {n: k.get_secret_value() for n, k in loaded.gateway_api_keys.items()} == {
        "lit": "k1",
        "ops": "k2",
    }
    assert loaded.database_url == url
    assert loaded.redis_url == "redis://:pw@r:6379/0"


def test_a_lower_case_file_variable_is_read_like_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("groq_api_key_file", _write(tmp_path / "k", "gsk-lower"))
    assert [k.get_secret_value() for k in GroqSettings().all_keys()] == ["gsk-lower"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("", "is empty"),
        ("\n\n", "is empty"),
        ("   \t \n", "is empty"),
        ("key-one\nkey-two\n", "more than one line"),
        ("key\x00x", "non-printable character"),
        ("key\x1bx", "non-printable character"),
        ("key\u2028x", "more than one line"),
        ("key\xa0x", "non-printable character"),
    ],
)
def test_a_bad_single_value_file_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str, reason: str
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY_FILE", _write(tmp_path / "k", content))
    with pytest.raises(ValidationError) as caught:
        Settings()
    message = str(caught.value)
    assert "OPENAI_API_KEY_FILE" in message
    assert reason in message
    assert "key-one" not in message
    assert "key-two" not in message


def test_both_the_variable_and_its_file_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GROQ_API_KEYS", "gsk-env")
    monkeypatch.setenv("GROQ_API_KEYS_FILE", _write(tmp_path / "k", "gsk-file"))
    with pytest.raises(ValidationError, match=r"GROQ_API_KEYS_FILE[\s\S]*GROQ_API_KEYS is set too"):
        Settings()


@pytest.mark.parametrize("path", ["/nonexistent/secret", "", "   "])
def test_a_missing_or_unnamed_file_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, path: str
) -> None:
    monkeypatch.setenv("REDIS_URL_FILE", path)
    with pytest.raises(ValidationError, match="REDIS_URL_FILE"):
        Settings()


def test_a_directory_or_non_utf8_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SecretFileError, match="cannot read"):
        read_secret_file("X_FILE", str(tmp_path), "single")
    binary = tmp_path / "bin"
    binary.write_bytes(b"\xff\xfe\x00key")
    with pytest.raises(SecretFileError, match="not UTF-8"):
        read_secret_file("X_FILE", str(binary), "single")


def test_all_errors_come_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL")
    monkeypatch.setenv("DATABASE_URL_FILE", "/nonexistent/a")
    monkeypatch.setenv("REDIS_URL_FILE", "/nonexistent/b")
    with pytest.raises(ValidationError) as caught:
        Settings()
    locations = {error["loc"][0] for error in caught.value.errors()}
    assert locations == {"DATABASE_URL_FILE", "REDIS_URL_FILE"}


def test_check_config_says_which_variable_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GATEWAY_API_KEYS", "lit:caller-key-123")
    monkeypatch.setenv("GATEWAY_API_KEYS_FILE", _write(tmp_path / "c", "lit:caller-key-123"))
    with pytest.raises(SystemExit) as exited:
        main(["check-config"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "GATEWAY_API_KEYS_FILE" in err
    assert "caller-key-123" not in err


_HOSTILE = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)) | st.sampled_from("\n\r,\t "),
    max_size=40,
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=_HOSTILE, kind=st.sampled_from(["single", "list"]))
def test_any_content_is_either_refused_or_a_clean_value(
    tmp_path: Path, content: str, kind: str
) -> None:
    """Whatever a file holds, what reaches the settings has no control characters, no
    surrounding whitespace and no empty items; anything else is a SecretFileError."""
    path = tmp_path / "hostile"
    path.write_bytes(content.encode("utf-8"))
    try:
        value = read_secret_file("X_FILE", str(path), kind)  # type: ignore[arg-type]
    except SecretFileError as exc:
        error = exc
    else:
        error = None
    if error is not None:
        assert error.variable == "X_FILE"
        assert content not in str(error) or not content.strip()
        return
    items = value.split(",") if kind == "list" else [value]
    for item in items:
        assert item
        assert item == item.strip()
        assert not any(ch in item for ch in string.whitespace if ch != " ")
        assert item.isprintable()


def test_the_source_reads_a_given_environment(tmp_path: Path) -> None:
    """The source takes its environment as a mapping (the key-file watcher reuses it)."""
    path = _write(tmp_path / "k", "gsk-x\n")
    values = SecretFilesSource(GroqSettings, {"GROQ_API_KEYS_FILE": path})()
    assert values == {"api_keys": "gsk-x"}
    assert SecretFilesSource(GroqSettings, {})() == {}
