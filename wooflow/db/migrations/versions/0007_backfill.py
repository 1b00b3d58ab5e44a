"""backfill: checkpoints keyed by what the operator asked, not by the instant it meant.

`wooflow backfill --since 6h` names a different instant on every run, so a checkpoint
keyed by the instant could never be found again. A run is now identified by the store,
`--since` as asked (`TimeSpec.key`: a duration, or an absolute instant in UTC ISO form)
and the resources; the instant it reads from (`since`) is kept when the run starts and
reused when it resumes. Existing rows of absolute times keep resuming; rows left by
relative runs could not be resumed before either.

Revision ID: 0007_backfill
Revises: 0006
Create Date: 2026-11-26
"""
from alembic import op

revision = "0007_backfill"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    ALTER TABLE bridge_backfill_checkpoints
        ADD COLUMN since_spec text,
        ADD COLUMN resources text,
        ADD COLUMN started_at timestamptz NOT NULL DEFAULT now();
    UPDATE bridge_backfill_checkpoints
       SET since_spec = to_char(since AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS') || '+00:00',
           resources = resource,
           started_at = updated_at;
    ALTER TABLE bridge_backfill_checkpoints
        ALTER COLUMN since_spec SET NOT NULL,
        ALTER COLUMN resources SET NOT NULL,
        DROP CONSTRAINT bridge_backfill_checkpoints_pkey,
        ADD PRIMARY KEY (store_id, since_spec, resources, resource);
    """)


def downgrade() -> None:
    op.execute("""
    DELETE FROM bridge_backfill_checkpoints a USING bridge_backfill_checkpoints b
     WHERE a.store_id = b.store_id AND a.resource = b.resource AND a.since = b.since AND a.ctid < b.ctid;
    ALTER TABLE bridge_backfill_checkpoints
        DROP CONSTRAINT bridge_backfill_checkpoints_pkey,
        DROP COLUMN since_spec,
        DROP COLUMN resources,
        DROP COLUMN started_at,
        ADD PRIMARY KEY (store_id, resource, since);
    """)
