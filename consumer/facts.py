"""The facts conditions are evaluated against, computed lazily per event.

A rule usually looks at two or three fields; `LazyFacts` computes a field the first time
a predicate asks for it and remembers it for the other rules of the same event. Getters
accept raw (hot-path) and fully decoded events alike (see `values.py`). The ordered
products' categories and tags come from the store's product catalog (`catalog.py`),
which the batch prepared before evaluating; the purchase-history fields from the
customer's `History` (history.py), the subscription fields from the customer's
subscriptions the batch loaded; `ItemFacts` are one line item's, for per-line-item
triggers. `@today` (conditions.TODAY) is the event's day, which the day-window date
operators read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from typing import Literal

from wooflow import metrics
from wooflow.consumer.catalog import ProductCatalog, Terms
from wooflow.consumer.conditions import FIELDS, TODAY, FactValue, Incomplete, geo_regions, geo_scope
from wooflow.consumer.history import History
from wooflow.consumer.state import Aggregates
from wooflow.consumer.triggers import TriggerContext
from wooflow.consumer.values import Amount, money, ms
from wooflow.jsontypes import JSONValue
from wooflow.schemas.types import Address, LineItemOf

Item = LineItemOf[Amount]

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


def _ordered(ctx: TriggerContext, catalog: ProductCatalog | None, which: Terms,
             items: Sequence[Item] | None = None) -> list[str]:
    """The category or tag ids of the ordered products (or of `items`), through the catalog:
    `Incomplete` when some product is unknown (conditions.py says what that means)."""
    return _terms_of(str(ctx.event["store_id"]), [li["product_id"] or li.get("variation_id") or 0
                                                   for li in (_line_items(ctx) if items is None else items)],
                     catalog, which)


def _terms_of(store: str, products: Sequence[int], catalog: ProductCatalog | None, which: Terms) -> list[str]:
    out: list[str] = []
    missing: list[int] = []
    for pid in products:
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


def _day(at_ms: int | None) -> str | None:
    return datetime.fromtimestamp(at_ms / 1000, timezone.utc).date().isoformat() if at_ms is not None else None


def _yes(v: bool) -> str:
    return "yes" if v else "no"


def _history(ctx: TriggerContext) -> History | None:
    return _agg(ctx).history


def _now_ms(ctx: TriggerContext) -> int:
    at = ctx.event.get("occurred_at")
    return ms(at) if isinstance(at, (datetime, int)) else 0


def _purchased_products(ctx: TriggerContext) -> list[int] | None:
    h = _history(ctx)
    return h.products() if h is not None else None


def _purchased_categories(ctx: TriggerContext, catalog: ProductCatalog | None) -> list[str] | None:
    h = _history(ctx)
    if h is None:
        return None
    # products and variations alike: a variation counts with its parent's categories (catalog.terms)
    return _terms_of(str(ctx.event["store_id"]), h.products(), catalog, "category_ids")


def _within_year(ctx: TriggerContext) -> list[tuple[Decimal, str]] | None:
    h = _history(ctx)
    return [(p.total, p.currency) for p in h.within(_now_ms(ctx))] if h is not None else None


def _spent_in_year(ctx: TriggerContext) -> Decimal | None:
    paid = _within_year(ctx)
    if paid is None:
        return None
    cur = ctx.currency or ctx.loyalty.currency
    return sum((t for t, c in paid if not cur or c == cur), Decimal(0))


def _customers_first(ctx: TriggerContext) -> str | None:
    if ctx.schema != "OrderEvent" or ctx.order is None:
        return None
    return _yes(_agg(ctx).order_count - (1 if ctx.counted else 0) <= 0)


def _role(ctx: TriggerContext) -> str | None:
    if ctx.schema == "CustomerEvent":
        return ctx.profile.get("role") if ctx.profile else None
    if ctx.customer is not None and ctx.customer.role:
        return ctx.customer.role
    return "guest" if str(ctx.event.get("customer_key") or "").startswith("g") else None


def _subscriptions(ctx: TriggerContext) -> list[int] | None:
    """Product ids of the customer's active subscriptions (None: not loaded for this event)."""
    subs = ctx.customer_subscriptions
    if subs is None:
        return None
    return list(dict.fromkeys(p for x in subs.values() if x.status == "active" for p in x.product_ids))


def _has_subscription(ctx: TriggerContext) -> str | None:
    subs = ctx.customer_subscriptions
    return _yes(any(x.status == "active" for x in subs.values())) if subs is not None else None


def _subscription_products(ctx: TriggerContext) -> list[int] | None:
    x = ctx.subscription
    if x is None:
        return None
    return list(dict.fromkeys(i for li in x.get("line_items") or () for i in (li["product_id"],
                                                                           li.get("variation_id") or 0) if i))


def _next_payment(ctx: TriggerContext) -> str | None:
    nxt = ctx.subscription.get("next_payment_date") if ctx.subscription else None
    return _day(ms(nxt)) if nxt else None


def _today(ctx: TriggerContext) -> str | None:
    return _day(_now_ms(ctx)) if ctx.event.get("occurred_at") is not None else None


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
    "product_status": lambda ctx: ctx.product.get("status") if ctx.schema == "ProductEvent" and ctx.product else None,
    "order_count": lambda ctx: _agg(ctx).order_count,
    "total_spent": _spent,
    "average_order_value": _aov,
    "tier": lambda ctx: _agg(ctx).tier,
    "points": lambda ctx: _agg(ctx).points,
    "tags": lambda ctx: list(ctx.customer.tags) if ctx.customer is not None else [],
    "days_since_last_order": _days_since_last,
    "first_order_date": _first_order_date,
    "order_coupons": lambda ctx: list(ctx.order.get("coupon_codes") or ()) if ctx.order else [],
    "order_created_via": lambda ctx: (ctx.order.get("created_via") or "") if ctx.order else None,
    "order_item_quantity": lambda ctx: [int(li.get("quantity") or 0) for li in _line_items(ctx)],
    "customer_is_guest": lambda ctx: _yes(str(ctx.event.get("customer_key") or "").startswith("g")),
    "order_is_customers_first": _customers_first,
    "customer_role": _role,
    "purchased_products_all_time": _purchased_products,
    "first_paid_order_date": lambda ctx: _day(h.first_paid_ms()) if (h := _history(ctx)) is not None else None,
    "last_paid_order_date": lambda ctx: _day(h.last_paid_ms()) if (h := _history(ctx)) is not None else None,
    "order_count_last_365_days": lambda ctx: len(p) if (p := _within_year(ctx)) is not None else None,
    "total_spent_last_365_days": _spent_in_year,
    "has_active_subscription": _has_subscription,
    "active_subscription_products": _subscriptions,
    "subscription_status": lambda ctx: ctx.status if ctx.schema == "SubscriptionEvent" else None,
    "subscription_products": _subscription_products,
    "subscription_billing_period": lambda ctx: (ctx.subscription.get("billing_period") or "")
    if ctx.subscription else None,
    "subscription_next_payment_date": _next_payment,
    TODAY: _today,
}
# Fields that read the store's product catalog.
CATALOG_GETTERS: dict[str, Callable[[TriggerContext, ProductCatalog | None], FactValue]] = {
    "category": _categories,
    "product_tag": _product_tags,
    "purchased_categories_all_time": _purchased_categories,
}


# Fields of one line item (per-line-item triggers: `ItemFacts`).
def _item_products(li: Item) -> list[int]:
    return [i for i in (li["product_id"], li.get("variation_id") or 0) if i]


ITEM_GETTERS: dict[str, Callable[[Item], FactValue]] = {
    "item.product_id": _item_products,
    "item.quantity": lambda li: int(li.get("quantity") or 0),
    "item.total": lambda li: money(li.get("total")),
    "item.name": lambda li: str(li.get("name") or ""),
}
ITEM_CATALOG_GETTERS: dict[str, Terms] = {"item.category": "category_ids", "item.product_tag": "tag_ids"}
_ALL = [*GETTERS, *CATALOG_GETTERS, *ITEM_GETTERS, *ITEM_CATALOG_GETTERS]
assert len(_ALL) == len(set(_ALL)) and set(_ALL) == set(FIELDS) | {TODAY}, set(_ALL) ^ set(FIELDS)


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
            value = getter(self.ctx) if getter is not None else self._other(name, default)
            self[name] = value
        return value

    def _other(self, name: str, default: FactValue) -> FactValue:
        """A field no plain getter computes: one of the catalog's (item.* outside a
        per-line-item trigger: no item, no value)."""
        from_catalog = CATALOG_GETTERS.get(name)
        return from_catalog(self.ctx, self.catalog) if from_catalog is not None else default

    def __getitem__(self, name: str) -> FactValue:
        return self.get(name)

    def materialise(self) -> dict[str, FactValue]:
        for name in (*FIELDS, TODAY):
            self.get(name)
        return dict(self)


class ItemFacts(LazyFacts):
    """The facts of one line item of an order (per-line-item triggers): the `item.*`
    fields from the item, every other field from the order."""

    __slots__ = ("item",)

    def __init__(self, order: LazyFacts, item: Item) -> None:
        super().__init__(order.ctx, order.catalog)
        self.item = item

    def _other(self, name: str, default: FactValue) -> FactValue:
        getter = ITEM_GETTERS.get(name)
        if getter is not None:
            return getter(self.item)
        which = ITEM_CATALOG_GETTERS.get(name)
        if which is not None:
            return _ordered(self.ctx, self.catalog, which, (self.item,))
        return super()._other(name, default)


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
        "customer_role": str(state["role"]) if state.get("role") else None,
        **_history_facts(History.from_json(_as_json(state.get("history"))), now, currency),
        TODAY: now.date().isoformat(),
    }


def _as_json(v: object) -> JSONValue:
    return v if isinstance(v, (dict, list, str, int, float, bool)) or v is None else None


def _history_facts(h: History | None, now: datetime, currency: str) -> dict[str, FactValue]:
    """The purchase-history fields of a stored history (None: the store keeps none)."""
    if h is None:
        return {}
    year = h.within(ms(now))
    return {"purchased_products_all_time": h.products(), "first_paid_order_date": _day(h.first_paid_ms()),
            "last_paid_order_date": _day(h.last_paid_ms()), "order_count_last_365_days": len(year),
            "total_spent_last_365_days": sum((p.total for p in year if not currency or p.currency == currency),
                                             Decimal(0))}
