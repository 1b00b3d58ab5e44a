"""product_catalog: each store's products as rule conditions need them, and geo_scope's
old meaning kept for existing rules under its own name.

WooCommerce's order line items carry a product and a variation id, never categories or
tags; the rule consumer keeps every store's products here (from `woo.products`, and from
the store's REST API for a product it meets before its event) so that `category` and
`product_tag` conditions resolve through it. Only the rule consumer writes it.

`geo_scope` now has Polski Pro's meaning: one value per order (Poland is `pl`, not also
`eu` and `eea`). Rules stored before this revision were written against the old,
multi-valued meaning, which lives on as `geo_regions`: their `geo_scope` conditions are
renamed, so every existing rule matches exactly the orders it matched before. Each
renamed rule gets a `rule_audit` entry (actor `migration 0013_catalog`).

Revision ID: 0013_catalog
Revises: 0012_state_levels
Create Date: 2026-12-08
"""
import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0013_catalog"
down_revision = "0012_state_levels"
branch_labels = None
depends_on = None
ACTOR = "migration 0013_catalog"


def upgrade() -> None:
    op.execute("""
    CREATE TABLE product_catalog (
        store_id varchar(64) NOT NULL,
        product_id bigint NOT NULL,
        parent_id bigint NOT NULL DEFAULT 0,      -- a variation's variable product
        type text NOT NULL DEFAULT '',
        status text NOT NULL DEFAULT '',
        category_ids bigint[] NOT NULL DEFAULT '{}',
        tag_ids bigint[] NOT NULL DEFAULT '{}',
        modified_ms bigint NOT NULL DEFAULT 0,    -- the product's date_modified; newer rows win
        source text NOT NULL DEFAULT 'event',     -- event | rest | gone (the store answered 404)
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (store_id, product_id)
    )""")
    _rename_geo_scope(op.get_bind(), "geo_scope", "geo_regions")


def downgrade() -> None:
    _rename_geo_scope(op.get_bind(), "geo_regions", "geo_scope")
    op.execute("DROP TABLE product_catalog")


def _renamed(node: Any, old: str, new: str) -> Any:
    if isinstance(node, dict):
        if node.get("field") == old:
            return {**node, "field": new}
        return {k: _renamed(v, old, new) for k, v in node.items()}
    if isinstance(node, list):
        return [_renamed(v, old, new) for v in node]
    return node


def _rename_geo_scope(conn: Any, old: str, new: str) -> None:
    rows = conn.execute(sa.text("SELECT id, store_id, conditions FROM rules WHERE conditions::text LIKE :pat"),
                        {"pat": f'%"{old}"%'}).all()
    for rule_id, store_id, conditions in rows:
        renamed = _renamed(conditions, old, new)
        if renamed == conditions:
            continue
        conn.execute(sa.text("UPDATE rules SET conditions = CAST(:c AS jsonb) WHERE id = :id"),
                     {"c": json.dumps(renamed), "id": rule_id})
        conn.execute(sa.text("INSERT INTO rule_audit (store_id, rule_id, action, actor, details) "
                             "VALUES (:s, :r, 'updated', :actor, CAST(:d AS jsonb))"),
                     {"s": store_id, "r": rule_id, "actor": ACTOR,
                      "d": json.dumps({"renamed_field": {"from": old, "to": new},
                                       "why": "geo_scope now has one value per order (Polski Pro's meaning); "
                                              "geo_regions keeps the old one, so this rule matches as before"})})
