"""scheduler: delayed workflow steps, carts, the customer calendar, storefront activity,
trigger firings and attributions.

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
    -- One row per workflow step waiting for its time. The rule consumer (store_delayed) and
    -- the scheduler's trigger scans insert them; `wooflow scheduler` locks due rows with
    -- FOR UPDATE SKIP LOCKED, produces them to automation.commands and marks them emitted in
    -- the same transaction, after Kafka acknowledged. status: pending | emitted | exited;
    -- claimed_by: the scheduler that emitted (or exited) the step.
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
        emitted_at timestamptz,
        exit_reason text,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX ix_scheduled_steps_due ON scheduled_steps (due_at) WHERE status = 'pending';
    CREATE INDEX ix_scheduled_steps_run ON scheduled_steps (store_id, rule_id, event_id);
    -- conversions: "which workflow touched this customer shortly before the order?"
    CREATE INDEX ix_scheduled_steps_customer ON scheduled_steps (store_id, customer_key, emitted_at)
        WHERE status = 'emitted';

    -- Storefront carts, one per browser session. customer_key is known once the shopper
    -- logs in or an email is captured (guests: g<email hash>). status:
    -- active | abandoned (trigger fired) | recovered (ordered after abandonment) | ordered
    -- (ordered before it counted as abandoned) | emptied.
    CREATE TABLE carts (
        store_id varchar(64) NOT NULL,
        session_id text NOT NULL,
        customer_key text,
        customer_id bigint,
        email text,
        first_name text NOT NULL DEFAULT '',
        items jsonb NOT NULL DEFAULT '[]'::jsonb,
        total numeric(20, 4),
        currency text NOT NULL DEFAULT '',
        status text NOT NULL DEFAULT 'active',
        last_activity_at timestamptz NOT NULL,
        items_at timestamptz,            -- time of the cart event the items come from
        abandoned_at timestamptz,
        abandon_event_id text,
        token text NOT NULL UNIQUE,
        clicked_at timestamptz,
        recovered_at timestamptz,
        recovered_order_id bigint,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (store_id, session_id)
    );
    CREATE INDEX ix_carts_active ON carts (store_id, last_activity_at) WHERE status = 'active';
    CREATE INDEX ix_carts_customer ON carts (store_id, customer_key);

    -- The dates time-based triggers look at, per customer: orders (first/last), birthday,
    -- subscription renewal and saved-card expiry (from customer meta).
    CREATE TABLE customer_calendar (
        store_id varchar(64) NOT NULL,
        customer_key text NOT NULL,
        customer_id bigint,
        email text NOT NULL DEFAULT '',
        first_name text NOT NULL DEFAULT '',
        last_name text NOT NULL DEFAULT '',
        first_order_at timestamptz,
        last_order_at timestamptz,
        last_order_id bigint,
        birth_month smallint,
        birth_day smallint,
        renewal_at timestamptz,
        card_expiry date,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (store_id, customer_key)
    );
    CREATE INDEX ix_customer_calendar_birthday ON customer_calendar (store_id, birth_month, birth_day);

    -- Storefront behaviour for behaviour triggers (kept activity_retention_days).
    CREATE TABLE storefront_activity (
        event_id text PRIMARY KEY,
        store_id varchar(64) NOT NULL,
        customer_key text NOT NULL,
        session_id text NOT NULL DEFAULT '',
        kind text NOT NULL,              -- product_viewed | category_viewed | search
        subject text NOT NULL DEFAULT '', -- product id, category id or the search query
        category text NOT NULL DEFAULT '',
        occurred_at timestamptz NOT NULL
    );
    CREATE INDEX ix_storefront_activity_kind ON storefront_activity (store_id, kind, occurred_at);
    CREATE INDEX ix_storefront_activity_session ON storefront_activity (store_id, session_id);

    -- Synthesised triggers fire once per (rule, customer, period): the year of a birthday,
    -- the inactivity episode, the card's expiry month, the abandoned cart...
    CREATE TABLE trigger_firings (
        rule_id bigint NOT NULL,
        customer_key text NOT NULL,
        period text NOT NULL,
        store_id varchar(64) NOT NULL,
        trigger text NOT NULL,
        subject text NOT NULL DEFAULT '',
        event_id text NOT NULL,
        fired_at timestamptz NOT NULL,
        PRIMARY KEY (rule_id, customer_key, period)
    );
    CREATE INDEX ix_trigger_firings_store ON trigger_firings (store_id, trigger, fired_at);

    -- Revenue attributed to a workflow: an order placed within the store's attribution
    -- window after one of the workflow's steps reached the customer (cart recovery included).
    CREATE TABLE attributions (
        store_id varchar(64) NOT NULL,
        rule_id bigint NOT NULL,
        order_id bigint NOT NULL,
        customer_key text NOT NULL,
        event_id text NOT NULL,          -- the workflow run (triggering event)
        revenue numeric(20, 4) NOT NULL,
        currency text NOT NULL DEFAULT '',
        kind text NOT NULL DEFAULT 'conversion',   -- conversion | cart_recovery
        cart_session text,
        ordered_at timestamptz NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (store_id, rule_id, order_id)
    );
    """)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS attributions, trigger_firings, storefront_activity, customer_calendar, carts, "
               "scheduled_steps")
