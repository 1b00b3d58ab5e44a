"""Order marks, customer roles and purchase history, and subscription state.

- `order_state.marks`: what an order event decided once and a replay must decide again the
  same way: the event that first saw the order paid (`date_paid` set), the refunds seen
  (total refunded and its last transitions by event id).
- `customer_state.role` (the account's role, from customer events: order events read it)
  and `customer_state.history` (the counted orders behind the purchase-history fields:
  products, paid dates, totals over a period; written only for stores whose rules read it).
- `subscription_state`: WooCommerce Subscriptions' subscriptions as the rule consumer last
  applied them (status and its transitions, products, next payment, trial end); the
  scheduler's renewal and trial-end scans read it.

Revision ID: 0015_order_history_subscriptions
Revises: 0014_console
Create Date: 2026-12-10
"""
from alembic import op

revision = "0015_order_history_subscriptions"
down_revision = "0014_console"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    ALTER TABLE order_state ADD COLUMN marks jsonb NOT NULL DEFAULT '{}'::jsonb;
    ALTER TABLE customer_state ADD COLUMN role text;
    ALTER TABLE customer_state ADD COLUMN history jsonb;
    CREATE TABLE subscription_state (
        store_id varchar(64) NOT NULL,
        subscription_id bigint NOT NULL,
        customer_key text NOT NULL,
        email text NOT NULL DEFAULT '',           -- the subscription's billing email
        first_event_id text NOT NULL,
        status text NOT NULL DEFAULT '',
        modified_ms bigint NOT NULL DEFAULT 0,
        transitions jsonb NOT NULL DEFAULT '[]'::jsonb,
        product_ids bigint[] NOT NULL DEFAULT '{}',
        billing_period text NOT NULL DEFAULT '',
        billing_interval int NOT NULL DEFAULT 1,
        total numeric(20, 4) NOT NULL DEFAULT 0,
        currency text NOT NULL DEFAULT '',
        next_payment_at timestamptz,
        trial_end_at timestamptz,
        end_at timestamptz,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (store_id, subscription_id)
    );
    CREATE INDEX ix_subscription_state_customer ON subscription_state (store_id, customer_key);
    CREATE INDEX ix_subscription_state_next_payment ON subscription_state (store_id, next_payment_at)
        WHERE status = 'active';
    """)


def downgrade() -> None:
    op.execute("""
    DROP TABLE subscription_state;
    ALTER TABLE customer_state DROP COLUMN history;
    ALTER TABLE customer_state DROP COLUMN role;
    ALTER TABLE order_state DROP COLUMN marks;
    """)
