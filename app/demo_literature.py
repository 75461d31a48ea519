"""The full-text detection part of `make demo`: the sandbox's whole catalogue in one batch
through the running service, and per tier how many papers it decided and how many of those
answers match the catalogue."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import httpx

TIER_NAMES = {
    1: "database",
    2: "direct URL",
    3: "PubMed Central",
    4: "Unpaywall",
    5: "publisher page",
    6: "secondary links",
    7: "AI verification",
    None: "not available",
}
MIN_PAPERS = 30
BATCH_TIMEOUT_S = 120.0


def literature_env(sandbox: str) -> dict[str, str]:
    """The environment that points the service's literature module at the sandbox."""
    response = httpx.get(f"{sandbox}/_literature/gateway", trust_env=False, timeout=5.0)
    response.raise_for_status()
    return {str(k): str(v) for k, v in response.json()["env"].items()}


def run_literature_demo(client: httpx.Client, sandbox: httpx.Client) -> bool:
    """Run the catalogue batch and print the per-tier table; True when every answer is right."""
    catalogue: dict[str, Any] = sandbox.get("/_literature/catalogue").raise_for_status().json()
    entries: list[dict[str, Any]] = catalogue["papers"]
    # The sandbox's model answers tier 7 with a verdict the catalogue expects.
    sandbox.put("/_chaos/groq", json={"content": catalogue["ai_full_text_verdict"]})
    started = time.perf_counter()
    try:
        response = client.post(
            "/v1/fulltext/detect/batch",
            json={"papers": [e["paper"] for e in entries]},
            timeout=BATCH_TIMEOUT_S,
        )
    finally:
        sandbox.delete("/_chaos/groq")
    elapsed_ms = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        print(f"full-text batch -> HTTP {response.status_code}: {response.text[:200]}")
        return False
    results: list[dict[str, Any]] = response.json()["results"]

    expected_by_tier: Counter[int | None] = Counter()
    decided: Counter[int | None] = Counter()
    correct: Counter[int | None] = Counter()
    wrong: list[str] = []
    for entry, result in zip(entries, results, strict=True):
        expected = entry["expected"]
        expected_by_tier[expected["tier"] if expected["is_available"] else None] += 1
        tier = result["tier"] if result["is_available"] else None
        decided[tier] += 1
        right = (result["is_available"], tier, result["url"]) == (
            expected["is_available"],
            expected["tier"] if expected["is_available"] else None,
            expected["url"],
        )
        correct[tier] += right
        if not right:
            wrong.append(f"  {entry['id']}: got tier {tier} ({result['method']}), {entry['note']}")

    print(f"full-text detection: {len(entries)} catalogue papers in one batch, {elapsed_ms:.0f} ms")
    print(f"{'tier':<22}{'expected':>9}{'decided':>9}{'correct':>9}{'accuracy':>10}")
    for tier, name in TIER_NAMES.items():
        label = f"{tier} {name}" if tier else f"- {name}"
        share = f"{100 * correct[tier] / decided[tier]:.1f}%" if decided[tier] else "-"
        print(
            f"{label:<22}{expected_by_tier[tier]:>9}{decided[tier]:>9}{correct[tier]:>9}{share:>10}"
        )
    total_right = sum(correct.values())
    print(
        f"{'all':<22}{len(entries):>9}{len(results):>9}{total_right:>9}"
        f"{100 * total_right / len(entries):>9.1f}%"
    )
    for line in wrong:
        print(line)
    return not wrong and len(entries) >= MIN_PAPERS
