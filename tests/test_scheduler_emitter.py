"""The scheduler's emitter on the real broker and database: due steps become commands with
their idempotency keys, exit conditions stop a sequence (logged as exited), a crash between
produce and mark re-emits the same key, and several emitters never claim the same row."""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import text

from tests.pipeline import add_rule
from tests.support import make_store, read_topic, unique
from wooflow.clock import FrozenClock
from wooflow.consumer.commands import build_command
from wooflow.consumer.rules import RuleCache
from wooflow.kafka import topics
from wooflow.kafka.producer import Producer
from wooflow.scheduler.emitter import Emitter
from wooflow.scheduler.steps import store_delayed
from wooflow.schemas.codec import get_codec
from wooflow.workers.consent import record as record_consent

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)

SERIES = {
    "name": "Series", "trigger": "first_purchase",
    "exit_conditions": [{"type": "ordered"}, {"type": "unsubscribed"}],
    "actions": [{"type": "add_order_note", "params": {"note": "step 0"}},
                {"type": "add_order_note", "params": {"note": "step 1"}, "delay": "day 3"},
                {"type": "add_order_note", "params": {"note": "step 2"}, "delay": "day 7"},
                {"type": "add_order_note", "params": {"note": "step 3"}, "delay": "day 14"}],
}


def order_event(store_id: str, order_id: int, ckey: str, created: datetime,
                email: str = "a@example.com") -> dict[str, Any]:
    return {"event_id": unique("ev"), "store_id": store_id, "customer_key": ckey, "order_id": order_id,
            "received_at": created, "topic": "order.created",
            "order": {"id": order_id, "number": str(order_id), "date_created": created, "customer_id": 0,
                      "billing": {"email": email, "first_name": "Ala"}}}


def run_commands(rule_id: int, rule_version: int, ev: dict[str, Any], spec: dict[str, Any], now: datetime
                 ) -> list[dict[str, Any]]:
    from wooflow.consumer.model import RuleSpec

    actions = RuleSpec.model_validate(spec).actions
    return [build_command(rule_id=rule_id, rule_version=rule_version, step=i, action_type=a.type, params=a.params,
                          delay_s=a.delay_s, schema="OrderEvent", event=ev, trigger="first_purchase", now=now)
            for i, a in enumerate(actions)]


def emitter(settings, engine, clock, store_id: str, **overrides):  # type: ignore[no-untyped-def]
    # scoped to the test's store: other tests' steps share the session's database
    s = settings.model_copy(update={"scheduler_batch_size": 500, "scheduler_lease_s": 30.0,
                                    "scheduler_stores": store_id, **overrides})
    return Emitter(s, engine, Producer(s), get_codec(None), clock, RuleCache(engine))


def steps(engine, store_id: str) -> dict[str, dict[str, Any]]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return {r["idempotency_key"]: dict(r) for r in conn.execute(
            text("SELECT * FROM scheduled_steps WHERE store_id = :s"), {"s": store_id}).mappings()}


def test_due_steps_go_out_on_time_with_their_keys_and_an_order_stops_the_sequence(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine)
    rule_id = add_rule(engine, store.id, SERIES)
    clock = FrozenClock(T0)
    a, b = order_event(store.id, 101, "gaaaa1111", T0), order_event(store.id, 202, "gbbbb2222", T0)
    cmds_a, cmds_b = run_commands(rule_id, 1, a, SERIES, T0), run_commands(rule_id, 1, b, SERIES, T0)
    with engine.begin() as conn:  # what the rule consumer does with the delayed steps
        assert store_delayed(conn, cmds_a[1:] + cmds_b[1:]) == 6
        assert store_delayed(conn, cmds_a[1:]) == 0  # a replayed batch stores nothing twice
    em = emitter(settings, engine, clock, store.id)

    assert em.run_once() == 0  # nothing is due on day 0
    clock.advance(timedelta(days=3))
    assert em.run_once() == 2
    # customer b orders again on day 5 (the scheduler's activity reader keeps this table)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO customer_calendar (store_id, customer_key, last_order_at, last_order_id) "
                          "VALUES (:s, 'gbbbb2222', :at, 303)"), {"s": store.id, "at": T0 + timedelta(days=5)})
    clock.advance(timedelta(days=4))  # day 7
    assert em.run_once() == 2
    clock.advance(timedelta(days=7))  # day 14
    assert em.run_once() == 1  # a's last step; b's was closed with its sequence on day 7
    assert em.run_once() == 0

    sent = [c for _, c in read_topic(settings, topics.COMMANDS)]
    assert sorted((c["customer_key"], c["step"]) for c in sent) == [
        ("gaaaa1111", 1), ("gaaaa1111", 2), ("gaaaa1111", 3), ("gbbbb2222", 1)]
    assert {c["idempotency_key"] for c in sent} <= {c["idempotency_key"] for c in cmds_a + cmds_b}
    assert all(c["not_before"] is None for c in sent)  # released: workers run them at once

    rows = steps(engine, store.id)
    by = {(r["customer_key"], r["step"]): r for r in rows.values()}
    assert by[("gaaaa1111", 3)]["status"] == "emitted" and by[("gaaaa1111", 3)]["emitted_at"] == T0 + timedelta(days=14)
    assert by[("gbbbb2222", 2)]["status"] == by[("gbbbb2222", 3)]["status"] == "exited"
    assert by[("gbbbb2222", 2)]["exit_reason"] == "customer ordered again (order 303)"
    assert "sequence stopped at step 2" in by[("gbbbb2222", 3)]["exit_reason"]

    logs = [rec for _, rec in read_topic(settings, topics.LOGS)]
    assert sorted((rec["step"], rec["status"]) for rec in logs) == [(2, "exited"), (3, "exited")]
    assert all(rec["customer_key"] == "gbbbb2222" and rec["rule_id"] == rule_id for rec in logs)
    assert json.loads(logs[0]["details_json"])["exit"] == "ordered"


def test_unsubscribe_custom_condition_and_disabled_rule_exit(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine)
    spec = SERIES | {"exit_conditions": [{"type": "unsubscribed"},
                                         {"field": "tags", "operator": "contains", "value": "vip"}]}
    rule_id = add_rule(engine, store.id, spec)
    other = add_rule(engine, store.id, SERIES)
    clock = FrozenClock(T0)
    evs = {k: order_event(store.id, i, k, T0, f"{k}@example.com") for i, k in enumerate(("gc1", "gc2", "gc3"), 1)}
    with engine.begin() as conn:
        for ev in evs.values():
            store_delayed(conn, run_commands(rule_id, 1, ev, spec, T0)[1:2])
        store_delayed(conn, run_commands(other, 1, evs["gc3"], SERIES, T0)[1:2])
        # gc2 became a VIP
        conn.execute(text("INSERT INTO customer_state (store_id, customer_key, tags) VALUES (:s, 'gc2', ARRAY['vip'])"),
                     {"s": store.id})
        conn.execute(text("UPDATE rules SET enabled = false WHERE id = :r"), {"r": other})
    # gc1 unsubscribed (the workers' consents: the newest answer wins, by customer or by email)
    record_consent(engine, store.id, granted=True, customer_key="gc1", source="checkout")
    record_consent(engine, store.id, granted=False, email="GC1@example.com", source="unsubscribe link")
    clock.advance(timedelta(days=3))
    em = emitter(settings, engine, clock, store.id)
    assert em.run_once() == 4
    rows = {(r["customer_key"], r["rule_id"]): r for r in steps(engine, store.id).values()}
    assert rows[("gc1", rule_id)]["exit_reason"] == "customer unsubscribed"
    assert rows[("gc2", rule_id)]["exit_reason"] == "exit condition met: tags contains vip"
    assert rows[("gc3", rule_id)]["status"] == "emitted"
    assert rows[("gc3", other)]["exit_reason"] == "rule disabled: its runs exit"
    assert [c["customer_key"] for _, c in read_topic(settings, topics.COMMANDS)] == ["gc3"]


def test_a_crash_between_produce_and_mark_re_emits_the_same_key(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine)
    rule_id = add_rule(engine, store.id, SERIES)
    clock = FrozenClock(T0)
    ev = order_event(store.id, 1, "gdead", T0)
    with engine.begin() as conn:
        store_delayed(conn, run_commands(rule_id, 1, ev, SERIES, T0)[1:2])
    clock.advance(timedelta(days=3))
    dying = emitter(settings, engine, clock, store.id)

    class Crash(BaseException):
        pass

    def die(*_a: object) -> None:
        raise Crash  # the process dies after Kafka acknowledged, before the rows are marked

    dying._mark = die  # type: ignore[method-assign]
    with pytest.raises(Crash):
        dying.run_once()
    first = [c["idempotency_key"] for _, c in read_topic(settings, topics.COMMANDS)]
    assert len(first) == 1 and steps(engine, store.id)[first[0]]["status"] == "pending"
    # the dead scheduler's transaction is gone with it: its rows are free at once
    survivor = emitter(settings, engine, clock, store.id)
    assert survivor.run_once() == 1
    again = [c["idempotency_key"] for _, c in read_topic(settings, topics.COMMANDS)]
    assert again == first * 2  # at-least-once emission, same idempotency key: the workers execute it once
    row = steps(engine, store.id)[first[0]]
    assert row["status"] == "emitted" and row["claimed_by"] == survivor.owner


def test_a_claimed_row_is_invisible_to_other_schedulers_until_released(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine)
    rule_id = add_rule(engine, store.id, SERIES)
    clock = FrozenClock(T0 + timedelta(days=3))
    with engine.begin() as conn:
        store_delayed(conn, run_commands(rule_id, 1, order_event(store.id, 1, "gslow", T0), SERIES, T0)[1:2])
    slow, other = emitter(settings, engine, clock, store.id), emitter(settings, engine, clock, store.id)
    inside = threading.Event()
    release = threading.Event()
    seen: list[int] = []
    produce = slow._produce

    def slow_produce(*a, **k):  # type: ignore[no-untyped-def]
        inside.set()
        release.wait(10)  # Kafka is slow to acknowledge
        return produce(*a, **k)

    slow._produce = slow_produce  # type: ignore[method-assign]
    t = threading.Thread(target=lambda: seen.append(slow.run_once()))
    t.start()
    assert inside.wait(10)
    assert other.run_once() == 0  # locked by the first scheduler: skipped, not waited for
    release.set()
    t.join(10)
    assert seen == [1] and other.run_once() == 0
    assert len(read_topic(settings, topics.COMMANDS)) == 1


def test_concurrent_emitters_claim_disjoint_rows(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine)
    rule_id = add_rule(engine, store.id, SERIES)
    clock = FrozenClock(T0 + timedelta(days=3))
    with engine.begin() as conn:
        for i in range(1500):
            store_delayed(conn, run_commands(rule_id, 1, order_event(store.id, i, f"g{i:06x}", T0), SERIES, T0)[1:2])
    ems = [emitter(settings, engine, clock, store.id, scheduler_batch_size=50) for _ in range(3)]
    counts: Counter[str] = Counter()

    def drain(em: Emitter) -> None:
        while (n := em.run_once()) > 0:
            counts[em.owner] += n

    threads = [threading.Thread(target=drain, args=(em,)) for em in ems]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    keys = [c["idempotency_key"] for _, c in read_topic(settings, topics.COMMANDS, timeout=30)]
    assert len(keys) == len(set(keys)) == 1500
    assert sum(counts.values()) == 1500 and len(counts) >= 2, counts
