"""Loyalty actions on wooflow's own customer state: change tier, add points.

Both are applied in the same PostgreSQL transaction that records the command as
finished, so a points grant happens exactly once however often the command is delivered.
"""

from __future__ import annotations

from collections import defaultdict
from typing import ClassVar

from pydantic import BaseModel, Field
from sqlalchemy import Connection, text

from wooflow.people import person_rows
from wooflow.workers.actions.common import customer_id
from wooflow.workers.registry import ActionContext, ActionResult, BaseAction, InterruptPolicy

# Keyed by person (wooflow/people.py: a merged guest's command changes the customer), the
# result mapped back to the command's key.
_POINTS = text(f"""
WITH t AS ({person_rows("bigint")}), up AS (
    INSERT INTO customer_state AS cs (store_id, customer_key, customer_id, points, updated_at)
    SELECT s, pk, max(cid), sum(v), now() FROM t GROUP BY s, pk
    ON CONFLICT (store_id, customer_key) DO UPDATE SET points = cs.points + EXCLUDED.points, updated_at = now()
    RETURNING store_id, customer_key, points)
SELECT t.s, t.k, up.points FROM t JOIN up ON up.store_id = t.s AND up.customer_key = t.pk
""")

_TIER = text(f"""
WITH t AS ({person_rows("text")}), up AS (
    INSERT INTO customer_state AS cs (store_id, customer_key, customer_id, tier, updated_at)
    SELECT DISTINCT ON (s, pk) s, pk, cid, v, now() FROM t ORDER BY s, pk
    ON CONFLICT (store_id, customer_key) DO UPDATE SET tier = EXCLUDED.tier, updated_at = now()
    RETURNING store_id, customer_key, tier)
SELECT t.s, t.k, up.tier FROM t JOIN up ON up.store_id = t.s AND up.customer_key = t.pk
""")


class AddPoints(BaseAction["AddPoints.Params"]):
    name: ClassVar[str] = "add_points"
    description: ClassVar[str] = "Reward the customer with loyalty points (negative to deduct)"
    on_interrupted: ClassVar[InterruptPolicy] = "repeat"  # the effect commits with its claim row

    class Params(BaseModel):
        points: int = Field(description="Points to add (negative deducts)")
        reason: str = Field("", description="Why (shown in the log)")

    def apply_batch(self, conn: Connection, ctxs: list[ActionContext[Params]]) -> list[ActionResult]:
        # One customer may appear twice in a batch only across keys; sum per customer so one
        # statement never updates a row twice.
        total: dict[tuple[str, str], int] = defaultdict(int)
        cid: dict[tuple[str, str], int | None] = {}
        for ctx in ctxs:
            k = (ctx.store.id, ctx.command["customer_key"])
            total[k] += ctx.params.points
            cid[k] = customer_id(ctx)
        keys = list(total)
        rows = conn.execute(_POINTS, {"stores": [k[0] for k in keys], "keys": [k[1] for k in keys],
                                      "cids": [cid[k] for k in keys], "vals": [total[k] for k in keys]})
        now = {(s, k): p for s, k, p in rows}
        out = []
        for ctx in ctxs:
            p = ctx.params
            balance = now[(ctx.store.id, ctx.command["customer_key"])]
            out.append(ActionResult("succeeded", f"{p.points:+d} points{' (' + p.reason + ')' if p.reason else ''}, "
                                    f"balance {balance}", {"points": p.points, "balance": balance}))
        return out

    async def dry_run(self, ctx: ActionContext[Params]) -> ActionResult:
        p = ctx.params
        return ActionResult("dry_run", f"would add {p.points:+d} points to {ctx.command['customer_key']}",
                            {"points": p.points})


class ChangeTier(BaseAction["ChangeTier.Params"]):
    name: ClassVar[str] = "change_tier"
    description: ClassVar[str] = "Upgrade or downgrade the customer's tier"
    on_interrupted: ClassVar[InterruptPolicy] = "repeat"  # the effect commits with its claim row

    class Params(BaseModel):
        tier: str = Field(min_length=1, max_length=64, description="New tier, e.g. gold")

    def apply_batch(self, conn: Connection, ctxs: list[ActionContext[Params]]) -> list[ActionResult]:
        last: dict[tuple[str, str], ActionContext[ChangeTier.Params]] = {}
        for ctx in ctxs:
            last[(ctx.store.id, ctx.command["customer_key"])] = ctx
        keys = list(last)
        conn.execute(_TIER, {"stores": [k[0] for k in keys], "keys": [k[1] for k in keys],
                             "cids": [customer_id(last[k]) for k in keys],
                             "vals": [last[k].params.tier for k in keys]})
        return [ActionResult("succeeded", f"tier set to {ctx.params.tier}",
                             {"tier": ctx.params.tier})
                for ctx in ctxs]

    async def dry_run(self, ctx: ActionContext[Params]) -> ActionResult:
        p = ctx.params
        return ActionResult("dry_run", f"would set {ctx.command['customer_key']}'s tier to {p.tier}", {"tier": p.tier})
