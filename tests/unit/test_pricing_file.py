from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.core.settings import ProviderName, Settings
from app.modules.ai.pricing import PriceTable


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("prices.json", '{"gpt-4o-mini": {"input": 1.0, "output": 2.0}}'),
        ("prices.yaml", "models:\n  gpt-4o-mini:\n    input: 1.0\n    output: 2.0\n"),
    ],
)
def test_pricing_file_overrides_defaults(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    prices = PriceTable(Settings(ai_pricing_file=str(path)))
    assert prices.cost(ProviderName.OPENAI, "gpt-4o-mini", 10**6, 10**6) == 3.0
    # Models the file does not name keep their defaults.
    assert prices.cost(ProviderName.OPENAI, "gpt-4o", 10**6, 0) == 2.5


@pytest.mark.parametrize(
    "text", ['{"gpt-4o-mini": {"input": -1, "output": 2}}', '["not", "a", "map"]']
)
def test_invalid_pricing_file_fails_at_start(tmp_path: Path, text: str) -> None:
    path = tmp_path / "prices.json"
    path.write_text(text)
    with pytest.raises((ValueError, ValidationError)):
        PriceTable(Settings(ai_pricing_file=str(path)))


def test_missing_pricing_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="AI_PRICING_FILE"):
        PriceTable(Settings(ai_pricing_file=str(tmp_path / "nope.json")))
