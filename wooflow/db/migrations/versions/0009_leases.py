"""workers: who holds a claim, and how often its attempts were interrupted.

- action_executions.owner: the worker instance (a random id per process start) that
  holds or last held the claim; lease renewals extend only the owner's own rows.
- action_executions.interrupted: how many times the key was recovered from a worker
  that stopped mid-action (its lease expired while `running`); effects that cannot be
  looked up are repeated at most once after that (workers/executor.py).

Revision ID: 0009_leases
Revises: 0008_identity
Create Date: 2026-11-26
"""
from alembic import op

revision = "0009_leases"
down_revision = "0008_identity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    ALTER TABLE action_executions ADD COLUMN owner text, ADD COLUMN interrupted integer NOT NULL DEFAULT 0;
    """)


def downgrade() -> None:
    op.execute("ALTER TABLE action_executions DROP COLUMN owner, DROP COLUMN interrupted")
