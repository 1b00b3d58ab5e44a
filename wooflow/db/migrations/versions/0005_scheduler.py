"""scheduler: delayed workflow steps, held in PostgreSQL until due.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    CREATE TABLE scheduled_steps (
        idempotency_key text PRIMARY KEY,
        store_id varchar(64) NOT NULL,
        customer_key text NOT NULL,
        rule_id bigint NOT NULL,
        event_id text NOT NULL,
        step integer NOT NULL,
        due_at timestamptz NOT NULL,
        command jsonb NOT NULL,
        status text NOT NULL DEFAULT 'pending',
        claimed_by text,
        claimed_until timestamptz,
        emitted_at timestamptz,
        exit_reason text,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX ix_scheduled_steps_due ON scheduled_steps (due_at) WHERE status = 'pending';
    CREATE INDEX ix_scheduled_steps_run ON scheduled_steps (store_id, rule_id, event_id);
    """)


def downgrade() -> None:
    op.execute("DROP TABLE scheduled_steps")
