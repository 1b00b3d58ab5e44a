"""Rule conditions: a tree of comparisons over an event's facts, compiled once.

A tree is `{"match": "all"|"any", "conditions": [leaf | tree, ...]}` (nesting allowed);
a leaf is `{"field": F, "operator": OP, "value": V}`. Fields are the Polski Pro set
(order_total, order_status, item_count, billing_country, shipping_country, geo_scope,
customer_email, payment_method, shipping_method, product_id, category) plus
customer-state fields (order_count, total_spent, average_order_value, tier, points, tags,
days_since_last_order, first_order_date), AutomateWoo's order, customer, purchase-history
and subscription fields (order_coupons, customer_is_guest, purchased_products_all_time,
last_paid_order_date, has_active_subscription, ...), a line item's `item.*` fields (per-line-
item triggers only) and a few extras (geo_regions, product_tag, ...).

Semantics (the property tests hold the compiled predicates to exactly this):
- a field has a type: number fields compare numerically (exact decimals), string fields
  compare trimmed and case-insensitively, date fields compare as ISO `YYYY-MM-DD`
  (`before`/`after` are `lt`/`gt`; `within_last_days N` holds for a date from N days
  before the event's day (`@today`, UTC) up to that day, `not_within_last_days N` for
  any other date or none); yes/no fields are strings with the values `yes` and `no`;
- `in`/`not_in` take a list or a comma-separated string ("PL,DE,FR");
- a multi-valued field (products, categories, tags, shipping methods, geo regions) holds
  when ANY of its values holds; `not_equals`/`not_in` are the negations of
  `equals`/`in` (so: when NONE does); a missing value never equals, contains or compares;
- `contains` on a field with a closed set of values (geo_regions) means "holds that
  value" (so `geo_regions contains eu` is never true of `non_eu`);
- an `Incomplete` multi-valued fact (some values could not be known: an ordered product
  the catalog lacks and the store did not describe in time) holds for `equals`/`in`/
  `contains`/`gt`/`lt` only through the values it has, and never for `not_equals`/`not_in`:
  an absence that cannot be checked is not assumed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

OPERATORS = ("equals", "not_equals", "gt", "lt", "in", "not_in", "contains", "before", "after",
             "within_last_days", "not_within_last_days")
OPERATOR_DOC = {
    "equals": "equal to the value (any value, for multi-valued fields)",
    "not_equals": "not equal (for multi-valued fields: no value equals)",
    "gt": "greater than (numbers, dates)",
    "lt": "less than (numbers, dates)",
    "in": "one of a list or comma-separated string: PL,DE,FR",
    "not_in": "none of a list or comma-separated string",
    "contains": "contains the text, case-insensitive; for a field with a closed set of values "
                "(geo_regions): holds that value",
    "before": "dates: before the date (YYYY-MM-DD)",
    "after": "dates: after the date (YYYY-MM-DD)",
    "within_last_days": "dates: within the last N days, the event's day included (value: N)",
    "not_within_last_days": "dates: not within the last N days, or no date at all (value: N)",
}
TODAY = "@today"  # the fact holding the event's day (UTC, YYYY-MM-DD), which the day-window operators read

EU = frozenset(["AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT", "LV", "LT",
                "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE"])
EEA = EU | {"NO", "IS", "LI"}
GEO_SCOPES = ("pl", "eu", "eea", "non_eu")  # Polski Pro's geo_scope values; also the regions of geo_regions
MAX_DEPTH = 8
MAX_CONDITIONS = 200

_NUM_OPS = ("equals", "not_equals", "gt", "lt", "in", "not_in")
_STR_OPS = ("equals", "not_equals", "in", "not_in", "contains")
_DATE_OPS = ("equals", "not_equals", "gt", "lt", "before", "after", "within_last_days", "not_within_last_days")
_YES_NO = ("yes", "no")
_BOOL_OPS = ("equals", "not_equals")


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str  # number | string | date
    multi: bool
    description: str
    operators: tuple[str, ...]
    values: tuple[str, ...] = ()  # a closed set of allowed values, if any
    # order | event (the event alone) | customer (customer state) | history (the customer's counted
    # orders, consumer/history.py) | subscriptions (the customer's subscriptions) | item (a line item
    # of a per-line-item trigger)
    scope: str = "order"


FIELDS: dict[str, FieldSpec] = {f.name: f for f in [
    # Polski Pro's automation filter fields — operators: its list, plus the natural extras
    FieldSpec("order_total", "number", False, "Order total (WC_Order::get_total)", _NUM_OPS),
    FieldSpec("order_status", "string", False, "Order status (pending, processing, completed, ...)", _STR_OPS),
    FieldSpec("item_count", "number", False, "Number of items, the sum of quantities (get_item_count)", _NUM_OPS),
    FieldSpec("billing_country", "string", False, "Billing country, ISO 3166-1 alpha-2", _STR_OPS, scope="event"),
    FieldSpec("shipping_country", "string", False, "Shipping country, falls back to billing", _STR_OPS, scope="event"),
    FieldSpec("geo_scope", "string", False, "One value per order, as Polski Pro defines it: pl (Poland), eu (the "
              "other 26 member states), eea (Norway, Iceland, Liechtenstein), non_eu (the rest of the world); from "
              "the shipping (else billing) country", ("equals", "not_equals", "in", "not_in"),
              values=GEO_SCOPES, scope="event"),
    FieldSpec("customer_email", "string", False, "Billing email (orders) or account email (customers)", _STR_OPS,
              scope="event"),
    FieldSpec("payment_method", "string", False, "Payment method id (get_payment_method)", _STR_OPS),
    FieldSpec("shipping_method", "string", True, "Shipping method ids of the shipping lines", _STR_OPS),
    FieldSpec("product_id", "number", True, "Product and variation ids in the order", _NUM_OPS),
    FieldSpec("category", "string", True, "product_cat ids of the ordered products (a variation: its parent's), "
              "from the store's product catalog", _STR_OPS),
    # extras
    FieldSpec("geo_regions", "string", True, "Every region the shipping (else billing) country belongs to: pl, eu "
              "(27 member states, Poland included), eea (EU + NO, IS, LI), non_eu; e.g. geo_regions contains eu",
              ("equals", "not_equals", "in", "not_in", "contains"), values=GEO_SCOPES, scope="event"),
    FieldSpec("product_tag", "string", True, "product_tag ids of the ordered products (a variation: its parent's), "
              "from the store's product catalog; on product events the product's tag ids and names", _STR_OPS),
    FieldSpec("previous_status", "string", False, "Order status before this change", _STR_OPS),
    FieldSpec("currency", "string", False, "Order currency", _STR_OPS),
    FieldSpec("coupon_code", "string", True, "Coupon codes used", _STR_OPS),
    FieldSpec("product_status", "string", False, "Product status (product events)", _STR_OPS, scope="event"),
    # customer state (kept by the rule consumer from the event stream)
    FieldSpec("order_count", "number", False, "Customer's number of paid orders, this one included", _NUM_OPS,
              scope="customer"),
    FieldSpec("total_spent", "number", False, "Customer's total spent in the order's (else the store's) currency",
              _NUM_OPS, scope="customer"),
    FieldSpec("average_order_value", "number", False, "total_spent / order_count", _NUM_OPS, scope="customer"),
    FieldSpec("tier", "string", False, "Customer's loyalty tier ('' = none)", _STR_OPS, scope="customer"),
    FieldSpec("points", "number", False, "Customer's loyalty points", _NUM_OPS, scope="customer"),
    FieldSpec("tags", "string", True, "Customer's tags", _STR_OPS, scope="customer"),
    FieldSpec("days_since_last_order", "number", False,
              "Whole days between the customer's previous paid order and this event (missing if none)", _NUM_OPS,
              scope="customer"),
    FieldSpec("first_order_date", "date", False, "Date of the customer's first paid order, YYYY-MM-DD", _DATE_OPS,
              scope="customer"),
    # AutomateWoo's order and customer rules
    FieldSpec("order_coupons", "string", True, "Coupon codes used on the order", _STR_OPS),
    FieldSpec("order_created_via", "string", False, "How the order was created: checkout, admin, rest-api, "
              "subscription (a renewal)...", _STR_OPS),
    FieldSpec("order_item_quantity", "number", True, "The quantity of each line item (e.g. gt 2: some line has "
              "3 or more)", _NUM_OPS),
    FieldSpec("customer_is_guest", "string", False, "yes: the shopper has no account (a guest, by billing email)",
              _BOOL_OPS, values=_YES_NO, scope="event"),
    FieldSpec("order_is_customers_first", "string", False, "yes: the customer has no other paid order than this "
              "one", _BOOL_OPS, values=_YES_NO, scope="customer"),
    FieldSpec("customer_role", "string", False, "The account's role (customer, subscriber...; guest for guests): "
              "on customer events from the event, on other events from the customer's state", _STR_OPS,
              scope="customer"),
    FieldSpec("purchased_products_all_time", "number", True, "Every product and variation id of the customer's "
              "paid orders", _NUM_OPS, scope="history"),
    FieldSpec("purchased_categories_all_time", "string", True, "product_cat ids of every product of the customer's "
              "paid orders, from the product catalog", _STR_OPS, scope="history"),
    FieldSpec("first_paid_order_date", "date", False, "Date the customer's first paid order was paid (UTC), "
              "YYYY-MM-DD", _DATE_OPS, scope="history"),
    FieldSpec("last_paid_order_date", "date", False, "Date the customer's last paid order was paid (UTC), "
              "YYYY-MM-DD; a purchase's own order included", _DATE_OPS, scope="history"),
    FieldSpec("order_count_last_365_days", "number", False, "The customer's paid orders paid in the 365 days up to "
              "the event", _NUM_OPS, scope="history"),
    FieldSpec("total_spent_last_365_days", "number", False, "What those orders total, in the order's (else the "
              "store's) currency", _NUM_OPS, scope="history"),
    # WooCommerce Subscriptions
    FieldSpec("has_active_subscription", "string", False, "yes: the customer has an active subscription",
              _BOOL_OPS, values=_YES_NO, scope="subscriptions"),
    FieldSpec("active_subscription_products", "number", True, "Product and variation ids of the customer's active "
              "subscriptions (e.g. in 12: subscribed to product 12)", _NUM_OPS, scope="subscriptions"),
    FieldSpec("subscription_status", "string", False, "The subscription's status (subscription events): active, "
              "on-hold, cancelled, pending-cancel, expired...", _STR_OPS, scope="event"),
    FieldSpec("subscription_products", "number", True, "Product and variation ids of the subscription "
              "(subscription events)", _NUM_OPS, scope="event"),
    FieldSpec("subscription_billing_period", "string", False, "day, week, month or year (subscription events)",
              _STR_OPS, scope="event"),
    FieldSpec("subscription_next_payment_date", "date", False, "The subscription's next payment date (UTC), "
              "YYYY-MM-DD (subscription events)", _DATE_OPS, scope="event"),
    # a line item of a per-line-item trigger (…_each_line_item)
    FieldSpec("item.product_id", "number", True, "The line item's product and variation id", _NUM_OPS, scope="item"),
    FieldSpec("item.category", "string", True, "product_cat ids of the line item's product (a variation: its "
              "parent's), from the product catalog", _STR_OPS, scope="item"),
    FieldSpec("item.product_tag", "string", True, "product_tag ids of the line item's product, from the product "
              "catalog", _STR_OPS, scope="item"),
    FieldSpec("item.quantity", "number", False, "The line item's quantity", _NUM_OPS, scope="item"),
    FieldSpec("item.total", "number", False, "The line item's total (after discounts)", _NUM_OPS, scope="item"),
    FieldSpec("item.name", "string", False, "The line item's product name", _STR_OPS, scope="item"),
]}
ITEM_FIELDS = frozenset(f.name for f in FIELDS.values() if f.scope == "item")

# A fact's value, as consumer/facts.py computes it (a missing fact is None).
FactValue = Decimal | int | str | list[str] | list[int] | None
Facts = Mapping[str, FactValue]
Predicate = Callable[[Facts], bool]


class ConditionError(ValueError):
    """An invalid condition tree; `path` names the offending element."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class Incomplete(list[str]):
    """A multi-valued fact some of whose values could not be known (see the module doc);
    `missing` says what is unknown (e.g. product ids), for dry-run explanations."""

    __slots__ = ("missing",)

    def __init__(self, values: list[str], missing: tuple[int, ...] = ()) -> None:
        super().__init__(values)
        self.missing = missing


def geo_scope(country: str) -> str | None:
    """Polski Pro's one value per order: pl, eu, eea or non_eu (None: no country)."""
    c = (country or "").strip().upper()
    if not c:
        return None
    if c == "PL":
        return "pl"
    if c in EU:
        return "eu"
    return "eea" if c in EEA else "non_eu"


def geo_regions(country: str) -> list[str]:
    """Every region the country belongs to (Poland: pl, eu, eea; Norway: eea, non_eu)."""
    c = (country or "").strip().upper()
    if not c:
        return []
    regions = []
    if c == "PL":
        regions.append("pl")
    if c in EU:
        regions.append("eu")
    if c in EEA:
        regions.append("eea")
    if c not in EU:
        regions.append("non_eu")
    return regions


def split_list(value: Any) -> list[str]:
    if isinstance(value, (list, tuple, set)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in str(value).split(",") if v.strip()]


def to_number(v: Any) -> Decimal | int | None:
    """A fact or option as a number, or None. Ints and Decimals pass through untouched."""
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, (int, Decimal)):
        return v
    if isinstance(v, float):
        return Decimal(repr(v))
    if isinstance(v, bytes):
        from wooflow.consumer.values import money

        return money(v)
    try:
        d = Decimal(str(v).strip())
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() else None


def norm(v: Any) -> str:
    return str(v).strip().lower()


def _values(v: Any) -> tuple[Any, ...] | list[Any]:
    if v is None:
        return ()
    if isinstance(v, (list, tuple)):
        return v
    if isinstance(v, (set, frozenset)):
        return tuple(v)
    return (v,)


def _date_key(v: Any) -> str | None:
    if v is None:
        return None
    s = str(v).strip()[:10]
    return s or None


def compile_leaf(leaf: Any, path: str = "$") -> Predicate:
    if not isinstance(leaf, dict):
        raise ConditionError(path, "a condition must be an object")
    extra = set(leaf) - {"field", "operator", "value"}
    if extra:
        raise ConditionError(f"{path}.{sorted(extra)[0]}", "unknown key (a condition has field, operator, value)")
    field = leaf.get("field")
    op = leaf.get("operator")
    if field not in FIELDS:
        raise ConditionError(f"{path}.field", f"unknown field {field!r}; one of {sorted(FIELDS)}")
    spec = FIELDS[str(field)]
    if op not in OPERATORS:
        raise ConditionError(f"{path}.operator", f"unknown operator {op!r}; one of {list(OPERATORS)}")
    if op not in spec.operators:
        raise ConditionError(f"{path}.operator", f"{field} supports {list(spec.operators)}, not {op!r}")
    if "value" not in leaf or leaf["value"] is None:
        raise ConditionError(f"{path}.value", "missing value")
    raw = leaf["value"]
    if isinstance(raw, (dict, bool)):
        raise ConditionError(f"{path}.value", f"must be a string, number or list, got {type(raw).__name__}")
    if isinstance(raw, (list, tuple)) and op not in ("in", "not_in"):
        raise ConditionError(f"{path}.value", f"{op} takes one value, not a list")
    name = spec.name
    options = split_list(raw) if op in ("in", "not_in") else [str(raw).strip()]
    if not options or (op != "contains" and not options[0]):
        raise ConditionError(f"{path}.value", f"{op} needs a non-empty value")
    if spec.values:
        bad = [o for o in options if norm(o) not in spec.values]
        if bad:
            raise ConditionError(f"{path}.value", f"{bad[0]!r} is not one of {list(spec.values)}")

    if spec.type == "number":
        nums = [to_number(o) for o in options]
        if any(n is None for n in nums):
            raise ConditionError(f"{path}.value", f"{field} compares numbers; {raw!r} is not a number")
        return _number_pred(name, op, nums, spec.multi)  # type: ignore[arg-type]
    if spec.type == "date":
        if op in ("within_last_days", "not_within_last_days"):
            days = to_number(options[0])
            if not isinstance(days, int) and not (isinstance(days, Decimal) and days == days.to_integral_value()):
                raise ConditionError(f"{path}.value", f"{op} takes a whole number of days, got {raw!r}")
            if days < 0 or days > 36_600:
                raise ConditionError(f"{path}.value", f"{op} takes 0 to 36600 days, got {raw!r}")
            return _window_pred(name, int(days), op == "within_last_days")
        key = _date_key(options[0])
        if key is None or len(key) != 10 or key[4] != "-" or key[7] != "-":
            raise ConditionError(f"{path}.value", f"{field} compares dates as YYYY-MM-DD, got {raw!r}")
        return _date_pred(name, {"before": "lt", "after": "gt"}.get(str(op), str(op)), key)
    if op == "contains" and spec.values:
        op = "equals"  # a closed set of values: contains means "holds that value"
    return _string_pred(name, op, [norm(o) for o in options], spec.multi)


def _complete(v: object) -> bool:
    return type(v) is not Incomplete


def _negated(name: str, member: Predicate) -> Predicate:
    """not_equals / not_in: no value matches, and none is unknown."""
    return lambda facts: not member(facts) and _complete(facts.get(name))


def _number_pred(name: str, op: str, nums: list[Decimal | int], multi: bool) -> Predicate:
    if op in ("gt", "lt"):
        bound = nums[0]
        if op == "gt":
            def gt(facts: Facts) -> bool:
                for v in _values(facts.get(name)):
                    n = to_number(v)
                    if n is not None and n > bound:
                        return True
                return False
            return gt

        def lt(facts: Facts) -> bool:
            for v in _values(facts.get(name)):
                n = to_number(v)
                if n is not None and n < bound:
                    return True
            return False
        return lt
    wanted = frozenset(nums)  # Decimal('1.0') == 1 and they hash alike: exact numeric membership

    def member(facts: Facts) -> bool:
        for v in _values(facts.get(name)):
            n = to_number(v)
            if n is not None and n in wanted:
                return True
        return False
    return member if op in ("equals", "in") else _negated(name, member)


def _string_pred(name: str, op: str, options: list[str], multi: bool) -> Predicate:
    if op == "contains":
        needle = options[0]

        def contains(facts: Facts) -> bool:
            for v in _values(facts.get(name)):
                if needle in norm(v):
                    return True
            return False
        return contains
    wanted = frozenset(options)

    def member(facts: Facts) -> bool:
        for v in _values(facts.get(name)):
            if norm(v) in wanted:
                return True
        return False
    return member if op in ("equals", "in") else _negated(name, member)


def _date_pred(name: str, op: str, key: str) -> Predicate:
    def test(facts: Facts) -> bool:
        d = _date_key(facts.get(name))
        if d is None:
            return op == "not_equals"
        if op == "equals":
            return d == key
        if op == "not_equals":
            return d != key
        return d > key if op == "gt" else d < key
    return test


def days_before(today: str, days: int) -> str | None:
    """The ISO date `days` days before the ISO date `today` (None: not a date)."""
    try:
        return (date.fromisoformat(today) - timedelta(days=days)).isoformat()
    except (ValueError, OverflowError):
        return None


def _window_pred(name: str, days: int, within: bool) -> Predicate:
    def test(facts: Facts) -> bool:
        d, today = _date_key(facts.get(name)), _date_key(facts.get(TODAY))
        start = days_before(today, days) if today is not None else None
        inside = d is not None and today is not None and start is not None and start <= d <= today
        return inside if within else not inside
    return test


def is_leaf(node: Any) -> bool:
    return isinstance(node, dict) and "field" in node


def _always(facts: Facts) -> bool:
    return True


def compile_tree(tree: Any, path: str = "$", _depth: int = 0, _count: list[int] | None = None,
                 leaves: dict[str, Predicate] | None = None) -> Predicate:
    """An empty tree (or a group without conditions) always matches. `leaves`: predicates of
    conditions compiled before, by their JSON — one function for a condition many rules share."""
    count = _count if _count is not None else [0]
    if tree is None or tree == {}:
        return _always
    if not isinstance(tree, dict):
        raise ConditionError(path, "a condition must be an object")
    if _depth > MAX_DEPTH:
        raise ConditionError(path, f"conditions nest deeper than {MAX_DEPTH} levels")
    count[0] += 1
    if count[0] > MAX_CONDITIONS:
        raise ConditionError(path, f"more than {MAX_CONDITIONS} conditions")
    if is_leaf(tree):
        if leaves is None:
            return compile_leaf(tree, path)
        key = json.dumps(tree, sort_keys=True, default=str)
        pred = leaves.get(key)
        if pred is None:
            pred = leaves[key] = compile_leaf(tree, path)
        return pred
    extra = set(tree) - {"match", "conditions"}
    if extra:
        raise ConditionError(f"{path}.{sorted(extra)[0]}",
                             "unknown key (a group has match and conditions; a condition has field, operator, value)")
    match = tree.get("match", "all")
    if match not in ("all", "any"):
        raise ConditionError(f"{path}.match", f"match must be 'all' or 'any', got {match!r}")
    children = tree.get("conditions", [])
    if not isinstance(children, list):
        raise ConditionError(f"{path}.conditions", "must be a list")
    preds = [compile_tree(c, f"{path}.conditions[{i}]", _depth + 1, count, leaves) for i, c in enumerate(children)]
    if not preds:
        return _always
    if len(preds) == 1:
        return preds[0]
    if match == "all":
        def all_of(facts: Facts) -> bool:
            for p in preds:
                if not p(facts):
                    return False
            return True
        return all_of

    def any_of(facts: Facts) -> bool:
        for p in preds:
            if p(facts):
                return True
        return False
    return any_of


def fields_used(tree: Any) -> set[str]:
    if not isinstance(tree, dict):
        return set()
    if is_leaf(tree):
        return {str(tree.get("field"))}
    out: set[str] = set()
    for c in tree.get("conditions") or []:
        out |= fields_used(c)
    return out


def _show(v: Any) -> Any:
    if isinstance(v, (list, tuple, set, frozenset)):
        return [_show(x) for x in v]
    if v is None:
        return None
    if isinstance(v, bytes):
        return str(to_number(v))
    return str(v)


def explain(tree: Any, facts: Facts, path: str = "$") -> dict[str, Any]:
    """Per-condition results with the actual values and a reason, for dry runs."""
    if not tree:
        return {"path": path, "result": True, "reason": "no conditions"}
    if is_leaf(tree):
        result = compile_leaf(tree, path)(facts)
        raw = facts.get(tree["field"])
        actual = _show(raw)
        verdict = "holds" if result else "does not hold"
        out = {"path": path, "field": tree["field"], "operator": tree["operator"], "expected": tree["value"],
               "actual": actual, "result": result,
               "reason": f"{tree['field']} is {actual!r}: {tree['operator']} {tree['value']!r} {verdict}"}
        if isinstance(raw, Incomplete):
            out["unknown_products"] = list(raw.missing)
            out["reason"] += (f" (products {list(raw.missing)} are unknown: not in the store's catalog and the "
                              "store did not describe them in time; an unknown value never counts as absent)")
        return out
    kids = [explain(c, facts, f"{path}.conditions[{i}]") for i, c in enumerate(tree.get("conditions", []))]
    match = tree.get("match", "all")
    result = (all(k["result"] for k in kids) if match == "all" else any(k["result"] for k in kids)) if kids else True
    held = sum(1 for k in kids if k["result"])
    return {"path": path, "match": match, "result": result, "conditions": kids,
            "reason": f"{held} of {len(kids)} conditions hold; match {match} → "
                      f"{'matched' if result else 'not matched'}"}
