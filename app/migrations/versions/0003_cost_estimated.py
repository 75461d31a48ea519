"""Flag ledger rows whose cost is our estimate rather than the upstream's token counts.

A try that was sent but gave no answer (it timed out, or the caller went away) may still be
billed for the prompt the provider read: it is booked at its estimated input cost, not $0,
and flagged. `price_estimated` (0002) says something else: the model had no price of its own.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-09
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A server default, so the rows already written read as "counted" on SQLite and
    # PostgreSQL alike, and so writers that predate the column still insert.
    op.add_column(
        "llm_usage_logs",
        sa.Column("cost_estimated", sa.Boolean, nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    # batch mode: SQLite before 3.35 cannot drop a column in place.
    with op.batch_alter_table("llm_usage_logs") as batch:
        batch.drop_column("cost_estimated")
