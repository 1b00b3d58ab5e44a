"""execution_logs indexes for the console's log explorer: keyset pages and filters.

The explorer pages newest first by (executed_at, log_id) — a keyset, so page 1,000 costs
what page 1 costs — and filters by customer or status. With a million rows of a store,
each of those is an index range scan instead of a walk over the store's whole log:
- (store_id, executed_at, log_id) replaces (store_id, executed_at): the cursor's row
  comparison `(executed_at, log_id) < (t, id)` is an index condition;
- (store_id, customer_key, executed_at) and (store_id, status, executed_at): one customer's
  or one status' entries, newest first.
Built in the migration's transaction (like every revision): the sink's inserts wait while
an existing log is indexed: 14 s for 1.1 million rows (bench/console, at load 17).

Revision ID: 0014_console
Revises: 0013_catalog
Create Date: 2026-12-08
"""
from alembic import op

revision = "0014_console"
down_revision = "0013_catalog"
branch_labels = None
depends_on = None

NEW = {
    "ix_execution_logs_store_time_id": ["store_id", "executed_at", "log_id"],
    "ix_execution_logs_customer": ["store_id", "customer_key", "executed_at"],
    "ix_execution_logs_status": ["store_id", "status", "executed_at"],
}


def upgrade() -> None:
    for name, columns in NEW.items():
        op.create_index(name, "execution_logs", columns, if_not_exists=True)
    op.drop_index("ix_execution_logs_store_time", "execution_logs", if_exists=True)


def downgrade() -> None:
    op.create_index("ix_execution_logs_store_time", "execution_logs", ["store_id", "executed_at"], if_not_exists=True)
    for name in NEW:
        op.drop_index(name, "execution_logs", if_exists=True)
