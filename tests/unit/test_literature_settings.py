"""LiteratureSettings from the environment: JSON maps, comma lists, checked addresses."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.core.settings import LiteratureSettings, Settings


def test_defaults_point_at_the_real_services() -> None:
    settings = LiteratureSettings()
    assert settings.unpaywall_base_url == "https://api.unpaywall.org/v2"
    assert settings.doi_resolver_url == "https://doi.org"
    assert (settings.host_overrides, settings.trusted_hosts, settings.allowed_hosts) == ({}, [], [])
    assert settings.max_redirects == 5


def test_the_environment_configures_the_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNPAYWALL_EMAIL", "team@example.org")
    monkeypatch.setenv("LITERATURE_HOST_OVERRIDES", '{"Pub.Test.": "127.0.0.1"}')
    monkeypatch.setenv("LITERATURE_TRUSTED_HOSTS", "pub.test, Other.TEST")
    monkeypatch.setenv("LITERATURE_ALLOWED_HOSTS", "pub.test")
    monkeypatch.setenv("LITERATURE_PUBLISHER_RPM_OVERRIDES", '{"elsevier": 10}')
    monkeypatch.setenv("LITERATURE_BATCH_MAX_SIZE", "50")
    literature = Settings().literature
    assert literature.unpaywall_email == "team@example.org"
    assert literature.host_overrides == {"pub.test": "127.0.0.1"}
    assert literature.trusted_hosts == ["pub.test", "other.test"]
    assert literature.allowed_hosts == ["pub.test"]
    assert literature.publisher_rpm_overrides == {"elsevier": 10}
    assert literature.batch_max_size == 50


def test_an_override_must_be_an_address() -> None:
    with pytest.raises(ValidationError, match="must map to an IP address"):
        LiteratureSettings(host_overrides={"pub.test": "localhost"})


def test_limits_are_bounded() -> None:
    with pytest.raises(ValidationError):
        LiteratureSettings(max_redirects=50)
    with pytest.raises(ValidationError):
        LiteratureSettings(batch_concurrency=0)
