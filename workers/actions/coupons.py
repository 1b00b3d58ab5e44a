"""apply_coupon: create a unique coupon in WooCommerce for this customer (REST).

The code is derived from the idempotency key (`PREFIX-` + 10 base32 characters of its
hash), so the same command always means the same coupon: a crashed attempt is found by
code, and a create that races a lost answer comes back as "code already exists", which
is then ours. The coupon (code, amount, expiry) is handed to later steps' templates as
`{{ coupon.code }}`.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import ClassVar, Literal

from pydantic import BaseModel, Field

from wooflow.jsontypes import JSONObject, as_array, as_object
from wooflow.workers.actions.common import customer_email
from wooflow.workers.errors import ActionError
from wooflow.workers.registry import ActionContext, ActionResult, BaseAction, InterruptPolicy


def coupon_code(prefix: str, idempotency_key: str) -> str:
    digest = hashlib.sha256(f"coupon|{idempotency_key}".encode()).digest()
    return f"{prefix}-{base64.b32encode(digest).decode()[:10]}".upper() if prefix else \
        base64.b32encode(digest).decode()[:12]


class ApplyCoupon(BaseAction["ApplyCoupon.Params"]):
    name: ClassVar[str] = "apply_coupon"
    description: ClassVar[str] = "Generate a unique coupon for the customer in WooCommerce"
    on_interrupted: ClassVar[InterruptPolicy] = "repeat"  # by its key-derived code

    class Params(BaseModel):
        discount_type: Literal["percent", "fixed_cart"] = Field("percent", description="Percent or fixed amount")
        amount: Decimal = Field(gt=0, description="Discount: percent (10 = 10%) or money")
        expires_in_days: int | None = Field(30, ge=1, le=3650, description="Expiry, days from now (None: never)")
        prefix: str = Field("WF", pattern=r"^[A-Za-z0-9]{0,12}$", description="Code prefix")
        restrict_to_email: bool = Field(True, description="Only the customer's email may use it")
        usage_limit: int = Field(1, ge=1, description="How many times it can be used")
        individual_use: bool = Field(True, description="Cannot be combined with other coupons")
        free_shipping: bool = False
        minimum_amount: Decimal | None = Field(None, ge=0, description="Minimum order subtotal")
        product_ids: list[int] = Field(default_factory=list, description="Only for these products")
        description: str = Field("", description="Shown to the store admin")

    def _body(self, ctx: ActionContext[Params]) -> JSONObject:
        p = ctx.params
        body: JSONObject = {
            "code": coupon_code(p.prefix, ctx.idempotency_key), "discount_type": p.discount_type,
            "amount": str(p.amount), "usage_limit": p.usage_limit, "usage_limit_per_user": 1,
            "individual_use": p.individual_use, "free_shipping": p.free_shipping,
            "description": p.description or f"wooflow rule {ctx.command['rule_id']} step {ctx.command['step']}",
            "meta_data": [{"key": "_wooflow_idempotency_key", "value": ctx.idempotency_key}],
        }
        if p.restrict_to_email:
            email = customer_email(ctx)
            if not email:
                raise ActionError("apply_coupon: restrict_to_email is on but the customer has no email")
            body["email_restrictions"] = [email]
        if p.expires_in_days:
            expires = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=p.expires_in_days)
            body["date_expires_gmt"] = expires.replace(tzinfo=None).isoformat()
        if p.minimum_amount is not None:
            body["minimum_amount"] = str(p.minimum_amount)
        if p.product_ids:
            body["product_ids"] = p.product_ids
        return body

    @staticmethod
    def _result(coupon: JSONObject, message: str, recovered: bool = False) -> ActionResult:
        view: JSONObject = {"id": coupon.get("id"), "code": str(coupon.get("code", "")).upper(),
                "amount": coupon.get("amount"), "discount_type": coupon.get("discount_type"),
                "expires_at": coupon.get("date_expires_gmt") or coupon.get("date_expires"),
                "email_restrictions": coupon.get("email_restrictions", [])}
        details: JSONObject = {"coupon": view, "template_vars": {"coupon": view}}
        if recovered:
            details["recovered"] = True
        return ActionResult("succeeded", message, details)

    async def _find(self, ctx: ActionContext[Params], code: str) -> JSONObject | None:
        found = as_array(await ctx.woo.get("/coupons", code=code))
        return as_object(found[0]) if found else None

    async def run(self, ctx: ActionContext[Params]) -> ActionResult:
        body = self._body(ctx)
        try:
            coupon = as_object(await ctx.woo.post("/coupons", body))
        except ActionError as exc:
            if "already exists" not in str(exc) and "coupon_code_already_exists" not in str(exc):
                raise
            found = await self._find(ctx, str(body["code"]))  # ours: the code is derived from our key
            if found is None:
                raise
            return self._result(found, f"coupon {body['code']} already created", recovered=True)
        return self._result(coupon, f"coupon {body['code']} created ({body['amount']}"
                                    f"{'%' if body['discount_type'] == 'percent' else ''})")

    async def dry_run(self, ctx: ActionContext[Params]) -> ActionResult:
        body = self._body(ctx)
        view: JSONObject = {"code": body["code"], "amount": body["amount"], "discount_type": body["discount_type"],
                "expires_at": body.get("date_expires_gmt"), "email_restrictions": body.get("email_restrictions", [])}
        return ActionResult("dry_run", f"would create coupon {body['code']}", {"coupon": view,
                                                                            "template_vars": {"coupon": view}})

    async def already_applied(self, ctx: ActionContext[Params]) -> ActionResult | None:
        p = ctx.params
        coupon = await self._find(ctx, coupon_code(p.prefix, ctx.idempotency_key))
        return None if coupon is None else self._result(coupon, f"coupon {coupon.get('code')} already created",
                                                        recovered=True)
