"""Universe membership with validity: who was in which index or market listing, when.

Revision ID: 0004_universes
Revises: 0003
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

NOW = sa.text("(CURRENT_TIMESTAMP)")

revision = "0004_universes"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "universe_members",
        sa.Column("universe", sa.String(length=24), nullable=False),
        sa.Column("symbol", sa.String(length=20), nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=False),
        sa.Column("valid_to", sa.Date(), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("market", sa.String(length=8), nullable=False),
        sa.Column("previous_symbol", sa.String(length=20), nullable=True),
        sa.Column("source", sa.String(length=24), nullable=False),
        sa.Column("flow_run_id", sa.String(length=36), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("universe", "symbol", "valid_from"),
    )
    # The as-of query and "who is a member now" both filter by universe and validity.
    op.create_index(
        "universe_members_asof", "universe_members", ["universe", "valid_from", "valid_to"]
    )


def downgrade() -> None:
    op.drop_index("universe_members_asof", table_name="universe_members")
    op.drop_table("universe_members")
