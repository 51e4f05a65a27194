"""Quality flags, the re-base log, and one rejected_rows row per refused row.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

import hashlib
import json

import sqlalchemy as sa
from alembic import op

NOW = sa.text("(CURRENT_TIMESTAMP)")

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _fingerprint(table_name, row_key, reason, payload) -> str:
    # The same recipe as tasks.validate.fingerprint, frozen here as migrations must be.
    if isinstance(payload, str):
        payload = json.loads(payload)
    text = json.dumps([table_name, row_key, reason, payload], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def upgrade() -> None:
    op.create_table(
        "quality_flags",
        sa.Column("entity", sa.String(length=40), nullable=False),
        sa.Column("flag_date", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("flow_run_id", sa.String(length=36), nullable=True),
        sa.Column("flagged_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("entity", "flag_date", "kind"),
    )
    op.create_index("ix_quality_flags_kind", "quality_flags", ["kind", "flag_date"])
    op.create_table(
        "price_rebases",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("symbol", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("first_date", sa.Date(), nullable=True),
        sa.Column("last_date", sa.Date(), nullable=True),
        sa.Column("rows_changed", sa.Integer(), nullable=False),
        sa.Column("flow_run_id", sa.String(length=36), nullable=True),
        sa.Column("rebased_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_price_rebases_symbol", "price_rebases", ["symbol", "rebased_at"])

    op.add_column("rejected_rows", sa.Column("fingerprint", sa.String(length=64), nullable=True))
    bind = op.get_bind()
    rows = bind.execute(
        sa.text("SELECT id, table_name, row_key, reason, payload FROM rejected_rows ORDER BY id")
    ).all()
    seen: set[str] = set()
    for row_id, table_name, row_key, reason, payload in rows:
        mark = _fingerprint(table_name, row_key, reason, payload)
        if mark in seen:  # a re-run recorded it again: keep the first
            bind.execute(sa.text("DELETE FROM rejected_rows WHERE id = :i"), {"i": row_id})
            continue
        seen.add(mark)
        bind.execute(
            sa.text("UPDATE rejected_rows SET fingerprint = :f WHERE id = :i"),
            {"f": mark, "i": row_id},
        )
    op.create_index("ux_rejected_rows_fingerprint", "rejected_rows", ["fingerprint"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_rejected_rows_fingerprint", table_name="rejected_rows")
    with op.batch_alter_table("rejected_rows") as batch:
        batch.drop_column("fingerprint")
    op.drop_index("ix_price_rebases_symbol", table_name="price_rebases")
    op.drop_table("price_rebases")
    op.drop_index("ix_quality_flags_kind", table_name="quality_flags")
    op.drop_table("quality_flags")
