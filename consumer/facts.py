"""The facts conditions are evaluated against, computed lazily per event.

A rule usually looks at two or three fields; `LazyFacts` computes a field the first time
a predicate asks for it and remembers it for the other rules of the same event. Getters
accept raw (hot-path) and fully decoded events alike (see `values.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from wooflow.consumer.conditions import FIELDS, geo_scopes
from wooflow.consumer.triggers import TriggerContext
from wooflow.consumer.values import money, ms

Facts = dict[str, Any]
Getter = Callable[[TriggerContext], Any]
DAY_MS = 86_400_000


def _order(ctx: TriggerContext) -> dict[str, Any]:
    return ctx.event.get("order") or {}


def _customer(ctx: TriggerContext) -> dict[str, Any]:
    return ctx.event.get("customer") or {}


def _billing_country(ctx: TriggerContext) -> str:
    if ctx.schema == "OrderEvent":
        return str((_order(ctx).get("billing") or {}).get("country") or "").upper()
    if ctx.schema == "CustomerEvent":
        return str((_customer(ctx).get("billing") or {}).get("country") or "").upper()
    return ""


def _shipping_country(ctx: TriggerContext) -> str:
    src = _order(ctx) if ctx.schema == "OrderEvent" else _customer(ctx)
    return str((src.get("shipping") or {}).get("country") or "").upper() or _billing_country(ctx)


def _email(ctx: TriggerContext) -> str:
    if ctx.schema == "OrderEvent":
        return str((_order(ctx).get("billing") or {}).get("email") or "")
    if ctx.schema == "CustomerEvent":
        c = _customer(ctx)
        return str(c.get("email") or (c.get("billing") or {}).get("email") or "")
    return str(ctx.event.get("email") or "")


def _product_ids(ctx: TriggerContext) -> list[int]:
    if ctx.schema == "OrderEvent":
        out: list[int] = []
        for li in _order(ctx).get("line_items") or ():
            out.append(li["product_id"])
            if li.get("variation_id"):
                out.append(li["variation_id"])
        return out
    if ctx.schema == "ProductEvent":
        return [int(ctx.event["product_id"])]
    pid = ctx.event.get("product_id")
    return [int(pid)] if pid is not None else []


def _categories(ctx: TriggerContext) -> list[str]:
    if ctx.schema == "OrderEvent":
        out: list[str] = []
        for li in _order(ctx).get("line_items") or ():
            out.extend(str(c) for c in li.get("category_ids") or ())
        return out
    if ctx.schema == "ProductEvent":
        cats = (ctx.event.get("product") or {}).get("categories") or ()
        return [str(c["id"]) for c in cats] + [c["slug"] for c in cats if c.get("slug")]
    cid = ctx.event.get("category_id")
    return [str(cid)] if cid is not None else []


def _agg(ctx: TriggerContext) -> dict[str, Any]:
    return ctx.after or (ctx.customer.agg if ctx.customer is not None else {"n": 0, "t": {}, "p": 0, "f": None,
                                                                             "l": None, "tier": ""})


def _spent(ctx: TriggerContext) -> Decimal:
    totals = _agg(ctx)["t"]
    cur = ctx.currency or ctx.loyalty.currency
    if cur:
        return Decimal(totals.get(cur, 0))
    return sum((Decimal(v) for v in totals.values()), Decimal(0))


def _aov(ctx: TriggerContext) -> Decimal:
    n = _agg(ctx)["n"]
    return (_spent(ctx) / n).quantize(Decimal("0.0001")) if n else Decimal(0)


def _event_ms(ctx: TriggerContext) -> int:
    o = ctx.event.get("order")
    if o is not None and ctx.count_change == 1:
        return ms(o["date_created"])
    return ms(ctx.event.get("occurred_at"))


def _days_since_last(ctx: TriggerContext) -> int | None:
    # For a purchase, "last" is the previous paid order, not the one being placed.
    agg = ctx.before if (ctx.count_change == 1 and ctx.before is not None) else _agg(ctx)
    last = agg["l"]
    if last is None:
        return None
    return max(0, (_event_ms(ctx) - int(last)) // DAY_MS)


def _first_order_date(ctx: TriggerContext) -> str | None:
    f = _agg(ctx)["f"]
    return datetime.fromtimestamp(int(f) / 1000, timezone.utc).date().isoformat() if f is not None else None


GETTERS: dict[str, Getter] = {
    "order_total": lambda ctx: money(_order(ctx).get("total")) if ctx.schema == "OrderEvent" and _order(ctx) else None,
    "order_status": lambda ctx: ctx.status if ctx.schema == "OrderEvent" else None,
    "item_count": lambda ctx: sum(int(li.get("quantity") or 0) for li in _order(ctx).get("line_items") or ())
    if ctx.schema == "OrderEvent" and _order(ctx) else None,
    "billing_country": _billing_country,
    "shipping_country": _shipping_country,
    "geo_scope": lambda ctx: geo_scopes(_shipping_country(ctx)),
    "customer_email": _email,
    "payment_method": lambda ctx: _order(ctx).get("payment_method") or "",
    "shipping_method": lambda ctx: list(_order(ctx).get("shipping_methods") or ()),
    "product_id": _product_ids,
    "category": _categories,
    "previous_status": lambda ctx: ctx.previous_status,
    "currency": lambda ctx: ctx.currency or _order(ctx).get("currency") or ctx.event.get("currency") or "",
    "coupon_code": lambda ctx: list(_order(ctx).get("coupon_codes") or ()),
    "customer_role": lambda ctx: _customer(ctx).get("role") if ctx.schema == "CustomerEvent" else None,
    "product_status": lambda ctx: (ctx.event.get("product") or {}).get("status") if ctx.schema == "ProductEvent"
    else None,
    "order_count": lambda ctx: _agg(ctx)["n"],
    "total_spent": _spent,
    "average_order_value": _aov,
    "tier": lambda ctx: _agg(ctx)["tier"],
    "points": lambda ctx: _agg(ctx)["p"],
    "tags": lambda ctx: list(ctx.customer.tags) if ctx.customer is not None else [],
    "days_since_last_order": _days_since_last,
    "first_order_date": _first_order_date,
}
assert set(GETTERS) == set(FIELDS), set(GETTERS) ^ set(FIELDS)


_MISSING = object()
_dict_get = dict.get


class LazyFacts(dict):  # type: ignore[type-arg]
    __slots__ = ("ctx",)

    def __init__(self, ctx: TriggerContext) -> None:
        super().__init__()
        self.ctx = ctx

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        value = _dict_get(self, name, _MISSING)
        if value is _MISSING:
            getter = GETTERS.get(name)
            value = getter(self.ctx) if getter is not None else default
            self[name] = value
        return value

    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def materialise(self) -> dict[str, Any]:
        for name in GETTERS:
            self.get(name)
        return dict(self)


def state_facts(state: dict[str, Any], currency: str = "", now: datetime | None = None) -> Facts:
    """Customer-state facts from a `customer_state` row (as a dict), for callers outside
    the consumer's batch (scheduler exit conditions, dry runs)."""
    now = now or datetime.now(timezone.utc)
    totals = {k: Decimal(str(v)) for k, v in (state.get("totals") or {}).items()}
    spent = totals.get(currency, Decimal(0)) if currency else sum(totals.values(), Decimal(0))
    count = int(state.get("order_count") or 0)
    last, first = state.get("last_order_at"), state.get("first_order_at")
    return {
        "order_count": count,
        "total_spent": spent,
        "average_order_value": (spent / count).quantize(Decimal("0.0001")) if count else Decimal(0),
        "tier": state.get("tier") or "",
        "points": int(state.get("points") or 0),
        "tags": list(state.get("tags") or []),
        "days_since_last_order": max(0, (now - last).days) if isinstance(last, datetime) else None,
        "first_order_date": first.date().isoformat() if isinstance(first, datetime) else None,
    }
