"""Customer actions: tags, role, meta.

WooCommerce has no customer tags. wooflow keeps them in `customer_state.tags` (what rule
conditions read) and mirrors the whole list to the customer's `_wooflow_tags` meta in
WooCommerce, so the store admin sees them too (Polski Pro keeps them in user meta as well).
The tag change and its idempotency record commit in one transaction; the mirror, a
"set the full list" write, is idempotent and runs first, so a crash in between re-runs
harmlessly.

A customer's role is read-only in WooCommerce's REST API; it is changed through
WordPress's own REST API (`/wp/v2/users/{id}`, `roles`), which needs an application
password (store settings `wp_username`, `wp_app_password`).
"""

from __future__ import annotations

import json
from typing import ClassVar

from pydantic import BaseModel, Field, field_validator
from sqlalchemy import Connection, text

from wooflow.jsontypes import as_array, as_object
from wooflow.people import person_rows
from wooflow.schemas.types import ActionCommand
from wooflow.workers.actions.common import SetMeta, customer_id, require_customer_id
from wooflow.workers.errors import ActionError
from wooflow.workers.registry import ActionContext, ActionResult, BaseAction, InterruptPolicy
from wooflow.workers.templating import render

TAGS_META_KEY = "_wooflow_tags"

# Keyed by person (wooflow/people.py: a merged guest's tags go to the customer), one row
# per person (the tags of its commands together), the result mapped back to each command's key.
_ADD = text(f"""
WITH t AS ({person_rows("text")}), up AS (
    INSERT INTO customer_state AS cs (store_id, customer_key, customer_id, tags, updated_at)
    SELECT s, pk, max(cid), ARRAY(SELECT DISTINCT x FROM t t2, jsonb_array_elements_text(CAST(t2.v AS jsonb)) x
                                  WHERE t2.s = t.s AND t2.pk = t.pk ORDER BY x), now()
    FROM t GROUP BY s, pk
    ON CONFLICT (store_id, customer_key) DO UPDATE
    SET tags = ARRAY(SELECT DISTINCT x FROM unnest(cs.tags || EXCLUDED.tags) x ORDER BY x), updated_at = now()
    RETURNING store_id, customer_key, tags)
SELECT t.s, t.k, up.tags FROM t JOIN up ON up.store_id = t.s AND up.customer_key = t.pk
""")

_REMOVE = text(f"""
WITH t AS ({person_rows("text")})
UPDATE customer_state cs
SET tags = ARRAY(SELECT x FROM unnest(cs.tags) x
                 WHERE x <> ALL(ARRAY(SELECT jsonb_array_elements_text(CAST(t.v AS jsonb))))), updated_at = now()
FROM t
WHERE cs.store_id = t.s AND cs.customer_key = t.pk
RETURNING cs.store_id, t.k, cs.tags
""")

_CURRENT = text("SELECT tags FROM customer_state WHERE store_id = :s AND customer_key = :k")


class _TagParams(BaseModel):
    tag: str = Field("", description="Tag, or several separated by commas (Jinja2 template)")
    tags: list[str] = Field(default_factory=list, description="Tags (alternative to `tag`)")
    mirror: bool = Field(True, description=f"Mirror the customer's tags to WooCommerce meta {TAGS_META_KEY}")

    @field_validator("tags")
    @classmethod
    def _strip(cls, v: list[str]) -> list[str]:
        return [t.strip() for t in v if t.strip()]


class _TagAction(BaseAction[_TagParams]):
    Params = _TagParams
    adding: ClassVar[bool] = True
    on_interrupted: ClassVar[InterruptPolicy] = "repeat"  # the effect commits with its claim row

    def _tags(self, ctx: ActionContext[_TagParams]) -> list[str]:
        p = ctx.params
        tags = list(p.tags)
        if p.tag:
            raw = render(p.tag, ctx.context) if "{" in p.tag else p.tag
            tags += [t.strip() for t in raw.split(",") if t.strip()]
        if not tags:
            raise ActionError(f"{self.name}: no tag given")
        return sorted(set(tags))

    def _after(self, current: list[str], tags: list[str]) -> list[str]:
        return sorted(set(current) | set(tags)) if self.adding else [t for t in current if t not in set(tags)]

    def needs_prepare(self, command: ActionCommand, params: _TagParams) -> bool:
        """Only registered customers have a WooCommerce account to mirror to (guest keys: g…)."""
        return bool(params.mirror) and not str(command.get("customer_key", "")).startswith("g")

    async def prepare(self, ctx: ActionContext[_TagParams]) -> None:
        """Mirror the resulting tag list to WooCommerce before recording it here."""
        cid = customer_id(ctx)
        if not self.needs_prepare(ctx.command, ctx.params) or cid is None or ctx.services is None:
            return
        tags = self._tags(ctx)
        engine = ctx.services.engine

        def current() -> list[str]:
            with engine.connect() as conn:
                row = conn.execute(_CURRENT, {"s": ctx.store.id, "k": ctx.command["customer_key"]}).first()
            return list(row[0]) if row else []

        after = self._after(await ctx.services.db(current), tags)
        await ctx.woo.put(f"/customers/{cid}", {"meta_data": [{"key": TAGS_META_KEY, "value": after}]})

    def apply_batch(self, conn: Connection, ctxs: list[ActionContext[_TagParams]]) -> list[ActionResult | Exception]:
        out: list[ActionResult | Exception] = []
        rows: list[tuple[ActionContext[_TagParams], list[str] | ActionError]] = []
        for ctx in ctxs:
            try:
                rows.append((ctx, self._tags(ctx)))
            except ActionError as exc:
                rows.append((ctx, exc))
        good = [(ctx, tags) for ctx, tags in rows if isinstance(tags, list)]
        params = {"stores": [c.store.id for c, _ in good],
                                  "keys": [c.command["customer_key"] for c, _ in good],
                                  "cids": [customer_id(c) for c, _ in good],
                                  "vals": [json.dumps(t) for _, t in good]}
        result = {(s, k): list(t) for s, k, t in conn.execute(_ADD if self.adding else _REMOVE, params)} if good else {}
        for ctx, tags in rows:
            if isinstance(tags, Exception):
                out.append(tags)
                continue
            now = result.get((ctx.store.id, ctx.command["customer_key"]), [])
            verb = "added" if self.adding else "removed"
            out.append(ActionResult("succeeded", f"tags {', '.join(tags)} {verb}",
                                    {"tags": tags, "customer_tags": now,
                                     "mirrored": bool(self.needs_prepare(ctx.command, ctx.params)
                                                      and customer_id(ctx))}))
        return out

    async def dry_run(self, ctx: ActionContext[_TagParams]) -> ActionResult:
        tags = self._tags(ctx)
        verb = "add" if self.adding else "remove"
        return ActionResult("dry_run", f"would {verb} tags {', '.join(tags)}",
                            {"tags": tags, "customer_key": ctx.command["customer_key"]})


class AddCustomerTag(_TagAction):
    name: ClassVar[str] = "add_customer_tag"
    description: ClassVar[str] = "Add tags to the customer (segmentation)"
    adding: ClassVar[bool] = True


class RemoveCustomerTag(_TagAction):
    name: ClassVar[str] = "remove_customer_tag"
    description: ClassVar[str] = "Remove tags from the customer"
    adding: ClassVar[bool] = False


class ChangeCustomerRole(BaseAction["ChangeCustomerRole.Params"]):
    name: ClassVar[str] = "change_customer_role"
    description: ClassVar[str] = "Change the customer's WordPress role (e.g. customer → wholesale)"
    on_interrupted: ClassVar[InterruptPolicy] = "repeat"  # the user's roles

    class Params(BaseModel):
        role: str = Field(min_length=1, pattern=r"^[a-z0-9_\-]+$", description="WordPress role slug")

    async def run(self, ctx: ActionContext[Params]) -> ActionResult:
        p = ctx.params
        cid = require_customer_id(ctx, self.name)
        if cid == 1:
            raise ActionError("refusing to change the role of user 1 (the site administrator)")
        user = as_object(await ctx.woo.wp("POST", f"/users/{cid}", {"roles": [p.role]}))
        return ActionResult("succeeded", f"customer {cid} role set to {p.role}",
                            {"customer_id": cid, "roles": user.get("roles", [p.role])})

    async def already_applied(self, ctx: ActionContext[Params]) -> ActionResult | None:
        p = ctx.params
        cid = require_customer_id(ctx, self.name)
        roles = as_array(as_object(await ctx.woo.wp("GET", f"/users/{cid}")).get("roles"))
        if p.role not in roles:
            return None
        return ActionResult("succeeded", f"customer {cid} role already {p.role}",
                            {"customer_id": cid, "roles": roles, "recovered": True})

    async def dry_run(self, ctx: ActionContext[Params]) -> ActionResult:
        p = ctx.params
        cid = require_customer_id(ctx, self.name)
        return ActionResult("dry_run", f"would set customer {cid} role to {p.role}", {"customer_id": cid,
                                                                                    "role": p.role})


class SetCustomerMeta(SetMeta):
    name: ClassVar[str] = "set_customer_meta"
    description: ClassVar[str] = "Add or update a custom field (user meta) on the customer"
    resource: ClassVar[str] = "customer"

    def target(self, ctx: ActionContext[SetMeta.Params]) -> tuple[int | str, str]:
        cid = require_customer_id(ctx, self.name)
        return cid, f"/customers/{cid}"
