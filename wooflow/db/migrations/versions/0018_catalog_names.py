"""product_catalog.category_names, .tag_names: the names of a product's categories and
tags, beside their ids (same order, same length).

Conditions compare term ids; the console's condition builder offers them by name (GET
/v1/catalog/terms reads them). Rows recorded before this revision have no names until
their product's next event or REST read: the console shows such a term by its id.

Revision ID: 0018_catalog_names
Revises: 0017_workflows
Create Date: 2026-12-10
"""
from alembic import op

revision = "0018_catalog_names"
down_revision = "0017_workflows"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    ALTER TABLE product_catalog ADD COLUMN category_names text[] NOT NULL DEFAULT '{}';
    ALTER TABLE product_catalog ADD COLUMN tag_names text[] NOT NULL DEFAULT '{}';
    """)


def downgrade() -> None:
    op.execute("ALTER TABLE product_catalog DROP COLUMN tag_names, DROP COLUMN category_names")
