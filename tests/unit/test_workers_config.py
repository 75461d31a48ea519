"""What `check-config` says about running several processes: a SQLite ledger serves one
machine only, and several workers without REDIS_URL would be refused by `serve`."""

from __future__ import annotations

import json

import pytest

from app.__main__ import main


def _check(capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, object], str]:
    assert main(["check-config"]) == 0
    captured = capsys.readouterr()
    report: dict[str, object] = json.loads(captured.out)
    return report, captured.err


def test_several_workers_on_sqlite_are_told_about_the_ledger_and_redis_postgresql_not(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    report, err = _check(capsys)  # one process: nothing to say
    assert "notes" not in report
    assert err == ""
    monkeypatch.setenv("WORKERS", "3")
    report, err = _check(capsys)
    notes = report["notes"]
    assert isinstance(notes, list)
    assert any("several machines need a shared ledger database" in n for n in notes)
    assert any("PostgreSQL" in n for n in notes)
    assert any("3 workers need REDIS_URL" in n for n in notes)
    assert "several machines need a shared ledger database" in err
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://gw:secret@db.internal/gateway")
    report, err = _check(capsys)  # what several machines need: nothing left to say
    assert "notes" not in report
    assert err == ""
    assert "secret" not in json.dumps(report)


def test_replicas_on_redis_with_sqlite_are_told_about_the_ledger_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    report, _ = _check(capsys)
    notes = report["notes"]
    assert isinstance(notes, list)
    assert len(notes) == 1
    assert "shared ledger database" in notes[0]
