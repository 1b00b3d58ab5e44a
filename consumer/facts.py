"""The facts conditions are evaluated against, computed lazily per event.

A rule usually looks at two or three fields; `LazyFacts` computes a field the first time
a predicate asks for it and remembers it for the other rules of the same event. Getters
accept raw (hot-path) and fully decoded events alike (see `values.py`). The ordered
products' categories and tags come from the store's product catalog (`catalog.py`),
which the batch prepared before evaluating.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from typing import Literal

from wooflow import metrics
from wooflow.consumer.catalog import ProductCatalog, Terms
from wooflow.consumer.conditions import FIELDS, FactValue, Incomplete, geo_regions, geo_scope
from wooflow.consumer.state import Aggregates
from wooflow.consumer.triggers import TriggerContext
from wooflow.consumer.values import Amount, money, ms
from wooflow.schemas.types import Address, LineItemOf

Getter = Callable[[TriggerContext], FactValue]
DAY_MS = 86_400_000
# Getters read with .get: a record may come from a test or a dry run without every field.
_NOWHERE: Address = {"first_name": "", "last_name": "", "company": "", "address_1": "", "address_2": "", "city": "",
                     "state": "", "postcode": "", "country": "", "email": "", "phone": ""}


def _address(ctx: TriggerContext, which: Literal["billing", "shipping"]) -> Address:
    src = ctx.order if ctx.schema == "OrderEvent" else ctx.profile if ctx.schema == "CustomerEvent" else None
    return (src.get(which) if src else None) or _NOWHERE


def _billing_country(ctx: TriggerContext) -> str:
    return str(_address(ctx, "billing").get("country") or "").upper()


def _shipping_country(ctx: TriggerContext) -> str:
    return str(_address(ctx, "shipping").get("country") or "").upper() or _billing_country(ctx)


def _email(ctx: TriggerContext) -> str:
    if ctx.schema == "OrderEvent":
        return str(_address(ctx, "billing").get("email") or "")
    if ctx.schema == "CustomerEvent":
        c = ctx.profile
        return str((c.get("email") or _address(ctx, "billing").get("email") or "") if c else "")
    return str(ctx.event.get("email") or "")


def _line_items(ctx: TriggerContext) -> Sequence[LineItemOf[Amount]]:
    return (ctx.order.get("line_items") or ()) if ctx.order else ()


def _product_ids(ctx: TriggerContext) -> list[int]:
    if ctx.schema == "OrderEvent":
        out: list[int] = []
        for li in _line_items(ctx):
            out.append(li["product_id"])
            if li.get("variation_id"):
                out.append(li["variation_id"])
        return out
    pid = ctx.event.get("product_id")
    return [int(pid)] if isinstance(pid, int) else []


def _ordered(ctx: TriggerContext, catalog: ProductCatalog | None, which: Terms) -> list[str]:
    """The category or tag ids of the ordered products, through the catalog: `Incomplete`
    when some product is unknown (conditions.py says what that means)."""
    store = str(ctx.event["store_id"])
    out: list[str] = []
    missing: list[int] = []
    for li in _line_items(ctx):
        pid = li["product_id"] or li.get("variation_id") or 0
        if not pid:
            continue
        ids, unknown = catalog.terms(store, pid, which) if catalog is not None else ((), pid)
        out.extend(str(i) for i in ids)
        if unknown:
            missing.append(unknown)
    if missing:
        metrics.catalog_unknown.labels(store).inc()
        return Incomplete(out, tuple(missing))
    return out


def _categories(ctx: TriggerContext, catalog: ProductCatalog | None) -> list[str]:
    if ctx.schema == "OrderEvent":
        return _ordered(ctx, catalog, "category_ids")
    if ctx.schema == "ProductEvent":
        cats = (ctx.product.get("categories") or ()) if ctx.product else ()
        return [str(c["id"]) for c in cats] + [c["slug"] for c in cats if c.get("slug")]
    cid = ctx.event.get("category_id")
    return [str(cid)] if cid is not None else []


def _product_tags(ctx: TriggerContext, catalog: ProductCatalog | None) -> list[str]:
    if ctx.schema == "OrderEvent":
        return _ordered(ctx, catalog, "tag_ids")
    if ctx.schema == "ProductEvent" and ctx.product:
        return [str(t) for t in ctx.product.get("tag_ids") or ()] + list(ctx.product.get("tags") or ())
    return []


_NONE = Aggregates()  # a customer the event has none of (read only)


def _agg(ctx: TriggerContext) -> Aggregates:
    return ctx.after or (ctx.customer.agg if ctx.customer is not None else _NONE)


def _spent(ctx: TriggerContext) -> Decimal:
    totals = _agg(ctx).totals
    cur = ctx.currency or ctx.loyalty.currency
    if cur:
        return Decimal(totals.get(cur, 0))
    return sum((Decimal(v) for v in totals.values()), Decimal(0))


def _aov(ctx: TriggerContext) -> Decimal:
    n = _agg(ctx).order_count
    return (_spent(ctx) / n).quantize(Decimal("0.0001")) if n else Decimal(0)


def _event_ms(ctx: TriggerContext) -> int:
    o = ctx.order
    if o is not None and ctx.count_change == 1:
        return ms(o.get("date_created"))
    at = ctx.event.get("occurred_at")
    return ms(at) if isinstance(at, (datetime, int)) else 0


def _days_since_last(ctx: TriggerContext) -> int | None:
    # For a purchase, "last" is the previous paid order, not the one being placed.
    agg = ctx.before if (ctx.count_change == 1 and ctx.before is not None) else _agg(ctx)
    last = agg.last_order_ms
    if last is None:
        return None
    return max(0, (_event_ms(ctx) - int(last)) // DAY_MS)


def _first_order_date(ctx: TriggerContext) -> str | None:
    f = _agg(ctx).first_order_ms
    return datetime.fromtimestamp(int(f) / 1000, timezone.utc).date().isoformat() if f is not None else None


def _order_total(ctx: TriggerContext) -> Decimal | None:
    if ctx.schema != "OrderEvent" or not ctx.order:
        return None
    # apply_order has read it already (the same money() of the same field)
    return ctx.order_total if ctx.order_total is not None else money(ctx.order.get("total"))


def _item_count(ctx: TriggerContext) -> int | None:
    if ctx.schema != "OrderEvent" or not ctx.order:
        return None
    return sum(int(li.get("quantity") or 0) for li in _line_items(ctx))


GETTERS: dict[str, Getter] = {
    "order_total": _order_total,
    "order_status": lambda ctx: ctx.status if ctx.schema == "OrderEvent" else None,
    "item_count": _item_count,
    "billing_country": _billing_country,
    "shipping_country": _shipping_country,
    "geo_scope": lambda ctx: geo_scope(_shipping_country(ctx)),
    "geo_regions": lambda ctx: geo_regions(_shipping_country(ctx)),
    "customer_email": _email,
    "payment_method": lambda ctx: (ctx.order.get("payment_method") or "") if ctx.order else "",
    "shipping_method": lambda ctx: list(ctx.order.get("shipping_methods") or ()) if ctx.order else [],
    "product_id": _product_ids,
    "previous_status": lambda ctx: ctx.previous_status,
    "currency": lambda ctx: ctx.currency or ((ctx.order.get("currency") or "") if ctx.order else "")
    or str(ctx.event.get("currency") or ""),
    "coupon_code": lambda ctx: list(ctx.order.get("coupon_codes") or ()) if ctx.order else [],
    "customer_role": lambda ctx: ctx.profile.get("role") if ctx.schema == "CustomerEvent" and ctx.profile else None,
    "product_status": lambda ctx: ctx.product.get("status") if ctx.schema == "ProductEvent" and ctx.product else None,
    "order_count": lambda ctx: _agg(ctx).order_count,
    "total_spent": _spent,
    "average_order_value": _aov,
    "tier": lambda ctx: _agg(ctx).tier,
    "points": lambda ctx: _agg(ctx).points,
    "tags": lambda ctx: list(ctx.customer.tags) if ctx.customer is not None else [],
    "days_since_last_order": _days_since_last,
    "first_order_date": _first_order_date,
}
# Fields that read the store's product catalog.
CATALOG_GETTERS: dict[str, Callable[[TriggerContext, ProductCatalog | None], FactValue]] = {
    "category": _categories,
    "product_tag": _product_tags,
}
assert not set(GETTERS) & set(CATALOG_GETTERS)
assert set(GETTERS) | set(CATALOG_GETTERS) == set(FIELDS), (set(GETTERS) | set(CATALOG_GETTERS)) ^ set(FIELDS)


_MISSING: list[int] = []  # a unique object no getter returns: told apart by identity
_dict_get: Callable[[dict[str, FactValue], str, FactValue], FactValue] = dict.get


class LazyFacts(dict[str, FactValue]):
    __slots__ = ("catalog", "ctx")

    def __init__(self, ctx: TriggerContext, catalog: ProductCatalog | None = None) -> None:
        super().__init__()
        self.ctx = ctx
        self.catalog = catalog

    def get(self, name: str, default: FactValue = None) -> FactValue:  # type: ignore[override]  # computes, never misses
        value = _dict_get(self, name, _MISSING)
        if value is _MISSING:
            getter = GETTERS.get(name)
            if getter is not None:
                value = getter(self.ctx)
            else:
                from_catalog = CATALOG_GETTERS.get(name)
                value = from_catalog(self.ctx, self.catalog) if from_catalog is not None else default
            self[name] = value
        return value

    def __getitem__(self, name: str) -> FactValue:
        return self.get(name)

    def materialise(self) -> dict[str, FactValue]:
        for name in FIELDS:
            self.get(name)
        return dict(self)


def state_facts(state: Mapping[str, object], currency: str = "", now: datetime | None = None) -> dict[str, FactValue]:
    """Customer-state facts from a `customer_state` row (as a dict), for callers outside
    the consumer's batch (scheduler exit conditions, dry runs)."""
    now = now or datetime.now(timezone.utc)
    raw = state.get("totals")
    totals = {str(k): Decimal(str(v)) for k, v in raw.items()} if isinstance(raw, Mapping) else {}
    spent = totals.get(currency, Decimal(0)) if currency else sum(totals.values(), Decimal(0))
    n, points, tags = state.get("order_count"), state.get("points"), state.get("tags")
    count = n if isinstance(n, int) else 0
    last, first = state.get("last_order_at"), state.get("first_order_at")
    return {
        "order_count": count,
        "total_spent": spent,
        "average_order_value": (spent / count).quantize(Decimal("0.0001")) if count else Decimal(0),
        "tier": str(state.get("tier") or ""),
        "points": points if isinstance(points, int) else 0,
        "tags": [str(t) for t in tags] if isinstance(tags, list) else [],
        "days_since_last_order": max(0, (now - last).days) if isinstance(last, datetime) else None,
        "first_order_date": first.date().isoformat() if isinstance(first, datetime) else None,
    }
