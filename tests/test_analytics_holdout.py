"""Holdout groups through the real broker and PostgreSQL: 10,000 new customers meet a rule
that holds out 10%; the rule consumer, a worker and the scheduler's activity reader run as
in production. The control group's share is within statistical tolerance of 10%, held-out
customers get no effect (and a `held_out` log), and the lift and intervals the analytics
API reports match a reference computed here from what the test itself decided and saw.
A holdout rule of the scheduler's own triggers holds out the same way."""

from __future__ import annotations

import math
import random
import statistics
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import Engine, text

from tests.harness import api_client, bearer
from tests.pipeline import add_rule
from tests.rules_kit import T0, ConsumerThread, EventProducer, customer_event, order_event
from tests.support import make_store, read_topic, wait_until_consumed
from wooflow.api.funnel import rebuild
from wooflow.holdout import held_out
from wooflow.kafka import topics
from wooflow.scheduler.activity import ActivityReader
from wooflow.settings import Settings
from wooflow.sink.runner import LogSink
from wooflow.workers.testing import RoleThread, WorkerThread

pytestmark = pytest.mark.integration
CUSTOMERS = 10_000
Z95 = 1.959963984540054


def test_ten_thousand_customers_with_a_ten_percent_holdout(settings: Settings, engine: Engine) -> None:
    store = make_store(engine)
    rule = add_rule(engine, store.id, {
        "name": "Welcome task", "trigger": "new_customer", "holdout_percent": 10,
        "actions": [{"type": "create_admin_task", "params": {"title": "Call {{ customer_key }}"}}]})
    s = settings.model_copy(update={"scheduler_group": f"{settings.topic_prefix}scheduler"})
    producer = EventProducer(s)
    for cid in range(1, CUSTOMERS + 1):
        producer.send("CustomerEvent", customer_event(store.id, cid, email=f"c{cid}@example.com", at=T0))
    # their orders (treated customers convert more; orders after the window or before the rule
    # do not count), read by the activity reader before the rule consumer saw anyone: which of
    # the two gets there first does not matter
    rng = random.Random(18)
    revenue: dict[str, float] = {}
    oid = 0
    for cid in range(1, CUSTOMERS + 1):
        key = f"c{cid}"
        if rng.random() < (0.08 if held_out(rule, key, 10) else 0.12):
            oid += 1
            total = Decimal(rng.randrange(2000, 20000)) / 100
            producer.send("OrderEvent", order_event(store.id, oid, customer_id=cid, total=str(total),
                                                    created=T0 + timedelta(days=rng.choice([1, 2, 4]))))
            revenue[key] = float(total)
        elif rng.random() < 0.05:
            oid += 1
            late = T0 + timedelta(days=9) if rng.random() < 0.5 else T0 - timedelta(days=1)
            producer.send("OrderEvent", order_event(store.id, oid, customer_id=cid, total="50.00", created=late))
    producer.flush()
    with RoleThread(ActivityReader(s, engine), "activity"):
        wait_until_consumed(s, s.scheduler_group, [topics.ORDERS], timeout=180)
    with ConsumerThread(s), WorkerThread(s), RoleThread(LogSink(s), "sink"):
        wait_until_consumed(s, s.rules_group, [topics.CUSTOMERS, topics.ORDERS], timeout=180)
        wait_until_consumed(s, s.workers_group, [topics.COMMANDS], timeout=180)
        wait_until_consumed(s, s.sink_group, [topics.LOGS], timeout=180)

    # the effect: a task for every treated customer, none for a held-out one
    with engine.connect() as conn:
        tasked = {r[0] for r in conn.execute(text("SELECT customer_key FROM tasks WHERE store_id = :s"),
                                             {"s": store.id})}
        exposed = dict(conn.execute(text("SELECT customer_key, held_out FROM holdout_exposures WHERE rule_id = :r"),
                                    {"r": rule}).all())
    everyone = {f"c{cid}" for cid in range(1, CUSTOMERS + 1)}
    control = everyone - tasked
    assert tasked <= everyone and len(exposed) == CUSTOMERS
    assert {k for k, held in exposed.items() if held} == control, "held out = recorded as control, and no effect"
    sd = math.sqrt(CUSTOMERS * 0.1 * 0.9)
    assert abs(len(control) - CUSTOMERS * 0.1) < 4 * sd, len(control)  # within 4 standard deviations (±120)
    logs = [r for _, r in read_topic(s, topics.LOGS, 30) if r["status"] == "held_out"]
    assert sorted(r["customer_key"] for r in logs) == sorted(control)

    # the per-day sums the triggers kept are what the exposures add up to
    daily = "SELECT * FROM holdout_daily WHERE store_id = :s ORDER BY rule_id, day, held_out"
    with engine.connect() as conn:
        kept = [tuple(r) for r in conn.execute(text(daily), {"s": store.id})]
    with engine.connect() as conn, conn.begin() as tx:
        rebuild(conn, store.id)
        assert [tuple(r) for r in conn.execute(text(daily), {"s": store.id})] == kept
        tx.rollback()
    assert sum(r[4] for r in kept) == CUSTOMERS

    client = api_client(settings)
    day = T0.date().isoformat()
    got = client.get(f"/v1/analytics/rules/{rule}", params={"since": day, "until": day},
                     headers=bearer(engine, store.id))
    assert got.status_code == 200, got.text
    h = got.json()["holdout"]

    # the reference: from the customers' outcomes as this test decided them
    def outcomes(group: set[str]) -> list[float]:
        return [revenue.get(k, 0.0) for k in sorted(group)]

    t, c = outcomes(tasked), outcomes(control)
    pt, pc = sum(x > 0 for x in t) / len(t), sum(x > 0 for x in c) / len(c)
    half = Z95 * math.sqrt(pt * (1 - pt) / len(t) + pc * (1 - pc) / len(c))
    d = statistics.fmean(t) - statistics.fmean(c)
    rhalf = Z95 * math.sqrt(statistics.variance(t) / len(t) + statistics.variance(c) / len(c))
    assert (h["treated"]["customers"], h["control"]["customers"]) == (len(t), len(c))
    assert (h["treated"]["converted"], h["control"]["converted"]) == (sum(x > 0 for x in t), sum(x > 0 for x in c))
    lift = h["conversion_lift"]
    assert (lift["estimate"], lift["low"], lift["high"]) == pytest.approx((pt - pc, pt - pc - half, pt - pc + half))
    r = h["revenue_per_customer_lift"]
    assert (r["estimate"], r["low"], r["high"]) == pytest.approx((d, d - rhalf, d + rhalf))
    assert h["incremental_revenue"]["estimate"] == pytest.approx(d * len(t))
    assert h["treated"]["revenue"] == pytest.approx(sum(t)) and h["control"]["revenue"] == pytest.approx(sum(c))
    assert h["conclusive"] and h["percent"] == 10 and "Wald" in h["method"]
    # the runs themselves are counted on the days they ran (the sink's daily counts)
    today = datetime.now(timezone.utc).date()
    ran = client.get(f"/v1/analytics/rules/{rule}", headers=bearer(engine, store.id),
                     params={"since": (today - timedelta(days=1)).isoformat(), "until": today.isoformat()}).json()
    assert ran["executions"] == {"succeeded": len(tasked), "held_out": len(control)}
    assert [(st["step"], st["action_type"], st["executions"]) for st in ran["steps"]] == [
        (0, "create_admin_task", {"succeeded": len(tasked), "held_out": len(control)})]


def test_a_scheduler_trigger_holds_out_the_same_customers(engine: Engine) -> None:
    from wooflow.consumer.engine import RuleEngine
    from wooflow.consumer.rules import RuleCache
    from wooflow.scheduler import triggers as _registered  # noqa: F401 - the scheduler's triggers
    from wooflow.scheduler.synth import Candidate, Firer
    from wooflow.stores import StoreCache

    store = StoreCache(engine, ttl=0).get(make_store(engine).id)
    assert store is not None
    rule_id = add_rule(engine, store.id, {
        "name": "Birthday", "trigger": "birthday", "holdout_percent": 25,
        "actions": [{"type": "create_admin_task", "params": {"title": "Send a card"}}]})
    cache = RuleCache(engine)
    cache.reload(store.id)
    rule = cache.get(rule_id)
    assert rule is not None
    now = datetime(2026, 3, 1, 9, tzinfo=timezone.utc)
    people = [Candidate(store.id, f"c{i}", "2026", now) for i in range(400)]
    with engine.begin() as conn:
        started = Firer(RuleEngine(cache)).fire(conn, store, rule, "birthday", people, now)
        again = Firer(RuleEngine(cache)).fire(conn, store, rule, "birthday", people, now)  # a rescan: nothing new
    with engine.connect() as conn:
        stepped = {r[0] for r in conn.execute(text("SELECT customer_key FROM scheduled_steps WHERE rule_id = :r"),
                                              {"r": rule_id})}
        exposed = dict(conn.execute(text("SELECT customer_key, held_out FROM holdout_exposures WHERE rule_id = :r"),
                                    {"r": rule_id}).all())
    control = {p.customer_key for p in people if held_out(rule_id, p.customer_key, 25)}
    assert 40 < len(control) < 160 and again == []
    assert len(started) == len(people) - len(control) and stepped == {p.customer_key for p in people} - control
    assert {k for k, held in exposed.items() if held} == control and len(exposed) == len(people)


def test_an_order_and_an_exposure_recorded_at_the_same_instant_are_matched_by_the_scan(
        settings: Settings, engine: Engine) -> None:
    """The rule consumer's exposure and the activity reader's order, each in a transaction
    that cannot see the other: the scan's refresh of recent exposures counts the order; a
    change of the store's window counts again what falls in it."""
    from wooflow import holdout
    from wooflow.api.funnel import Span, holdout_groups

    store = make_store(engine)
    rule = add_rule(engine, store.id, {"name": "r", "trigger": "new_order", "holdout_percent": 10,
                                       "actions": [{"type": "create_admin_task", "params": {"title": "t"}}]})
    with engine.begin() as conn:  # both rows written as if neither had seen the other
        conn.execute(text("INSERT INTO holdout_exposures (store_id, rule_id, customer_key, held_out, event_id, "
                          "exposed_at) VALUES (:s, :r, 'c1', true, 'e', :t)"), {"s": store.id, "r": rule, "t": T0})
        for oid, days, currency in ((1, 2, "PLN"), (2, 6, "PLN"), (3, 3, "EUR")):
            conn.execute(text("INSERT INTO customer_orders (store_id, customer_key, order_id, ordered_at, currency, "
                              "revenue, order_modified) VALUES (:s, 'c1', :o, :t, :c, 40, :t)"),
                         {"s": store.id, "o": oid, "t": T0 + timedelta(days=days), "c": currency})
    span = Span(T0.date(), T0.date())
    with engine.connect() as conn:
        assert holdout_groups(conn, store.id, span)[rule][True].converted == 0
    with engine.begin() as conn:
        assert holdout.refresh_recent(conn) >= 1
    with engine.connect() as conn:
        # the 5-day window: two orders, one of them in another currency than the store's (no revenue)
        group = holdout_groups(conn, store.id, span)[rule][True]
        assert (group.customers, group.converted, group.revenue) == (1, 1, 40.0)
        orders = conn.execute(text("SELECT orders FROM holdout_exposures WHERE rule_id = :r"), {"r": rule}).scalar()
        assert orders == 2
    client = api_client(settings)
    policy = {"window_days": 7, "touch": "engagement", "track_transactional": False, "count_machine": False}
    assert client.put("/v1/analytics/settings", json=policy, headers=bearer(engine, store.id)).status_code == 200
    with engine.connect() as conn:
        assert holdout_groups(conn, store.id, span)[rule][True].revenue == 80.0  # both orders now
