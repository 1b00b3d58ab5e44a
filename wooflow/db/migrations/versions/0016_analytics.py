"""analytics: messages, opens and clicks, conversions, holdout groups, daily counters.

- rules.holdout_percent: the share of a rule's audience held out as a control group;
- messages: one row per tracked message sent (its id is the command's idempotency key);
- engagements: the first open / click of each link of a message (machine opens apart);
- engagement_firsts / engagement_daily: the first open and the first click of each message
  (by a person, by anyone) and their counts per rule, step and day, kept by the tracker;
- message_conversions: an order credited to the last message engaged with, one per order;
  conversion_daily: their sums per rule, step, day and currency, kept by triggers;
- holdout_exposures: who a holdout rule reached or held out, when, and what they ordered
  in the window after it (kept by whoever records an exposure or an order); holdout_daily:
  their sums per rule, day and side, kept by triggers on holdout_exposures;
- customer_orders: every purchase under each key of its customer (the order's key and the
  guest they were), kept up to date with refunds: what holdout groups bought;
- execution_daily: execution logs counted per (store, rule, day, step, action, status),
  kept by the log sink as it inserts (filled here from the logs already written).

Revision ID: 0016_analytics
Revises: 0015_order_history_subscriptions
Create Date: 2026-12-08
"""
from alembic import op

revision = "0016_analytics"
down_revision = "0015_order_history_subscriptions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    ALTER TABLE rules ADD COLUMN holdout_percent double precision NOT NULL DEFAULT 0;

    CREATE TABLE messages (
        message_id text PRIMARY KEY,
        store_id varchar(64) NOT NULL,
        rule_id bigint NOT NULL,
        step integer NOT NULL,
        customer_key text NOT NULL,
        event_id text NOT NULL,
        channel text NOT NULL DEFAULT 'email',
        links jsonb NOT NULL DEFAULT '[]'::jsonb,
        sent_at timestamptz NOT NULL
    );
    CREATE INDEX ix_messages_customer ON messages (store_id, customer_key, sent_at);
    CREATE INDEX ix_messages_rule ON messages (store_id, rule_id, sent_at);

    CREATE TABLE engagements (
        message_id text NOT NULL,
        kind text NOT NULL,
        link integer NOT NULL,
        machine boolean NOT NULL,
        store_id varchar(64) NOT NULL,
        rule_id bigint NOT NULL,
        step integer NOT NULL,
        customer_key text NOT NULL,
        at timestamptz NOT NULL,
        user_agent text NOT NULL DEFAULT '',
        PRIMARY KEY (message_id, kind, link, machine)
    );
    CREATE INDEX ix_engagements_customer ON engagements (store_id, customer_key, at);

    CREATE TABLE engagement_firsts (
        message_id text NOT NULL,
        kind text NOT NULL,
        audience text NOT NULL,
        store_id varchar(64) NOT NULL,
        rule_id bigint NOT NULL,
        step integer NOT NULL,
        at timestamptz NOT NULL,
        PRIMARY KEY (message_id, kind, audience)
    );
    CREATE TABLE engagement_daily (
        store_id varchar(64) NOT NULL,
        rule_id bigint NOT NULL,
        day date NOT NULL,
        step integer NOT NULL,
        audience text NOT NULL,
        opened bigint NOT NULL DEFAULT 0,
        clicked bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (store_id, rule_id, day, step, audience)
    );
    CREATE INDEX ix_engagement_daily_day ON engagement_daily (store_id, day);

    CREATE TABLE message_conversions (
        store_id varchar(64) NOT NULL,
        order_id bigint NOT NULL,
        message_id text NOT NULL,
        rule_id bigint NOT NULL,
        step integer NOT NULL,
        customer_key text NOT NULL,
        touch text NOT NULL,
        touched_at timestamptz NOT NULL,
        ordered_at timestamptz NOT NULL,
        currency text NOT NULL DEFAULT '',
        revenue numeric(20, 4) NOT NULL,
        refunded numeric(20, 4) NOT NULL DEFAULT 0,
        voided boolean NOT NULL DEFAULT false,
        order_modified timestamptz NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (store_id, order_id)
    );
    CREATE INDEX ix_message_conversions_rule ON message_conversions (store_id, rule_id, ordered_at);
    CREATE INDEX ix_message_conversions_time ON message_conversions (store_id, ordered_at);

    -- message_conversions summed per rule, step, UTC day of the order and currency, by
    -- statement-level triggers like holdout_daily's (an update adds new minus old).
    CREATE TABLE conversion_daily (
        store_id varchar(64) NOT NULL,
        rule_id bigint NOT NULL,
        day date NOT NULL,
        step integer NOT NULL,
        currency text NOT NULL,
        conversions bigint NOT NULL DEFAULT 0,
        revenue numeric NOT NULL DEFAULT 0,
        refunded numeric NOT NULL DEFAULT 0,
        PRIMARY KEY (store_id, rule_id, day, step, currency)
    );
    CREATE INDEX ix_conversion_daily_day ON conversion_daily (store_id, day);
    CREATE FUNCTION conversion_daily_add() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NOT EXISTS (SELECT 1 FROM new_rows) THEN  -- a statement that wrote nothing (most updates)
            RETURN NULL;
        END IF;
        -- old_rows exists in update triggers only: an insert adds its rows, an update new minus old
        IF TG_OP = 'INSERT' THEN
            INSERT INTO conversion_daily AS d (store_id, rule_id, day, step, currency, conversions, revenue, refunded)
            SELECT store_id, rule_id, (ordered_at AT TIME ZONE 'UTC')::date, step, currency,
                   count(*) FILTER (WHERE NOT voided), sum(CASE WHEN voided THEN 0 ELSE revenue - refunded END),
                   sum(refunded)
            FROM new_rows GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
            ON CONFLICT (store_id, rule_id, day, step, currency) DO UPDATE SET
                conversions = d.conversions + EXCLUDED.conversions, revenue = d.revenue + EXCLUDED.revenue,
                refunded = d.refunded + EXCLUDED.refunded;
        ELSE
            INSERT INTO conversion_daily AS d (store_id, rule_id, day, step, currency, conversions, revenue, refunded)
            SELECT store_id, rule_id, day, step, currency, sum(n), sum(r), sum(f) FROM (
                SELECT store_id, rule_id, (ordered_at AT TIME ZONE 'UTC')::date AS day, step, currency,
                       (NOT voided)::int AS n, CASE WHEN voided THEN 0 ELSE revenue - refunded END AS r,
                       refunded AS f
                FROM new_rows
                UNION ALL
                SELECT store_id, rule_id, (ordered_at AT TIME ZONE 'UTC')::date, step, currency, -(NOT voided)::int,
                       -(CASE WHEN voided THEN 0 ELSE revenue - refunded END), -refunded
                FROM old_rows
            ) t GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
            ON CONFLICT (store_id, rule_id, day, step, currency) DO UPDATE SET
                conversions = d.conversions + EXCLUDED.conversions, revenue = d.revenue + EXCLUDED.revenue,
                refunded = d.refunded + EXCLUDED.refunded;
        END IF;
        RETURN NULL;
    END $$;

    CREATE TABLE holdout_exposures (
        rule_id bigint NOT NULL,
        customer_key text NOT NULL,
        store_id varchar(64) NOT NULL,
        held_out boolean NOT NULL,
        event_id text NOT NULL,
        exposed_at timestamptz NOT NULL,
        orders integer NOT NULL DEFAULT 0,
        revenue numeric(20, 4) NOT NULL DEFAULT 0,
        recorded_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (rule_id, customer_key)
    );
    CREATE INDEX ix_holdout_exposures_customer ON holdout_exposures (store_id, customer_key);
    CREATE INDEX ix_holdout_exposures_rule ON holdout_exposures (store_id, rule_id, exposed_at);
    CREATE INDEX ix_holdout_exposures_recorded ON holdout_exposures (recorded_at);

    -- holdout_exposures summed per rule, UTC day and side, by statement-level triggers: a
    -- statement adds what its rows added (insert) or changed (update: new minus old), read
    -- from the exact row versions it wrote, however many writers run at once. Only orders
    -- and revenue of an exposure ever change; rows are deleted with their rule, and the
    -- API deletes the rule's sums with them.
    CREATE TABLE holdout_daily (
        store_id varchar(64) NOT NULL,
        rule_id bigint NOT NULL,
        day date NOT NULL,
        held_out boolean NOT NULL,
        customers bigint NOT NULL DEFAULT 0,
        converted bigint NOT NULL DEFAULT 0,
        revenue numeric NOT NULL DEFAULT 0,
        revenue_sq numeric NOT NULL DEFAULT 0,
        PRIMARY KEY (store_id, rule_id, day, held_out)
    );
    CREATE FUNCTION holdout_daily_add() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NOT EXISTS (SELECT 1 FROM new_rows) THEN  -- a statement that wrote nothing (most updates)
            RETURN NULL;
        END IF;
        IF TG_OP = 'INSERT' THEN
            INSERT INTO holdout_daily AS d (store_id, rule_id, day, held_out, customers, converted, revenue, revenue_sq)
            SELECT store_id, rule_id, (exposed_at AT TIME ZONE 'UTC')::date, held_out, count(*),
                   count(*) FILTER (WHERE orders > 0), sum(revenue), sum(revenue * revenue)
            FROM new_rows GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
            ON CONFLICT (store_id, rule_id, day, held_out) DO UPDATE SET customers = d.customers + EXCLUDED.customers,
                converted = d.converted + EXCLUDED.converted, revenue = d.revenue + EXCLUDED.revenue,
                revenue_sq = d.revenue_sq + EXCLUDED.revenue_sq;
        ELSE
            INSERT INTO holdout_daily AS d (store_id, rule_id, day, held_out, customers, converted, revenue, revenue_sq)
            SELECT store_id, rule_id, day, held_out, 0, sum(v), sum(r), sum(q) FROM (
                SELECT store_id, rule_id, (exposed_at AT TIME ZONE 'UTC')::date AS day, held_out,
                       (orders > 0)::int AS v, revenue AS r, revenue * revenue AS q FROM new_rows
                UNION ALL
                SELECT store_id, rule_id, (exposed_at AT TIME ZONE 'UTC')::date, held_out, -(orders > 0)::int,
                       -revenue, -(revenue * revenue) FROM old_rows
            ) t GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
            ON CONFLICT (store_id, rule_id, day, held_out) DO UPDATE SET customers = d.customers + EXCLUDED.customers,
                converted = d.converted + EXCLUDED.converted, revenue = d.revenue + EXCLUDED.revenue,
                revenue_sq = d.revenue_sq + EXCLUDED.revenue_sq;
        END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER holdout_daily_insert AFTER INSERT ON holdout_exposures REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION holdout_daily_add();
    CREATE TRIGGER conversion_daily_insert AFTER INSERT ON message_conversions REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION conversion_daily_add();
    CREATE TRIGGER conversion_daily_update AFTER UPDATE ON message_conversions
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION conversion_daily_add();
    CREATE TRIGGER holdout_daily_update AFTER UPDATE ON holdout_exposures
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION holdout_daily_add();

    CREATE TABLE customer_orders (
        store_id varchar(64) NOT NULL,
        customer_key text NOT NULL,
        order_id bigint NOT NULL,
        ordered_at timestamptz NOT NULL,
        currency text NOT NULL DEFAULT '',
        revenue numeric(20, 4) NOT NULL,
        refunded numeric(20, 4) NOT NULL DEFAULT 0,
        voided boolean NOT NULL DEFAULT false,
        order_modified timestamptz NOT NULL,
        PRIMARY KEY (store_id, customer_key, order_id)
    );
    CREATE INDEX ix_customer_orders_time ON customer_orders (store_id, customer_key, ordered_at);
    CREATE INDEX ix_customer_orders_order ON customer_orders (store_id, order_id);

    CREATE TABLE execution_daily (
        store_id varchar(64) NOT NULL,
        rule_id bigint NOT NULL,
        day date NOT NULL,
        step integer NOT NULL,
        action_type text NOT NULL,
        status text NOT NULL,
        n bigint NOT NULL,
        PRIMARY KEY (store_id, rule_id, day, step, action_type, status)
    );
    CREATE INDEX ix_execution_daily_day ON execution_daily (store_id, day);

    INSERT INTO execution_daily (store_id, rule_id, day, step, action_type, status, n)
    SELECT store_id, rule_id, (executed_at AT TIME ZONE 'UTC')::date, step, action_type, status, count(*)
    FROM execution_logs WHERE NOT dry_run
    GROUP BY 1, 2, 3, 4, 5, 6;
    """)


def downgrade() -> None:
    op.execute("""
    DROP TABLE execution_daily; DROP TABLE customer_orders; DROP TABLE holdout_exposures; DROP TABLE holdout_daily;
    DROP FUNCTION holdout_daily_add(); DROP TABLE conversion_daily; DROP FUNCTION conversion_daily_add();
    DROP TABLE message_conversions; DROP TABLE engagement_daily; DROP TABLE engagement_firsts;
    DROP TABLE engagements; DROP TABLE messages;
    ALTER TABLE rules DROP COLUMN holdout_percent;
    """)
