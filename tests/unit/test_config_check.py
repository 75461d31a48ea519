"""Configuration that cannot drift: a mistyped variable is reported with the nearest name, and
an invalid provider setting names the whole variable."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.__main__ import main
from app.core.config_check import (
    OUR_PREFIXES,
    error_variable,
    known_variables,
    unknown_variables,
)

KNOWN = sorted(known_variables())


def test_a_typo_is_reported_with_the_nearest_known_name() -> None:
    environ = {
        "GROQ_TIMOUT_S": "2",  # the typo
        "GROQ_TIMEOUT_S": "2",
        "GROQ_API_KEYS_FILE": "/run/secrets/groq",  # a secret file: read
        "UNPAYWALL_EMAIL": "me@example.org",  # an alias: read
        "OTEL_SERVICE_NAME": "gateway",  # the OpenTelemetry SDK's own
        "HTTP_PROXY": "http://proxy:3128",  # another program's
        "PATH": "/usr/bin",
    }
    [unknown] = unknown_variables(environ)
    assert unknown.name == "GROQ_TIMOUT_S"
    assert unknown.nearest == "GROQ_TIMEOUT_S"
    assert "did you mean GROQ_TIMEOUT_S?" in unknown.message()


@given(st.sampled_from(KNOWN), st.data())
def test_every_known_name_passes_and_a_one_letter_slip_of_it_is_caught(
    name: str, data: st.DataObject
) -> None:
    assert unknown_variables({name: "1"}) == []
    prefix = next((p for p in OUR_PREFIXES if name.startswith(p)), None)
    if prefix is None or len(name) <= len(prefix) + 1:
        return  # HOST, PORT, WORKERS...: no prefix of ours to recognise a slip by
    index = data.draw(st.integers(len(prefix), len(name) - 1))
    slip = name[:index] + name[index + 1 :]  # one letter dropped, the prefix kept
    if slip in KNOWN or slip == prefix.rstrip("_"):
        return
    [unknown] = unknown_variables({slip: "1"})
    assert unknown.name == slip
    assert unknown.nearest is not None


@pytest.mark.parametrize(
    ("title", "loc", "variable"),
    [
        ("GroqSettings", ("timeout_s",), "GROQ_TIMEOUT_S"),
        ("AzureSettings", ("rpd_per_key",), "AZURE_OPENAI_RPD_PER_KEY"),
        ("LiteratureSettings", ("max_redirects",), "LITERATURE_MAX_REDIRECTS"),
        ("LiteratureSettings", ("unpaywall_email",), "UNPAYWALL_EMAIL"),
        ("Settings", ("ai_retry_max",), "AI_RETRY_MAX"),
        ("Settings", ("groq", "timeout_s"), "GROQ_TIMEOUT_S"),
        ("Settings", ("ai_prices", "gpt-4o", "input"), "AI_PRICES.gpt-4o.input"),
        ("GroqSettings", ("GROQ_API_KEY_FILE",), "GROQ_API_KEY_FILE"),
        ("Settings", (), ""),
    ],
)
def test_an_error_names_the_variable_the_operator_set(
    title: str, loc: tuple[str, ...], variable: str
) -> None:
    assert error_variable(title, loc) == variable


def test_check_config_names_the_whole_provider_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GROQ_TIMEOUT_S", "soon")
    with pytest.raises(SystemExit) as exit_:
        main(["check-config"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "configuration error: GROQ_TIMEOUT_S: " in err
    assert "soon" not in err  # the value is never printed (it could be a key)


def test_check_config_lists_unknown_variables(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GROQ_TIMOUT_S", "2")
    assert main(["check-config"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["unknown_variables"] == {"GROQ_TIMOUT_S": "GROQ_TIMEOUT_S"}
    assert "GROQ_TIMOUT_S is not a setting of this service" in err
