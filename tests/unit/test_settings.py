from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from app.__main__ import main
from app.core.settings import ProviderName, RoutingStrategy, Settings


def test_defaults_match_the_documented_contract() -> None:
    settings = Settings()
    assert settings.ai_provider_priority == [
        ProviderName.GROQ,
        ProviderName.GEMINI,
        ProviderName.AZURE,
        ProviderName.OPENAI,
    ]
    assert settings.groq.base_url == "https://api.groq.com/openai/v1"
    assert settings.gemini.base_url == "https://generativelanguage.googleapis.com"
    assert settings.openai.base_url == "https://api.openai.com/v1"
    assert settings.groq.models_for("fast") == ["llama-3.1-8b-instant", "gemma2-9b-it"]
    assert settings.groq.models_for("quality") == ["llama-3.3-70b-versatile", "llama3-70b-8192"]
    assert settings.openai.models_for("fast") == ["gpt-4o-mini"]
    assert settings.openai.models_for("quality") == ["gpt-4o"]
    assert (settings.groq.timeout_s, settings.gemini.timeout_s) == (5.0, 10.0)
    assert (settings.azure.timeout_s, settings.openai.timeout_s) == (15.0, 15.0)
    # No key, no provider.
    assert not any(settings.provider(name).configured for name in ProviderName)


def test_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROQ_API_KEY", "gsk-single-key-0001")
    monkeypatch.setenv("GROQ_API_KEYS", "gsk-a-000000001, gsk-b-000000002,gsk-single-key-0001")
    monkeypatch.setenv("GROQ_BASE_URL", "http://127.0.0.1:9/groq")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "azure-key-00000001")
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "http://127.0.0.1:9/azure")
    monkeypatch.setenv("AZURE_OPENAI_DEPLOYMENT", "prod-4o-mini")
    monkeypatch.setenv("AZURE_OPENAI_API_VERSION", "2024-06-01")
    monkeypatch.setenv("AI_PROVIDER_PRIORITY", "openai,groq")
    monkeypatch.setenv("AI_ROUTING_STRATEGY", "cost")
    monkeypatch.setenv("PORT", "9001")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    settings = Settings()
    # The single key first, duplicates dropped, order otherwise kept.
    assert [k.get_secret_value() for k in settings.groq.all_keys()] == [
        "gsk-single-key-0001",
        "gsk-a-000000001",
        "gsk-b-000000002",
    ]
    assert settings.groq.base_url == "http://127.0.0.1:9/groq"
    assert settings.azure.configured
    assert settings.azure.models_for("fast") == ["prod-4o-mini"]
    assert settings.azure.api_version == "2024-06-01"
    assert settings.ai_provider_priority == [ProviderName.OPENAI, ProviderName.GROQ]
    assert settings.ai_routing_strategy is RoutingStrategy.COST
    assert settings.port == 9001
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AI_PROVIDER_PRIORITY", "groq,nonsense"),
        ("AI_PROVIDER_PRIORITY", "groq,groq"),
        ("PORT", "70000"),
        ("LOG_LEVEL", "chatty"),
        ("GROQ_TIMEOUT_S", "-1"),
    ],
)
def test_invalid_values_are_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_check_config_masks_every_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "gsk-very-secret-value-123456"
    monkeypatch.setenv("GROQ_API_KEYS", secret)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-another-secret-98765")
    assert main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert secret not in out
    assert "sk-another-secret-98765" not in out
    config = json.loads(out)
    assert config["providers"]["groq"]["configured"] is True
    assert config["providers"]["groq"]["keys"] == ["gsk…56"]
    assert config["providers"]["gemini"]["configured"] is False


def test_check_config_reports_bad_variable_without_its_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AI_PROVIDER_PRIORITY", "groq,mistral")
    with pytest.raises(SystemExit) as exit_info:
        main(["check-config"])
    assert exit_info.value.code == 2
    assert "AI_PROVIDER_PRIORITY" in capsys.readouterr().err


def test_cache_scope_and_admin_callers_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GATEWAY_API_KEYS", "alice:alice-key-0001, ops:ops-key-00001")
    assert Settings().ai_cache_scope == "caller"  # per caller unless asked otherwise
    assert Settings().gateway_admin_callers == []
    monkeypatch.setenv("AI_CACHE_SCOPE", "shared")
    monkeypatch.setenv("GATEWAY_ADMIN_CALLERS", " ops ")
    settings = Settings()
    assert (settings.ai_cache_scope, settings.gateway_admin_callers) == ("shared", ["ops"])
    monkeypatch.setenv("AI_CACHE_SCOPE", "global")
    with pytest.raises(ValidationError):
        Settings()


def test_an_admin_caller_without_a_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A typo in GATEWAY_ADMIN_CALLERS must not pass silently (nobody would be admin)."""
    monkeypatch.setenv("GATEWAY_API_KEYS", "alice:alice-key-0001")
    monkeypatch.setenv("GATEWAY_ADMIN_CALLERS", "alice,opps")
    with pytest.raises(ValidationError, match="'opps'"):
        Settings()
