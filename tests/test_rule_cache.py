"""The rule consumer's caches with many stores in mind: a rule change reloads its own store
and nothing else (through LISTEN/NOTIFY or the fallback), a forced refresh of unchanged
rules reloads nothing, rules that share a condition share its compiled predicate, a store
compiled on first use knows the state its rules read, whether they read the catalog or the
customer's subscriptions, the triggers they listen to, each rule's holdout share and
whether it is a staged workflow, a disabled rule's `when_disabled` is known, a change made
in SQL without touching `updated_at` or `version` is still loaded, and a store's loyalty
settings are parsed again only when they changed."""

from __future__ import annotations

import json
import threading

import pytest
from sqlalchemy import text

from tests.pipeline import add_rule
from tests.support import make_store, wait_for
from wooflow.consumer.rules import RuleCache, RuleListener
from wooflow.consumer.runner import LoyaltyCache
from wooflow.consumer.triggers import Keep, for_schema

pytestmark = pytest.mark.integration

NOTE = [{"type": "add_order_note", "params": {"note": "n"}}]
BIG = {"match": "all", "conditions": [{"field": "order_total", "operator": "gt", "value": "100"}]}


def new_order_rule(name: str, conditions: dict[str, object] | None = None) -> dict[str, object]:
    return {"name": name, "trigger": "new_order", "conditions": conditions or BIG, "actions": NOTE}


def test_the_fallback_reloads_only_the_store_whose_rules_changed(settings, engine) -> None:  # type: ignore[no-untyped-def]
    a, b = make_store(engine).id, make_store(engine).id
    add_rule(engine, a, new_order_rule("a1"))
    add_rule(engine, b, new_order_rule("b1"))
    cache = RuleCache(engine, fallback_interval=0)
    assert cache.refresh(force=True)
    [b1] = cache.for_trigger(b, "new_order")
    reloads = cache.reloads
    assert not cache.refresh(force=True), "nothing changed: nothing to reload"
    assert cache.reloads == reloads

    a2 = add_rule(engine, a, new_order_rule("a2"))
    assert cache.refresh()
    assert [r.id for r in cache.for_trigger(a, "new_order")][-1] == a2
    assert cache.for_trigger(b, "new_order")[0] is b1, "another store's rules were compiled again"
    assert cache.reloads == reloads + 1, "one store reloaded"

    with engine.begin() as conn:
        conn.execute(text("DELETE FROM rules WHERE store_id = :s"), {"s": a})
    assert cache.refresh()
    assert cache.for_trigger(a, "new_order") == () and cache.get(a2) is None
    assert cache.for_trigger(b, "new_order")[0] is b1


def test_a_notified_change_reloads_its_store_and_leaves_the_fallback_nothing(settings, engine) -> None:  # type: ignore[no-untyped-def]
    a, b = make_store(engine).id, make_store(engine).id
    add_rule(engine, a, new_order_rule("a1"))
    rb = add_rule(engine, b, new_order_rule("b1"))
    cache = RuleCache(engine, fallback_interval=0)
    cache.refresh(force=True)
    [a1] = cache.for_trigger(a, "new_order")
    stop = threading.Event()
    listener = RuleListener(cache, settings.database_url, stop)
    listener.start()
    try:
        assert listener.listening.wait(10)
        with engine.begin() as conn:
            conn.execute(text("UPDATE rules SET version = version + 1, updated_at = now() WHERE id = :id"),
                         {"id": rb})
        wait_for(lambda: (rule := cache.get(rb)) is not None and rule.version == 2, 30, 0.02, "the notified reload")
        reloads = cache.reloads
        assert not cache.refresh(), "the fallback found a change the listener had already loaded"
        assert cache.reloads == reloads
        assert cache.for_trigger(a, "new_order")[0] is a1
    finally:
        stop.set()
        listener.join(10)


def test_rules_that_share_a_condition_share_its_predicate(settings, engine) -> None:  # type: ignore[no-untyped-def]
    stores = [make_store(engine).id for _ in range(2)]
    for s in stores:
        add_rule(engine, s, new_order_rule("big"))
    cache = RuleCache(engine)
    cache.refresh(force=True)
    r1, r2 = (cache.for_trigger(s, "new_order")[0] for s in stores)
    assert r1.id != r2.id and r1.predicate is r2.predicate
    assert r1.spec.conditions == BIG  # the API's view of the rule is still there when asked for


def test_a_store_compiled_on_first_use_knows_its_state_level_and_catalog_use(settings, engine) -> None:  # type: ignore[no-untyped-def]
    s = make_store(engine).id
    add_rule(engine, s, new_order_rule("big"))
    cache = RuleCache(engine, fallback_interval=0)
    cache.refresh(force=True)
    assert cache.keeps(s) == Keep.SEEN and not cache.uses_catalog(s)
    assert cache.keeps(make_store(engine).id) == Keep.NOTHING, "a store without rules keeps nothing"

    add_rule(engine, s, new_order_rule("shoes", {"match": "all", "conditions": [
        {"field": "category", "operator": "in", "value": ["7"]}]}))
    assert cache.refresh()
    assert cache.uses_catalog(s) and cache.keeps(s) == Keep.SEEN
    add_rule(engine, s, new_order_rule("regular", {"match": "all", "conditions": [
        {"field": "order_count", "operator": "gt", "value": 2}]}))
    assert cache.refresh()
    assert cache.keeps(s) == Keep.CUSTOMERS, "a condition on the customer's orders needs the aggregates"


def test_a_store_compiled_on_first_use_knows_its_triggers_subscription_use_holdouts_and_staged_workflows(
        settings, engine) -> None:  # type: ignore[no-untyped-def]
    s = make_store(engine).id
    plain = add_rule(engine, s, {**new_order_rule("plain"), "holdout_percent": 10})
    branch = {"type": "branch", "delay": "day 1", "condition": {"type": "condition", "conditions": BIG},
              "yes": {"steps": NOTE}, "no": {"steps": []}}
    staged = add_rule(engine, s, {"name": "staged", "trigger": "order_paid", "actions": [*NOTE, branch]})
    cache = RuleCache(engine, fallback_interval=0)
    cache.refresh(force=True)
    rule = cache.get(plain)
    assert rule is not None and rule.holdout_percent == 10 and not rule.staged
    assert [a.type for a in rule.actions] == ["add_order_note"] and rule.first_action == "add_order_note"
    flow = cache.get(staged)
    assert flow is not None and flow.staged and flow.actions == ()
    assert flow.first_action == "add_order_note" and len(flow.program.nodes) == 3
    assert [t.name for t in cache.trigger_specs(s, "OrderEvent")] == [
        t.name for t in for_schema("OrderEvent") if t.name in {"new_order", "order_paid"}]
    assert not cache.uses_subscriptions(s)

    add_rule(engine, s, new_order_rule("subscribers", {"match": "all", "conditions": [
        {"field": "has_active_subscription", "operator": "equals", "value": "yes"}]}))
    assert cache.refresh()
    assert cache.uses_subscriptions(s)


def test_disabled_rules_and_changes_made_in_sql_are_loaded(settings, engine) -> None:  # type: ignore[no-untyped-def]
    a, b = make_store(engine).id, make_store(engine).id
    ra = add_rule(engine, a, new_order_rule("a1"))
    add_rule(engine, b, new_order_rule("b1"))
    cache = RuleCache(engine, fallback_interval=0)
    cache.refresh(force=True)
    [b1] = cache.for_trigger(b, "new_order")
    assert cache.when_disabled(ra) is None

    # disabled outside the API: neither `updated_at` nor `version` moves
    with engine.begin() as conn:
        conn.execute(text("UPDATE rules SET enabled = false WHERE id = :r"), {"r": ra})
    assert cache.refresh(), "the fallback saw a rule disabled"
    assert cache.get(ra) is None and cache.for_trigger(a, "new_order") == ()
    assert cache.when_disabled(ra) == "exit"
    assert cache.for_trigger(b, "new_order")[0] is b1

    with engine.begin() as conn:
        conn.execute(text("UPDATE rules SET when_disabled = 'finish' WHERE id = :r"), {"r": ra})
    cache.reload(a)  # what its notification does
    assert cache.when_disabled(ra) == "finish"
    cache.reload()  # everything read again: unchanged stores keep their compiled rules
    assert cache.when_disabled(ra) == "finish" and cache.for_trigger(b, "new_order")[0] is b1

    with engine.begin() as conn:
        conn.execute(text("UPDATE rules SET enabled = true WHERE id = :r"), {"r": ra})
    assert cache.refresh()
    assert cache.get(ra) is not None and cache.when_disabled(ra) is None
    with engine.begin() as conn:
        conn.execute(text("UPDATE rules SET priority = 3 WHERE id = :r"), {"r": ra})
    cache.reload()
    rule = cache.get(ra)
    assert rule is not None and rule.priority == 3


def test_loyalty_settings_are_parsed_again_only_for_the_store_that_changed_them(settings, engine) -> None:  # type: ignore[no-untyped-def]
    a, b = make_store(engine).id, make_store(engine).id
    tiers = {"loyalty": {"tiers": {"levels": [{"name": "silver", "min": 100}]}}}
    with engine.begin() as conn:
        conn.execute(text("UPDATE stores SET settings = CAST(:s AS jsonb) WHERE id IN (:a, :b)"),
                     {"s": json.dumps(tiers), "a": a, "b": b})
    cache = LoyaltyCache(engine, ttl=0)
    la, lb = cache(a), cache(b)
    assert [lv.name for lv in la.levels] == ["silver"]
    tiers["loyalty"]["tiers"]["levels"].append({"name": "gold", "min": 500})
    with engine.begin() as conn:
        conn.execute(text("UPDATE stores SET settings = CAST(:s AS jsonb) WHERE id = :a"),
                     {"s": json.dumps(tiers), "a": a})
    assert [lv.name for lv in cache(a).levels] == ["silver", "gold"]
    assert cache(b) is lb, "an unchanged store's settings were parsed again"
