"""state_levels: how much state the rule consumer keeps for each store, and since when.

A store pays only for the state its rules read (consumer/needs.py): per-order first
sight, order status, or everything (customer aggregates). When a rule needing more is
added, the consumer starts keeping it from then on and records the moment here; the rules
API's dry run shows it.

Revision ID: 0012_state_levels
Revises: 0011_link_key
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

revision = "0012_state_levels"
down_revision = "0011_link_key"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "state_levels",
        sa.Column("store_id", sa.String(64), sa.ForeignKey("stores.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("keeps", sa.SmallInteger, nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )


def downgrade() -> None:
    op.drop_table("state_levels")
