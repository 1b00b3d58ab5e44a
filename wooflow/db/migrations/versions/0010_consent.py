"""consent: answers read from events are recorded once.

- consents.source_ref: which event an answer was read from (`order:<id>`,
  `customer:<id>@<modified>`, `storefront:<event id>`); unique per (store, channel,
  source), so re-reading the event (a replay, a redelivered batch) records nothing new.

Revision ID: 0010_consent
Revises: 0009_leases
Create Date: 2026-11-26
"""
from alembic import op

revision = "0010_consent"
down_revision = "0009_leases"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    ALTER TABLE consents ADD COLUMN source_ref text;
    CREATE UNIQUE INDEX ux_consents_source_ref ON consents (store_id, channel, source, source_ref)
        WHERE source_ref IS NOT NULL;
    """)


def downgrade() -> None:
    op.execute("DROP INDEX ux_consents_source_ref; ALTER TABLE consents DROP COLUMN source_ref")
