"""Condition evaluation: compiled predicates against a plain reference evaluator, over
random rules and random orders (hypothesis), plus the seed-002 field semantics."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.rules_kit import order_event
from tests.support import Discards
from wooflow.consumer.conditions import FIELDS, ConditionError, compile_tree, explain, geo_scopes
from wooflow.consumer.facts import LazyFacts
from wooflow.consumer.state import Aggregates
from wooflow.consumer.tiers import Loyalty
from wooflow.consumer.triggers import TriggerContext

pytestmark = pytest.mark.unit

# --- the reference: the module docstring's semantics, written as plainly as possible ---------


def ref_options(op: str, value: Any) -> list[str]:
    if op in ("in", "not_in"):
        items = value if isinstance(value, list) else str(value).split(",")
        return [str(i).strip() for i in items if str(i).strip()]
    return [str(value).strip()]


def ref_number(v: Any) -> Decimal | None:
    try:
        return Decimal(str(v).strip()) if v is not None else None
    except InvalidOperation:
        return None


def ref_leaf(leaf: dict[str, Any], facts: dict[str, Any]) -> bool:
    spec = FIELDS[leaf["field"]]
    raw = facts.get(leaf["field"])
    values = [] if raw is None else (list(raw) if isinstance(raw, list) else [raw])
    op = leaf["operator"]
    options = ref_options(op, leaf["value"])
    if spec.type == "number":
        nums = [n for n in (ref_number(v) for v in values) if n is not None]
        wanted = [Decimal(o) for o in options]
        if op == "gt":
            return any(n > wanted[0] for n in nums)
        if op == "lt":
            return any(n < wanted[0] for n in nums)
        hit = any(n == w for n in nums for w in wanted)
        return hit if op in ("equals", "in") else not hit
    if spec.type == "date":
        d = str(raw)[:10] if raw is not None else None
        if d is None:
            return op == "not_equals"
        o = options[0][:10]
        return {"equals": d == o, "not_equals": d != o, "gt": d > o, "lt": d < o}[op]
    texts = [str(v).strip().lower() for v in values]
    wanted_s = [o.lower() for o in options]
    if op == "contains":
        return any(wanted_s[0] in t for t in texts)
    hit = any(t == w for t in texts for w in wanted_s)
    return hit if op in ("equals", "in") else not hit


def ref_tree(tree: dict[str, Any], facts: dict[str, Any]) -> bool:
    if not tree:
        return True
    if "field" in tree:
        return ref_leaf(tree, facts)
    results = [ref_tree(c, facts) for c in tree.get("conditions", [])]
    if not results:
        return True
    return all(results) if tree.get("match", "all") == "all" else any(results)


# --- random rules and orders -------------------------------------------------------------

WORDS = ["PL", "de", " Fr ", "US", "cod", "bacs", "flat_rate", "VIP", "gold", "a@x.pl", "3", "12", "", "eu", "pl",
         "non_eu", "eea", "processing", "Completed"]
NUMS = ["0", "1", "49.99", "50", "100", "100.0", "250.5", "-3", "1000", "12", "3"]
DATES = ["2024-01-01", "2025-06-30", "2025-07-01", "2026-12-31"]

number_value = st.one_of(st.sampled_from(NUMS), st.integers(-5, 1200), st.decimals("-10", "1500", places=2))
text_value = st.sampled_from(WORDS)
WORDS_WITH_TEXT = [w for w in WORDS if w.strip()]


def leaf_for(field: str) -> st.SearchStrategy[dict[str, Any]]:
    spec = FIELDS[field]

    def value_for(op: str) -> st.SearchStrategy[Any]:
        if spec.values:
            one = st.sampled_from(list(spec.values) + [v.upper() for v in spec.values])
        elif spec.type == "number":
            one = number_value
        elif spec.type == "date":
            one = st.sampled_from(DATES)
        else:
            one = st.sampled_from(WORDS_WITH_TEXT)  # an empty word is a rule the API rejects
        if op in ("in", "not_in"):
            items = st.lists(one, min_size=1, max_size=4)
            return st.one_of(items, items.map(lambda xs: ",".join(str(x) for x in xs)))
        return one

    return st.sampled_from(spec.operators).flatmap(
        lambda op: value_for(op).map(lambda v: {"field": field, "operator": op, "value": v}))


leaves = st.sampled_from(sorted(FIELDS)).flatmap(leaf_for)
trees = st.recursive(
    leaves,
    lambda kids: st.fixed_dictionaries({"match": st.sampled_from(["all", "any"]),
                                        "conditions": st.lists(kids, max_size=4)}),
    max_leaves=12)


def fact_for(field: str) -> st.SearchStrategy[Any]:
    spec = FIELDS[field]
    if spec.values:
        one: st.SearchStrategy[Any] = st.sampled_from(list(spec.values))
    elif spec.type == "number":
        one = st.one_of(st.integers(-5, 1200), st.decimals("-10", "1500", places=4), st.sampled_from(NUMS))
    elif spec.type == "date":
        one = st.sampled_from(DATES)
    else:
        one = text_value
    if spec.multi:
        return st.lists(one, max_size=4)
    return st.one_of(st.none(), one)


facts_st = st.fixed_dictionaries({f: fact_for(f) for f in FIELDS})


def as_group(tree: dict[str, Any]) -> dict[str, Any]:
    return tree if "field" not in tree else {"match": "all", "conditions": [tree]}


def compiled(tree: dict[str, Any], tally: Discards) -> Callable[[Any], bool] | None:
    """The compiled predicate, or None (counted) for a tree the compiler rejects: only
    values the reference cannot read either are rejected (e.g. an empty list)."""
    try:
        predicate = compile_tree(tree)
    except ConditionError:
        tally.drop()
        return None
    tally.keep()
    return predicate


def test_compiled_conditions_agree_with_the_reference() -> None:
    tally = Discards("compiled conditions vs the reference")

    @settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(tree=trees, facts=facts_st)
    def agree(tree: dict[str, Any], facts: dict[str, Any]) -> None:
        tree = as_group(tree)
        predicate = compiled(tree, tally)
        if predicate is None:
            return
        assert predicate(facts) == ref_tree(tree, facts)
        assert explain(tree, facts)["result"] == ref_tree(tree, facts)

    agree()
    tally.check()


def test_conditions_on_real_order_events_agree_with_the_reference() -> None:
    tally = Discards("conditions on real order events vs the reference")

    @settings(max_examples=200, deadline=None)
    @given(tree=trees, total=st.decimals("0", "2000", places=2), country=st.sampled_from(["PL", "DE", "NO", "US", ""]),
           ship=st.sampled_from(["", "FR", "CH"]), pids=st.lists(st.integers(1, 20), min_size=1, max_size=3))
    def agree(tree: dict[str, Any], total: Decimal, country: str, ship: str, pids: list[int]) -> None:
        tree = as_group(tree)
        ev = order_event("s", 1, customer_id=2, total=str(total), country=country, shipping_country=ship,
                         items=[(p, 1 + p % 3, [p % 4]) for p in pids])
        ctx = TriggerContext("OrderEvent", ev, Loyalty(), status="processing", currency="PLN",
                             after=Aggregates(1, {"PLN": total}, 5, 0, 0, "gold"))
        facts = LazyFacts(ctx)
        predicate = compiled(tree, tally)
        if predicate is None:
            return
        assert predicate(facts) == ref_tree(tree, LazyFacts(ctx).materialise())

    agree()
    tally.check()


def test_a_property_that_discards_most_examples_fails() -> None:
    tally = Discards("mostly discarded")

    @settings(max_examples=50, deadline=None, database=None)
    @given(n=st.integers(0, 9))
    def prop(n: int) -> None:
        if n > 1:
            tally.drop()
            return
        tally.keep()

    prop()
    with pytest.raises(AssertionError, match="discarded"):
        tally.check()


# --- Polski Pro's filter semantics, spelled out ---------------------------------------------------------

def test_geo_scopes() -> None:
    assert geo_scopes("PL") == ["pl", "eu", "eea"]
    assert geo_scopes("de") == ["eu", "eea"]
    assert geo_scopes("NO") == ["eea", "non_eu"]
    assert geo_scopes("CH") == ["non_eu"]
    assert geo_scopes("") == []


def test_order_fields_follow_seed_002() -> None:
    ev = order_event("s", 1, total="120.50", country="PL", shipping_country="", email="Ala@Example.com",
                     items=[(5, 2, [7]), (9, 1, [8, 7])], payment="bacs",
                     shipping_methods=("flat_rate", "local_pickup"))
    facts = LazyFacts(TriggerContext("OrderEvent", ev, Loyalty(), status="processing"))

    def holds(field: str, op: str, value: Any) -> bool:
        return compile_tree({"match": "all", "conditions": [{"field": field, "operator": op, "value": value}]})(facts)

    assert holds("order_total", "gt", "120") and holds("order_total", "equals", "120.5")
    assert not holds("order_total", "lt", 100) and holds("order_total", "not_equals", "99")
    assert holds("item_count", "equals", 3)
    assert holds("shipping_country", "equals", "pl")  # falls back to billing
    assert holds("billing_country", "in", "DE, PL ,FR") and holds("billing_country", "not_in", ["DE", "FR"])
    assert holds("geo_scope", "equals", "eu") and holds("geo_scope", "equals", "pl")
    assert not holds("geo_scope", "equals", "non_eu")
    assert holds("customer_email", "contains", "example.COM") and holds("customer_email", "equals", "ala@example.com")
    assert holds("payment_method", "in", "cod,bacs")
    assert holds("shipping_method", "in", "local_pickup") and holds("shipping_method", "not_in", "free_shipping")
    assert holds("product_id", "in", "1,9") and not holds("product_id", "not_in", "5")
    assert holds("category", "in", "8") and holds("category", "not_in", "1,2")


@pytest.mark.parametrize("leaf, path", [
    ({"field": "order_total", "operator": "contains", "value": "1"}, "$.conditions[0].operator"),
    ({"field": "order_total", "operator": "gt", "value": "lots"}, "$.conditions[0].value"),
    ({"field": "geo_scope", "operator": "equals", "value": "asia"}, "$.conditions[0].value"),
    ({"field": "billing_country", "operator": "in", "value": " , "}, "$.conditions[0].value"),
    ({"field": "first_order_date", "operator": "gt", "value": "yesterday"}, "$.conditions[0].value"),
    ({"field": "tier", "operator": "equals"}, "$.conditions[0].value"),
    ({"field": "tier", "operator": "equals", "value": "x", "extra": 1}, "$.conditions[0].extra"),
])
def test_invalid_conditions_name_their_path(leaf: dict[str, Any], path: str) -> None:
    with pytest.raises(ConditionError) as info:
        compile_tree({"match": "all", "conditions": [leaf]})
    assert info.value.path == path
