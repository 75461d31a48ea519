"""The async SQLAlchemy engine and the Alembic migrations run at start.

SQLite (aiosqlite) by default, PostgreSQL (asyncpg) by URL. The schema is only ever made by
migrations, so a database upgraded in place and a fresh one are the same.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"


def _is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _make_sqlite_dir(url: str) -> None:
    database = make_url(url).database
    if _is_sqlite(url) and database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def make_engine(url: str, *, busy_timeout_s: float = 5.0) -> AsyncEngine:
    _make_sqlite_dir(url)
    if _is_sqlite(url):
        # Wait a while for a lock rather than fail at once when a reader holds the file.
        return create_async_engine(url, connect_args={"timeout": busy_timeout_s})
    return create_async_engine(url, pool_size=5, max_overflow=5, pool_pre_ping=True)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


async def migrate(url: str) -> None:
    """Bring the schema to head. Alembic's env runs its own event loop: give it a thread."""
    _make_sqlite_dir(url)
    await asyncio.to_thread(command.upgrade, alembic_config(url), "head")
