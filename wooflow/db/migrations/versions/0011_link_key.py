"""stores.link_key: the key that signs the links wooflow puts in messages (unsubscribe).

Links used to be signed with a key derived from the webhook secret, so rotating that
secret (`wooflow stores add --rotate-secret`) broke the unsubscribe link of every message
already sent. Each store now has a key of its own that a rotation leaves alone. Existing
stores get exactly the key their links were signed with (HMAC-SHA256 of the webhook secret),
so links already in inboxes keep working; new stores get 256 random bits.

Revision ID: 0011_link_key
Revises: 0010_consent
Create Date: 2026-12-06
"""
import hashlib
import hmac

import sqlalchemy as sa
from alembic import op

revision = "0011_link_key"
down_revision = "0010_consent"
branch_labels = None
depends_on = None

RANDOM_KEY = "replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '')"


def upgrade() -> None:
    op.execute("ALTER TABLE stores ADD COLUMN link_key text")
    conn = op.get_bind()
    for store_id, secret in conn.execute(sa.text("SELECT id, webhook_secret FROM stores")).all():
        key = hmac.new(secret.encode(), b"wooflow-unsubscribe", hashlib.sha256).hexdigest()
        conn.execute(sa.text("UPDATE stores SET link_key = :k WHERE id = :id"), {"k": key, "id": store_id})
    op.execute(f"ALTER TABLE stores ALTER COLUMN link_key SET DEFAULT {RANDOM_KEY}")
    op.execute("ALTER TABLE stores ALTER COLUMN link_key SET NOT NULL")


def downgrade() -> None:
    op.execute("ALTER TABLE stores DROP COLUMN link_key")
