"""bridge (webhook receipts, outbox, backfill checkpoints, storefront sessions).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    -- Every change the bridge let into Kafka, by content-derived event id: the dedupe store
    -- shared by webhooks, backfill, the poller and storefront events. 'pending' = claimed,
    -- not yet acknowledged by Kafka (reclaimable once stale, so a crash never loses a change).
    CREATE TABLE bridge_seen (
        event_id text PRIMARY KEY,
        store_id varchar(64) NOT NULL,
        state text NOT NULL DEFAULT 'pending',
        claimed_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX ix_bridge_seen_claimed ON bridge_seen (claimed_at);

    -- Durable outbox for Kafka outages: drained in seq order by one bridge at a time.
    CREATE TABLE bridge_outbox (
        seq bigserial PRIMARY KEY,
        event_id text NOT NULL,
        store_id varchar(64) NOT NULL,
        topic text NOT NULL,
        key text NOT NULL,
        value bytea NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    );

    -- Deliveries whose resource was gone when WooCommerce built the payload.
    CREATE TABLE bridge_gone_deliveries (
        id bigserial PRIMARY KEY,
        store_id varchar(64) NOT NULL,
        topic text NOT NULL,
        webhook_id text NOT NULL DEFAULT '',
        code text NOT NULL DEFAULT '',
        body text NOT NULL DEFAULT '',
        received_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX ix_bridge_gone_store ON bridge_gone_deliveries (store_id, received_at);

    CREATE TABLE bridge_backfill_checkpoints (
        store_id varchar(64) NOT NULL REFERENCES stores(id) ON DELETE CASCADE,
        resource text NOT NULL,
        since timestamptz NOT NULL,
        next_page integer NOT NULL DEFAULT 1,
        total_pages integer,
        total_items integer,
        produced bigint NOT NULL DEFAULT 0,
        duplicates bigint NOT NULL DEFAULT 0,
        done boolean NOT NULL DEFAULT false,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (store_id, resource, since)
    );

    CREATE TABLE bridge_poller_state (
        store_id varchar(64) NOT NULL REFERENCES stores(id) ON DELETE CASCADE,
        resource text NOT NULL,
        watermark timestamptz NOT NULL,
        polled_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (store_id, resource)
    );

    -- Storefront session -> resolved customer key (guest email hash, then customer id).
    CREATE TABLE storefront_sessions (
        store_id varchar(64) NOT NULL,
        session_id text NOT NULL,
        customer_key text NOT NULL,
        customer_id bigint,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (store_id, session_id)
    );

    -- Webhooks wooflow created in a store (so `stores remove` can delete them).
    CREATE TABLE store_webhooks (
        store_id varchar(64) NOT NULL REFERENCES stores(id) ON DELETE CASCADE,
        webhook_id bigint NOT NULL,
        topic text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (store_id, webhook_id)
    );
    """)


def downgrade() -> None:
    op.execute("DROP TABLE store_webhooks, storefront_sessions, bridge_poller_state, bridge_backfill_checkpoints, "
               "bridge_gone_deliveries, bridge_outbox, bridge_seen")
