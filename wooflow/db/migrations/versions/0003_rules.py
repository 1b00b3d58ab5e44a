"""rule engine (customer/order state, frequency limits, rule audit, rule change notifications).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    -- The last state wooflow stored for every order: where "status changed from X" comes
    -- from (payloads collapse intermediate states), whether an order id was seen before
    -- (new_order fires once), and whether it counts towards the customer's totals.
    -- Every column is written so that applying the same event twice changes nothing.
    CREATE TABLE order_state (
        store_id varchar(64) NOT NULL,
        order_id bigint NOT NULL,
        customer_key text NOT NULL,
        status text NOT NULL DEFAULT '',
        modified_ms bigint NOT NULL DEFAULT 0,        -- date_modified of the newest applied event
        first_event_id text NOT NULL,                 -- the event that first saw the order
        transitions jsonb NOT NULL DEFAULT '[]'::jsonb, -- last few [event_id, from, to]
        total numeric(20, 4) NOT NULL DEFAULT 0,
        currency text NOT NULL DEFAULT '',
        created_ms bigint NOT NULL DEFAULT 0,
        counted boolean NOT NULL DEFAULT false,      -- part of order_count / totals now
        count_event_id text,                         -- the event that last (un)counted it
        before jsonb,                                -- customer aggregates just before that event
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (store_id, order_id)
    );
    CREATE INDEX ix_order_state_customer ON order_state (store_id, customer_key);

    -- Rule-engine bookkeeping per customer (created event, storefront high-water mark),
    -- kept apart from `attributes`, which actions may write.
    ALTER TABLE customer_state ADD COLUMN engine jsonb NOT NULL DEFAULT '{}'::jsonb;

    -- Frequency limits: one row per (rule, customer), checked and written by the consumer
    -- in the same transaction as the state. Times are event times, so replays decide alike.
    CREATE TABLE rule_firings (
        rule_id bigint NOT NULL REFERENCES rules(id) ON DELETE CASCADE,
        customer_key text NOT NULL,
        store_id varchar(64) NOT NULL,
        first_event_id text NOT NULL,
        last_event_id text NOT NULL,
        last_fired_at timestamptz NOT NULL,
        fired integer NOT NULL DEFAULT 1,
        PRIMARY KEY (rule_id, customer_key)
    );

    -- Who changed which rule, and every dry run (flagged dry_run).
    CREATE TABLE rule_audit (
        id bigserial PRIMARY KEY,
        store_id varchar(64) NOT NULL,
        rule_id bigint,
        action text NOT NULL,                        -- created | updated | deleted | dry_run
        dry_run boolean NOT NULL DEFAULT false,
        actor text NOT NULL DEFAULT '',
        details jsonb NOT NULL DEFAULT '{}'::jsonb,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX ix_rule_audit_store ON rule_audit (store_id, rule_id, created_at);
    CREATE INDEX ix_execution_logs_status ON execution_logs (store_id, status, executed_at);

    -- Rule changes reach every running consumer at once: they LISTEN on this channel
    -- (and re-check a fingerprint periodically in case a notification was missed).
    CREATE FUNCTION wooflow_rules_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'DELETE' THEN
            PERFORM pg_notify('wooflow_rules', json_build_object('op', TG_OP, 'store_id', OLD.store_id, 'id', OLD.id)::text);
        ELSE
            PERFORM pg_notify('wooflow_rules', json_build_object('op', TG_OP, 'store_id', NEW.store_id, 'id', NEW.id)::text);
        END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER rules_notify AFTER INSERT OR UPDATE OR DELETE ON rules
        FOR EACH ROW EXECUTE FUNCTION wooflow_rules_notify();
    """)


def downgrade() -> None:
    op.execute("""
    DROP TRIGGER IF EXISTS rules_notify ON rules;
    DROP FUNCTION IF EXISTS wooflow_rules_notify();
    DROP INDEX IF EXISTS ix_execution_logs_status;
    DROP TABLE IF EXISTS rule_audit, rule_firings, order_state;
    ALTER TABLE customer_state DROP COLUMN IF EXISTS engine;
    """)
