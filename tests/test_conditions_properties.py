"""Condition evaluation: compiled predicates against a plain reference evaluator, over
random rules and random orders (hypothesis), plus Polski Pro's field semantics. Orders'
categories and tags resolve through the store's product catalog; the reference resolves
them from its own table of products."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.rules_kit import order_event, product_event
from tests.support import Discards
from wooflow.consumer.catalog import CATALOG_FIELDS, ProductCatalog
from wooflow.consumer.conditions import (
    FIELDS,
    TODAY,
    ConditionError,
    Incomplete,
    compile_tree,
    explain,
    geo_regions,
    geo_scope,
)
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
    if op in ("not_equals", "not_in") and isinstance(raw, Incomplete):
        return False  # some values are unknown: their absence cannot be checked
    if op == "contains" and spec.values:
        op = "equals"  # a closed set of values: contains means holds that value
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
        if op in ("within_last_days", "not_within_last_days"):
            today = facts.get(TODAY)
            n = int(Decimal(options[0]))
            inside = d is not None and today is not None and \
                date.fromisoformat(today) - timedelta(days=n) <= date.fromisoformat(d) <= date.fromisoformat(today)
            return inside if op == "within_last_days" else not inside
        if d is None:
            return op == "not_equals"
        o = options[0][:10]
        return {"equals": d == o, "not_equals": d != o, "gt": d > o, "lt": d < o, "after": d > o, "before": d < o}[op]
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
DATES = ["2024-01-01", "2025-06-30", "2025-07-01", "2025-07-31", "2026-12-31"]
TODAYS = ["2025-07-01", "2025-07-31", "2026-12-31"]  # the event's day (`@today`)
DAY_COUNTS = [0, 1, 30, "30", 31, 365, "0"]

number_value = st.one_of(st.sampled_from(NUMS), st.integers(-5, 1200), st.decimals("-10", "1500", places=2))
text_value = st.sampled_from(WORDS)
WORDS_WITH_TEXT = [w for w in WORDS if w.strip()]
TERM_IDS = ["5", "6", "7", "8", "70", "71", "72", "99", " 8 "]  # categories and tags of the catalog below


def leaf_for(field: str) -> st.SearchStrategy[dict[str, Any]]:
    spec = FIELDS[field]

    def value_for(op: str) -> st.SearchStrategy[Any]:
        if spec.values:
            one = st.sampled_from(list(spec.values) + [v.upper() for v in spec.values])
        elif spec.type == "number":
            one = number_value
        elif spec.type == "date":
            one = st.sampled_from(DAY_COUNTS if op.endswith("within_last_days") else DATES)
        elif field in CATALOG_FIELDS:
            one = st.sampled_from(TERM_IDS)
        else:
            one = st.sampled_from(WORDS_WITH_TEXT)  # an empty word is a rule the API rejects
        if op in ("in", "not_in"):
            items = st.lists(one, min_size=1, max_size=4)
            return st.one_of(items, items.map(lambda xs: ",".join(str(x) for x in xs)))
        return one

    return st.sampled_from(spec.operators).flatmap(
        lambda op: value_for(op).map(lambda v: {"field": field, "operator": op, "value": v}))


def trees_over(fields: list[str], max_leaves: int = 12) -> st.SearchStrategy[dict[str, Any]]:
    return st.recursive(
        st.sampled_from(fields).flatmap(leaf_for),
        lambda kids: st.fixed_dictionaries({"match": st.sampled_from(["all", "any"]),
                                            "conditions": st.lists(kids, max_size=4)}),
        max_leaves=max_leaves)


trees = trees_over(sorted(FIELDS))
# what an order's products decide: few leaves, so that each one matters to the verdict
product_trees = trees_over(["category", "product_tag", "product_id", "geo_scope", "geo_regions"], max_leaves=3)


def fact_for(field: str) -> st.SearchStrategy[Any]:
    spec = FIELDS[field]
    if spec.values:
        one: st.SearchStrategy[Any] = st.sampled_from(list(spec.values))
    elif spec.type == "number":
        one = st.one_of(st.integers(-5, 1200), st.decimals("-10", "1500", places=4), st.sampled_from(NUMS))
    elif spec.type == "date":
        one = st.sampled_from(DATES)
    elif field in CATALOG_FIELDS:
        one = st.sampled_from(TERM_IDS)
    else:
        one = text_value
    if spec.multi:
        values = st.lists(one, max_size=4)
        if field in CATALOG_FIELDS:  # from the catalog: some products may be unknown
            return st.one_of(values, values.map(lambda vs: Incomplete([str(v) for v in vs], (99,))))
        return values
    return st.one_of(st.none(), one)


facts_st = st.fixed_dictionaries({**{f: fact_for(f) for f in FIELDS}, TODAY: st.one_of(st.none(),
                                                                                   st.sampled_from(TODAYS))})


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


# The reference's view of the seeds' geography and of a store's catalog, written out by hand.
REF_SCOPE = {"PL": "pl", "DE": "eu", "FR": "eu", "NO": "eea", "IS": "eea", "US": "non_eu", "CH": "non_eu"}
REF_REGIONS = {"PL": ["pl", "eu", "eea"], "DE": ["eu", "eea"], "FR": ["eu", "eea"], "NO": ["eea", "non_eu"],
               "IS": ["eea", "non_eu"], "US": ["non_eu"], "CH": ["non_eu"]}
# product id → (categories, tags, parent); 30 and 31 are variations of 3 (a variation has no
# terms of its own in WooCommerce); 40 is a variation of an unknown parent
PRODUCTS = {1: ([5], [70], 0), 2: ([6, 7], [], 0), 3: ([8], [71, 72], 0), 4: ([], [], 0),
            30: ([], [], 3), 31: ([], [], 3), 40: ([], [], 41)}
ORDERABLE = [1, 2, 3, 4, 9, 30, 31, 40]  # 9 is in no catalog


def catalog_of(store: str) -> ProductCatalog:
    """A catalog that learnt PRODUCTS from product events (no database, no store to ask)."""
    catalog = ProductCatalog(None, None)
    catalog.observe([product_event(store, pid, categories=tuple(cats), tags=tuple(tags), parent_id=parent,
                                   type="variation" if parent else "simple")
                     for pid, (cats, tags, parent) in PRODUCTS.items()])
    return catalog


def ref_terms(items: list[tuple[int, int, int]], which: int) -> list[str]:
    """Categories (which=0) or tags (1) of the ordered products, Incomplete when one is unknown."""
    out: list[str] = []
    unknown = False
    for pid, _, vid in items:
        wanted = pid or vid
        if wanted not in PRODUCTS:
            unknown = True
            continue
        row = PRODUCTS[wanted]
        out += [str(t) for t in row[which]]
        if row[2]:
            if row[2] not in PRODUCTS:
                unknown = True
            else:
                out += [str(t) for t in PRODUCTS[row[2]][which]]
    return Incomplete(out, (0,)) if unknown else out


@pytest.mark.parametrize("tree_st", [trees, product_trees], ids=["any field", "product fields"])
def test_conditions_on_real_order_events_agree_with_the_reference(tree_st: st.SearchStrategy[Any]) -> None:
    tally = Discards("conditions on real order events vs the reference")
    catalog = catalog_of("s")

    @settings(max_examples=250, deadline=None)
    @given(tree=tree_st, total=st.decimals("0", "2000", places=2), country=st.sampled_from([*REF_SCOPE, ""]),
           ship=st.sampled_from(["", "FR", "CH", "NO"]),
           ordered=st.lists(st.tuples(st.sampled_from(ORDERABLE), st.integers(1, 3), st.booleans()), min_size=1,
                            max_size=3))
    def agree(tree: dict[str, Any], total: Decimal, country: str, ship: str,
              ordered: list[tuple[int, int, bool]]) -> None:
        tree = as_group(tree)
        # a variation is ordered as WooCommerce records it — its parent in product_id — or, for
        # a line item whose product is gone, with product_id 0: then the catalog names the parent
        items = [((0 if gone else PRODUCTS[p][2]), q, p) if p in PRODUCTS and PRODUCTS[p][2] else (p, q, 0)
                 for p, q, gone in ordered]
        ev = order_event("s", 1, customer_id=2, total=str(total), country=country, shipping_country=ship,
                         items=items)
        ctx = TriggerContext("OrderEvent", ev, Loyalty(), status="processing", currency="PLN",
                             after=Aggregates(1, {"PLN": total}, 5, 0, 0, "gold"))
        facts = LazyFacts(ctx, catalog)
        predicate = compiled(tree, tally)
        if predicate is None:
            return
        where = ship or country
        reference = LazyFacts(ctx, catalog).materialise() | {
            "geo_scope": REF_SCOPE.get(where), "geo_regions": REF_REGIONS.get(where, []),
            "category": ref_terms(items, 0), "product_tag": ref_terms(items, 1)}
        assert predicate(facts) == ref_tree(tree, reference)

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

def test_geo_scope_is_one_value_per_order_and_geo_regions_every_region() -> None:
    assert [geo_scope(c) for c in ("PL", "de", "NO", "IS", "LI", "CH", "US", "")] == \
        ["pl", "eu", "eea", "eea", "eea", "non_eu", "non_eu", None]
    assert geo_regions("PL") == ["pl", "eu", "eea"]
    assert geo_regions("de") == ["eu", "eea"]
    assert geo_regions("NO") == ["eea", "non_eu"]
    assert geo_regions("CH") == ["non_eu"]
    assert geo_regions("") == []


def _holds(facts: Any, field: str, op: str, value: Any) -> bool:
    return compile_tree({"match": "all", "conditions": [{"field": field, "operator": op, "value": value}]})(facts)


def test_order_fields_follow_polski_pro() -> None:
    ev = order_event("s", 1, total="120.50", country="PL", shipping_country="", email="Ala@Example.com",
                     items=[(1, 2), (3, 1, 31)], payment="bacs", shipping_methods=("flat_rate", "local_pickup"))
    facts = LazyFacts(TriggerContext("OrderEvent", ev, Loyalty(), status="processing"), catalog_of("s"))

    def holds(field: str, op: str, value: Any) -> bool:
        return _holds(facts, field, op, value)

    assert holds("order_total", "gt", "120") and holds("order_total", "equals", "120.5")
    assert not holds("order_total", "lt", 100) and holds("order_total", "not_equals", "99")
    assert holds("item_count", "equals", 3)
    assert holds("shipping_country", "equals", "pl")  # falls back to billing
    assert holds("billing_country", "in", "DE, PL ,FR") and holds("billing_country", "not_in", ["DE", "FR"])
    # Polski Pro: Poland is pl — not also eu or eea, which would change migrated rules
    assert holds("geo_scope", "equals", "pl") and not holds("geo_scope", "equals", "eu")
    assert not holds("geo_scope", "in", "eu,eea,non_eu") and holds("geo_scope", "not_in", "eu,eea")
    assert holds("geo_regions", "contains", "eu") and holds("geo_regions", "contains", "pl")
    assert holds("geo_regions", "equals", "eea") and not holds("geo_regions", "contains", "non_eu")
    assert holds("customer_email", "contains", "example.COM") and holds("customer_email", "equals", "ala@example.com")
    assert holds("payment_method", "in", "cod,bacs")
    assert holds("shipping_method", "in", "local_pickup") and holds("shipping_method", "not_in", "free_shipping")
    assert holds("product_id", "in", "1,9") and not holds("product_id", "not_in", "1") and holds("product_id", "in", 31)
    # categories of the ordered products, from the catalog: 1 → 5; variation 31 → its parent 3's 8
    assert holds("category", "in", "8") and holds("category", "in", "5") and holds("category", "not_in", "6,7")
    assert not holds("category", "not_in", "8")
    assert holds("product_tag", "in", "72,99") and holds("product_tag", "equals", 70)
    gone = LazyFacts(TriggerContext("OrderEvent", order_event("s", 2, items=[(0, 1, 30)]), Loyalty()),
                     catalog_of("s"))
    assert _holds(gone, "category", "equals", 8)  # product_id 0: the catalog names the variation's parent
    assert not holds("product_tag", "not_in", "71")


def test_geo_regions_contains_means_membership_not_text() -> None:
    """non_eu contains the letters "eu": for the closed set of regions, contains is membership."""
    ev = order_event("s", 1, country="US")
    facts = LazyFacts(TriggerContext("OrderEvent", ev, Loyalty()))
    assert _holds(facts, "geo_regions", "contains", "non_eu") and not _holds(facts, "geo_regions", "contains", "eu")
    with pytest.raises(ConditionError):
        compile_tree({"match": "all", "conditions": [{"field": "geo_regions", "operator": "contains", "value": "e"}]})


def test_an_unknown_product_never_counts_as_absent() -> None:
    """Product 9 is in no catalog (and no store answered): `in` holds through the known
    products only, `not_in` does not hold at all — and a dry run says which is unknown."""
    ev = order_event("s", 1, items=[(1, 1), (9, 1)])
    facts = LazyFacts(TriggerContext("OrderEvent", ev, Loyalty()), catalog_of("s"))
    assert _holds(facts, "category", "in", "5")
    assert not _holds(facts, "category", "in", "6") and not _holds(facts, "category", "not_in", "6")
    assert not _holds(facts, "product_tag", "not_equals", "1")
    leaf = explain({"field": "category", "operator": "not_in", "value": "6"}, facts)
    assert leaf["result"] is False and leaf["unknown_products"] == [9] and "unknown" in leaf["reason"]
    # a variation whose parent is unknown: unknown too
    variation = LazyFacts(TriggerContext("OrderEvent", order_event("s", 2, items=[(41, 1, 40)]), Loyalty()),
                          catalog_of("s"))
    assert not _holds(variation, "category", "not_in", "6")
    assert explain({"field": "category", "operator": "not_in", "value": "6"}, variation)["unknown_products"] == [41]
    # without any catalog, nothing about the ordered products is known
    bare = LazyFacts(TriggerContext("OrderEvent", order_event("s", 3, items=[(1, 1)]), Loyalty()))
    assert not _holds(bare, "category", "in", "5") and not _holds(bare, "category", "not_in", "5")


@pytest.mark.parametrize("leaf, path", [
    ({"field": "order_total", "operator": "contains", "value": "1"}, "$.conditions[0].operator"),
    ({"field": "order_total", "operator": "gt", "value": "lots"}, "$.conditions[0].value"),
    ({"field": "geo_scope", "operator": "equals", "value": "asia"}, "$.conditions[0].value"),
    ({"field": "geo_scope", "operator": "contains", "value": "eu"}, "$.conditions[0].operator"),
    ({"field": "geo_regions", "operator": "in", "value": "eu,asia"}, "$.conditions[0].value"),
    ({"field": "billing_country", "operator": "in", "value": " , "}, "$.conditions[0].value"),
    ({"field": "first_order_date", "operator": "gt", "value": "yesterday"}, "$.conditions[0].value"),
    ({"field": "tier", "operator": "equals"}, "$.conditions[0].value"),
    ({"field": "tier", "operator": "equals", "value": "x", "extra": 1}, "$.conditions[0].extra"),
])
def test_invalid_conditions_name_their_path(leaf: dict[str, Any], path: str) -> None:
    with pytest.raises(ConditionError) as info:
        compile_tree({"match": "all", "conditions": [leaf]})
    assert info.value.path == path
