"""identity: one person per shopper (guest email ↔ registered customer) and the customer
each order was keyed by.

Revision ID: 0008_identity
Revises: 0007_backfill
Create Date: 2026-11-26
"""
from alembic import op

revision = "0008_identity"
down_revision = "0007_backfill"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    -- The bridge's identity map: a guest email (hashed like the g<hash> customer key) that
    -- belongs to a registered customer. source: account (the customer resource's email,
    -- authoritative) | order (a billing email of one of the customer's orders; never
    -- overrides an account email).
    CREATE TABLE customer_identities (
        store_id varchar(64) NOT NULL,
        email_hash text NOT NULL,
        customer_id bigint NOT NULL,
        source text NOT NULL DEFAULT 'order',
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (store_id, email_hash)
    );
    -- The customer key every order's events were produced with: order.deleted deliveries
    -- and failed REST read-backs carry no customer and take this key.
    CREATE TABLE order_owners (
        store_id varchar(64) NOT NULL,
        order_id bigint NOT NULL,
        customer_key text NOT NULL,
        PRIMARY KEY (store_id, order_id)
    );
    -- A guest row folded into a registered customer's keeps its values and points here.
    ALTER TABLE customer_state ADD COLUMN merged_into text;
    CREATE INDEX ix_customer_state_merged ON customer_state (store_id, merged_into) WHERE merged_into IS NOT NULL;
    -- A guest's frequency limits, carts, storefront history, scheduler trigger firings and
    -- attributions move to the registered customer by key.
    CREATE INDEX ix_rule_firings_customer ON rule_firings (customer_key);
    CREATE INDEX ix_storefront_activity_customer ON storefront_activity (store_id, customer_key);
    CREATE INDEX ix_attributions_customer ON attributions (store_id, customer_key);
    CREATE INDEX ix_trigger_firings_customer ON trigger_firings (customer_key);
    """)


def downgrade() -> None:
    op.execute("""
    DROP INDEX IF EXISTS ix_trigger_firings_customer;
    DROP INDEX IF EXISTS ix_attributions_customer;
    DROP INDEX IF EXISTS ix_storefront_activity_customer;
    DROP INDEX IF EXISTS ix_rule_firings_customer;
    DROP INDEX IF EXISTS ix_customer_state_merged;
    ALTER TABLE customer_state DROP COLUMN IF EXISTS merged_into;
    DROP TABLE IF EXISTS order_owners;
    DROP TABLE IF EXISTS customer_identities;
    """)
