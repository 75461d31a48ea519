"""Read the ledger the way an analyst would: straight from the database file."""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy.engine import make_url


def ledger_rows(database_url: str) -> list[dict[str, Any]]:
    path = make_url(database_url).database
    assert path, database_url
    with sqlite3.connect(path) as connection:
        connection.row_factory = sqlite3.Row
        rows = connection.execute("SELECT * FROM llm_usage_logs ORDER BY created_at").fetchall()
    return [dict(row) for row in rows]
