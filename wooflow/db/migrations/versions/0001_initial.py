"""Initial tables: stores, rules, customer_state, action_executions, execution_logs, api_tokens.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    CREATE TABLE stores (
        id varchar(64) PRIMARY KEY,
        name text NOT NULL DEFAULT '',
        url text NOT NULL,
        webhook_secret text NOT NULL,
        consumer_key text NOT NULL DEFAULT '',
        consumer_secret text NOT NULL DEFAULT '',
        timezone text NOT NULL DEFAULT 'UTC',
        currency text NOT NULL DEFAULT 'USD',
        public_key text NOT NULL DEFAULT '',
        settings jsonb NOT NULL DEFAULT '{}'::jsonb,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE rules (
        id bigserial PRIMARY KEY,
        store_id varchar(64) NOT NULL REFERENCES stores(id) ON DELETE CASCADE,
        name text NOT NULL,
        trigger text NOT NULL,
        trigger_options jsonb NOT NULL DEFAULT '{}'::jsonb,
        conditions jsonb NOT NULL DEFAULT '{}'::jsonb,
        actions jsonb NOT NULL DEFAULT '[]'::jsonb,
        priority integer NOT NULL DEFAULT 10,
        enabled boolean NOT NULL DEFAULT true,
        group_label text NOT NULL DEFAULT '',
        frequency jsonb NOT NULL DEFAULT '{}'::jsonb,
        exit_conditions jsonb NOT NULL DEFAULT '[]'::jsonb,
        version integer NOT NULL DEFAULT 1,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX ix_rules_match ON rules (store_id, enabled, trigger, priority, group_label);
    CREATE TABLE customer_state (
        store_id varchar(64) NOT NULL,
        customer_key text NOT NULL,
        customer_id bigint,
        email text,
        order_count integer NOT NULL DEFAULT 0,
        totals jsonb NOT NULL DEFAULT '{}'::jsonb,
        first_order_at timestamptz,
        last_order_at timestamptz,
        tier text NOT NULL DEFAULT '',
        points bigint NOT NULL DEFAULT 0,
        tags text[] NOT NULL DEFAULT '{}'::text[],
        view_counts jsonb NOT NULL DEFAULT '{}'::jsonb,
        attributes jsonb NOT NULL DEFAULT '{}'::jsonb,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (store_id, customer_key)
    );
    CREATE TABLE action_executions (
        idempotency_key text PRIMARY KEY,
        store_id varchar(64) NOT NULL,
        rule_id bigint NOT NULL,
        event_id text NOT NULL,
        step integer NOT NULL,
        action_type text NOT NULL,
        status text NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        lease_until timestamptz,
        result jsonb NOT NULL DEFAULT '{}'::jsonb,
        error text,
        created_at timestamptz NOT NULL DEFAULT now(),
        finished_at timestamptz
    );
    CREATE INDEX ix_action_executions_store_rule ON action_executions (store_id, rule_id);
    CREATE TABLE execution_logs (
        log_id text PRIMARY KEY,
        idempotency_key text NOT NULL,
        store_id varchar(64) NOT NULL,
        customer_key text NOT NULL,
        rule_id bigint NOT NULL,
        event_id text NOT NULL,
        step integer NOT NULL,
        action_type text NOT NULL,
        status text NOT NULL,
        message text NOT NULL DEFAULT '',
        attempt integer NOT NULL DEFAULT 1,
        duration_ms double precision NOT NULL DEFAULT 0,
        dry_run boolean NOT NULL DEFAULT false,
        details jsonb NOT NULL DEFAULT '{}'::jsonb,
        executed_at timestamptz NOT NULL,
        received_at timestamptz,
        logged_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX ix_execution_logs_store_time ON execution_logs (store_id, executed_at);
    CREATE INDEX ix_execution_logs_rule ON execution_logs (store_id, rule_id, executed_at);
    CREATE TABLE api_tokens (
        token_hash text PRIMARY KEY,
        store_id varchar(64) REFERENCES stores(id) ON DELETE CASCADE,
        name text NOT NULL DEFAULT '',
        created_at timestamptz NOT NULL DEFAULT now()
    );
    """)


def downgrade() -> None:
    op.execute("DROP TABLE api_tokens, execution_logs, action_executions, customer_state, rules, stores")
