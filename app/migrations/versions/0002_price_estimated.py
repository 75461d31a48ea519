"""Flag ledger rows booked at an estimated price (a model with no price of its own).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A server default, so the rows already written read as "priced" on SQLite and PostgreSQL
    # alike, and so writers that predate the column still insert.
    op.add_column(
        "llm_usage_logs",
        sa.Column("price_estimated", sa.Boolean, nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    # batch mode: SQLite before 3.35 cannot drop a column in place.
    with op.batch_alter_table("llm_usage_logs") as batch:
        batch.drop_column("price_estimated")
