"""Rule conditions: a tree of comparisons over an event's facts, compiled once.

A tree is `{"match": "all"|"any", "conditions": [leaf | tree, ...]}`; a leaf is
`{"field": F, "operator": OP, "value": V}`. Fields are the Polski Pro set (order_total,
order_status, item_count, billing_country, shipping_country, geo_scope, customer_email,
payment_method, shipping_method, product_id, category) plus customer-state fields.
Operators: equals, not_equals, gt, lt, in, not_in, contains; `in`/`not_in` take a list
or a comma-separated string. Multi-valued fields (products, categories, tags, shipping
methods, geo scopes) match when ANY of their values matches (`not_*`: when none does).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

OPERATORS = ("equals", "not_equals", "gt", "lt", "in", "not_in", "contains")

EU = frozenset("AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE".split())
EEA = EU | {"NO", "IS", "LI"}
GEO_SCOPES = ("pl", "eu", "eea", "non_eu")


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str  # number | string | date
    multi: bool
    description: str


FIELDS: dict[str, FieldSpec] = {f.name: f for f in [
    FieldSpec("order_total", "number", False, "Order total"),
    FieldSpec("order_status", "string", False, "Order status (pending, processing, completed, ...)"),
    FieldSpec("previous_status", "string", False, "Order status before this change"),
    FieldSpec("item_count", "number", False, "Number of items (sum of quantities)"),
    FieldSpec("billing_country", "string", False, "Billing country (ISO code)"),
    FieldSpec("shipping_country", "string", False, "Shipping country, falls back to billing"),
    FieldSpec("geo_scope", "string", True, "pl / eu (27 member states) / eea (EU + NO, IS, LI) / non_eu"),
    FieldSpec("customer_email", "string", False, "Billing or account email"),
    FieldSpec("payment_method", "string", False, "Payment method id"),
    FieldSpec("shipping_method", "string", True, "Shipping method ids"),
    FieldSpec("product_id", "number", True, "Product (or variation) ids in the order"),
    FieldSpec("category", "string", True, "Category ids and slugs of the ordered products"),
    FieldSpec("currency", "string", False, "Order currency"),
    FieldSpec("coupon_code", "string", True, "Coupon codes used"),
    FieldSpec("customer_role", "string", False, "Customer role"),
    FieldSpec("order_count", "number", False, "Customer's number of orders"),
    FieldSpec("total_spent", "number", False, "Customer's total spent in the order currency"),
    FieldSpec("average_order_value", "number", False, "Customer's average order value"),
    FieldSpec("tier", "string", False, "Customer's loyalty tier"),
    FieldSpec("points", "number", False, "Customer's points"),
    FieldSpec("tags", "string", True, "Customer's tags"),
    FieldSpec("days_since_last_order", "number", False, "Days since the previous order"),
    FieldSpec("first_order_date", "date", False, "Date of the customer's first order (YYYY-MM-DD)"),
]}

Facts = dict[str, Any]
Predicate = Callable[[Facts], bool]


class ConditionError(ValueError):
    """An invalid condition tree; `path` names the offending element."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def geo_scopes(country: str) -> list[str]:
    c = (country or "").upper()
    if not c:
        return []
    scopes = []
    if c == "PL":
        scopes.append("pl")
    if c in EU:
        scopes.append("eu")
    if c in EEA:
        scopes.append("eea")
    if c not in EU:
        scopes.append("non_eu")
    return scopes


def split_list(value: Any) -> list[str]:
    if isinstance(value, (list, tuple, set)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in str(value).split(",") if v.strip()]


def _num(v: Any) -> Decimal | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        return Decimal(str(v).strip())
    except (InvalidOperation, ValueError):
        return None


def _norm(v: Any) -> str:
    return str(v).strip().lower()


def _values(v: Any) -> Iterable[Any]:
    if v is None:
        return ()
    if isinstance(v, (list, tuple, set, frozenset)):
        return v
    return (v,)


def _eq(a: Any, b: Any) -> bool:
    na, nb = _num(a), _num(b)
    if na is not None and nb is not None:
        return na == nb
    return _norm(a) == _norm(b)


def compile_leaf(leaf: dict[str, Any], path: str = "$") -> Predicate:
    field = leaf.get("field")
    op = leaf.get("operator")
    if field not in FIELDS:
        raise ConditionError(f"{path}.field", f"unknown field {field!r}; one of {sorted(FIELDS)}")
    if op not in OPERATORS:
        raise ConditionError(f"{path}.operator", f"unknown operator {op!r}; one of {list(OPERATORS)}")
    if "value" not in leaf:
        raise ConditionError(f"{path}.value", "missing value")
    raw = leaf["value"]
    name = str(field)

    if op in ("gt", "lt"):
        bound = _num(raw)
        if bound is None:
            raise ConditionError(f"{path}.value", f"{op} needs a number, got {raw!r}")

        def cmp(facts: Facts) -> bool:
            for v in _values(facts.get(name)):
                n = _num(v)
                if n is not None and (n > bound if op == "gt" else n < bound):
                    return True
            return False
        return cmp

    if op in ("in", "not_in"):
        options = split_list(raw)
        if not options:
            raise ConditionError(f"{path}.value", f"{op} needs a non-empty list")
        nums = {n for n in (_num(o) for o in options) if n is not None}
        strs = {_norm(o) for o in options}

        def member(facts: Facts) -> bool:
            for v in _values(facts.get(name)):
                n = _num(v)
                if (n is not None and n in nums) or _norm(v) in strs:
                    return True
            return False
        return member if op == "in" else (lambda facts: not member(facts))

    if op == "contains":
        needle = _norm(raw)
        return lambda facts: any(needle in _norm(v) for v in _values(facts.get(name)))

    def equal(facts: Facts) -> bool:
        return any(_eq(v, raw) for v in _values(facts.get(name)))
    return equal if op == "equals" else (lambda facts: not equal(facts))


def is_leaf(node: dict[str, Any]) -> bool:
    return "field" in node


def compile_tree(tree: dict[str, Any] | None, path: str = "$") -> Predicate:
    """An empty tree (or no conditions) always matches."""
    if not tree:
        return lambda facts: True
    if not isinstance(tree, dict):
        raise ConditionError(path, "a condition must be an object")
    if is_leaf(tree):
        return compile_leaf(tree, path)
    match = tree.get("match", "all")
    if match not in ("all", "any"):
        raise ConditionError(f"{path}.match", f"match must be 'all' or 'any', got {match!r}")
    children = tree.get("conditions", [])
    if not isinstance(children, list):
        raise ConditionError(f"{path}.conditions", "must be a list")
    preds = [compile_tree(c, f"{path}.conditions[{i}]") for i, c in enumerate(children)]
    if not preds:
        return lambda facts: True
    if match == "all":
        return lambda facts: all(p(facts) for p in preds)
    return lambda facts: any(p(facts) for p in preds)


def explain(tree: dict[str, Any] | None, facts: Facts, path: str = "$") -> dict[str, Any]:
    """Per-condition results with the actual values, for dry runs."""
    if not tree:
        return {"path": path, "result": True, "reason": "no conditions"}
    if is_leaf(tree):
        result = compile_leaf(tree, path)(facts)
        actual = facts.get(tree["field"])
        return {"path": path, "field": tree["field"], "operator": tree["operator"], "expected": tree["value"],
                "actual": [str(v) for v in actual] if isinstance(actual, (list, tuple, set)) else
                (str(actual) if actual is not None else None), "result": result}
    kids = [explain(c, facts, f"{path}.conditions[{i}]") for i, c in enumerate(tree.get("conditions", []))]
    match = tree.get("match", "all")
    result = all(k["result"] for k in kids) if match == "all" else any(k["result"] for k in kids)
    return {"path": path, "match": match, "result": result if kids else True, "conditions": kids}
