"""mask_url: passwords and token parameters inside URLs never reach output, whatever they hold."""

from __future__ import annotations

from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core.masking import MASK, mask_url
from app.core.settings import Settings

# Characters a URL must encode, and a few it then decodes back to something else.
HOSTILE = "@:/%?#&=+ ;[]\\\"'\n\t~!$é漢"
# Secrets are wrapped in markers, so a leak of any part that includes an end shows up even
# when the middle happens to read like ordinary output.
# Any character a string (and an environment variable) can hold: no lone surrogate, no NUL.
_chars = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
_cores = st.text(alphabet=st.sampled_from(HOSTILE) | _chars, min_size=0, max_size=24)
secrets = _cores.map(lambda core: f"Qz7{core}Wk4")
TOKEN_NAMES = (
    "token",
    "key",
    "api_key",
    "apikey",
    "sig",
    "signature",
    "secret",
    "client_secret",
    "password",
    "access_token",
    "code",
    "auth",
    "X-Amz-Signature",
    "Authorization",
)


def leaks(secret: str, text: str) -> list[str]:
    """Every form of `secret` (or of its end markers) that shows in `text`."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret), quote(secret), "Qz7", "Wk4"}
    return sorted(form for form in forms if form in text)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (
            "postgresql+asyncpg://gateway:s3cr%40t@db.internal:5432/gw",
            "postgresql+asyncpg://gateway:****@db.internal:5432/gw",
        ),
        ("sqlite+aiosqlite:///./data/gateway.db", "sqlite+aiosqlite:///./data/gateway.db"),
        ("https://api.groq.com/openai/v1", "https://api.groq.com/openai/v1"),
        (
            "https://hooks.example.com/alert?token=abc&channel=ops&sig=x%2Fy",
            "https://hooks.example.com/alert?token=****&channel=ops&sig=****",
        ),
        ("https://ghp_secret@github.com/org/repo", "https://****@github.com/org/repo"),
        # Not percent-encoded: SQLAlchemy still reads `a/b?c#d` as the password; so do we.
        ("postgresql://app:a/b?c#d@db/gw", "postgresql://app:****@db/gw"),
        ("https://host/users/@me?email=a@b.org", "https://host/users/@me?email=a@b.org"),
        ("https://idp.example.com/cb#access_token=xyz&state=1", None),
        ("not a url", "not a url"),
        ("", ""),
    ],
)
def test_examples(url: str, masked: str | None) -> None:
    if masked is None:
        assert "xyz" not in mask_url(url)
    else:
        assert mask_url(url) == masked


def test_hide_path_for_webhooks_whose_path_is_the_token() -> None:
    url = "https://hooks.slack.com/services/T000/B000/XXXXSECRET?x=1"
    assert mask_url(url, hide_path=True) == f"https://hooks.slack.com/{MASK}?x=1"


@given(secrets)
def test_a_percent_encoded_password_never_shows(password: str) -> None:
    url = f"postgresql+asyncpg://gateway:{quote(password, safe='')}@db.internal:5432/gw"
    masked = mask_url(url)
    assert masked == "postgresql+asyncpg://gateway:****@db.internal:5432/gw"
    assert leaks(password, masked) == []


@given(secrets.filter(lambda s: "@" not in s))
def test_a_raw_password_never_shows(password: str) -> None:
    """A password written into the URL as is (SQLAlchemy reads up to the `@`)."""
    masked = mask_url(f"postgresql://gateway:{password}@db.internal/gw")
    assert masked == "postgresql://gateway:****@db.internal/gw"
    assert leaks(password, masked) == []


@given(secrets, st.sampled_from(TOKEN_NAMES), st.booleans())
def test_a_token_parameter_never_shows(token: str, name: str, in_fragment: bool) -> None:
    separator = "#" if in_fragment else "?"
    encoded = quote_plus(token, safe="")
    url = f"https://hooks.example.com/alerts{separator}channel=ops&{name}={encoded}&v=1"
    masked = mask_url(url)
    assert masked.endswith(f"channel=ops&{name}={MASK}&v=1")
    assert leaks(token, masked) == []


@given(st.text())
def test_never_raises_on_any_text(text: str) -> None:
    assert isinstance(mask_url(text), str)
    assert isinstance(mask_url(text, hide_path=True), str)


@given(secrets, secrets)
def test_settings_masked_hides_both(password: str, token: str) -> None:
    settings = Settings(
        database_url=f"postgresql+asyncpg://gateway:{quote(password, safe='')}@db:5432/gw",
        budget_alert_webhook_url=f"https://hooks.example.com/a?token={quote(token, safe='')}",
    )
    text = repr(settings.masked())
    assert leaks(password, text) == []
    assert leaks(token, text) == []
    assert settings.masked()["database_url"] == "postgresql+asyncpg://gateway:****@db:5432/gw"
