"""workers (consent, tasks, deferred commands, execution messages).

- consents: one row per consent event (granted or withdrawn) with its source and time; the
  newest row per (store, customer, channel) is the customer's current answer.
- tasks: admin tasks created by the create_admin_task action (one per idempotency key).
- deferred_commands: commands whose time has not come yet (delayed steps, retries with
  backoff, keys busy in another worker), kept durably until a worker re-produces them
  to their topic (one database may serve deployments with different topic prefixes).
- action_executions.message: the outcome text, so a redelivered finished command can
  re-emit its execution log.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    CREATE TABLE consents (
        id bigserial PRIMARY KEY,
        store_id varchar(64) NOT NULL,
        customer_key text,
        email text,
        channel text NOT NULL DEFAULT 'email',
        granted boolean NOT NULL,
        source text NOT NULL DEFAULT '',
        details jsonb NOT NULL DEFAULT '{}'::jsonb,
        recorded_at timestamptz NOT NULL DEFAULT now(),
        CHECK (customer_key IS NOT NULL OR email IS NOT NULL)
    );
    CREATE INDEX ix_consents_email ON consents (store_id, email, channel, recorded_at DESC);
    CREATE INDEX ix_consents_customer ON consents (store_id, customer_key, channel, recorded_at DESC);

    CREATE TABLE tasks (
        id bigserial PRIMARY KEY,
        store_id varchar(64) NOT NULL,
        idempotency_key text NOT NULL UNIQUE,
        rule_id bigint,
        customer_key text,
        subject_type text NOT NULL DEFAULT '',
        subject_id text NOT NULL DEFAULT '',
        title text NOT NULL,
        description text NOT NULL DEFAULT '',
        assignee text NOT NULL DEFAULT '',
        priority text NOT NULL DEFAULT 'normal',
        status text NOT NULL DEFAULT 'open',
        due_at timestamptz,
        created_at timestamptz NOT NULL DEFAULT now(),
        completed_at timestamptz,
        completed_by text
    );
    CREATE INDEX ix_tasks_store_status ON tasks (store_id, status, created_at);

    CREATE TABLE deferred_commands (
        topic text NOT NULL,
        idempotency_key text NOT NULL,
        attempt integer NOT NULL,
        store_id varchar(64) NOT NULL,
        due_at timestamptz NOT NULL,
        reason text NOT NULL,
        kafka_key bytea,
        payload bytea NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (topic, idempotency_key, attempt)
    );
    CREATE INDEX ix_deferred_commands_due ON deferred_commands (topic, due_at);

    ALTER TABLE action_executions ADD COLUMN message text NOT NULL DEFAULT '';
    """)


def downgrade() -> None:
    op.execute("""
    ALTER TABLE action_executions DROP COLUMN message;
    DROP TABLE deferred_commands, tasks, consents;
    """)
