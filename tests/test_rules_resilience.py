"""The rule consumer under crashes and rebalances, as real processes on the real broker.

What is asserted, precisely: the set of idempotency keys in automation.commands equals
the set the rules must produce for the events (none missing, none extra). In the default
mode a key may appear more than once — a batch whose commands were acknowledged but whose
offsets were not committed before a SIGKILL is consumed again and re-emits the *same*
keys; workers execute each key once (claims in PostgreSQL, covered by
test_pipeline_e2e), so that is not a duplicate effect. In transactional mode, and for
graceful joins/leaves, every key appears exactly once.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from typing import Any

import pytest

from tests.pipeline import add_rule
from tests.rules_kit import EventProducer, commands, later, order_event
from tests.support import RoleProcess, make_store, topic_size, wait_for
from wooflow.consumer.commands import idempotency_key
from wooflow.kafka import topics

pytestmark = pytest.mark.e2e

NOTE = [{"type": "add_order_note", "params": {"note": "n"}}]


def scenario(engine, store_id: str, customers: int, orders_each: int) -> tuple[list[dict[str, Any]], set[str]]:  # type: ignore[no-untyped-def]
    """Events, and the keys two rules must produce for them: new_order over 50 (stateless)
    and first_purchase (needs the customer state to survive the crashes)."""
    big = add_rule(engine, store_id, {"name": "big", "trigger": "new_order", "actions": NOTE, "conditions": {
        "match": "all", "conditions": [{"field": "order_total", "operator": "gt", "value": "50"}]}})
    first = add_rule(engine, store_id, {"name": "first", "trigger": "first_purchase", "actions": NOTE})
    events, expected = [], set()
    for k in range(orders_each):
        for c in range(1, customers + 1):
            total = 20 + (c * 7 + k * 13) % 100
            ev = order_event(store_id, c * 100 + k, customer_id=c, total=str(total), modified=later(k))
            events.append(ev)
            if total > 50:
                expected.add(idempotency_key(big, ev["event_id"], 0))
            if k == 0:
                expected.add(idempotency_key(first, ev["event_id"], 0))
    return events, expected


def produce_paced(prod: EventProducer, events: list[dict[str, Any]], seconds: float) -> threading.Thread:
    def run() -> None:
        chunk = max(1, len(events) // int(seconds * 10))
        for i in range(0, len(events), chunk):
            for ev in events[i:i + chunk]:
                prod.send("OrderEvent", ev)
            prod.p.poll(0)
            time.sleep(0.1)  # pacing: the flow spread over `seconds`, not a wait
        prod.flush()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def keys_seen(settings) -> Counter[str]:  # type: ignore[no-untyped-def]
    return Counter(c["idempotency_key"] for c in commands(settings, timeout=30))


def _wait_all(settings, expected: set[str], procs: list[RoleProcess], timeout: float = 120) -> Counter[str]:  # type: ignore[no-untyped-def]
    def complete() -> Counter[str] | None:
        seen = keys_seen(settings)
        return seen if expected <= set(seen) else None

    try:
        return wait_for(complete, timeout, 1.0, "every expected command")
    except AssertionError:
        for p in procs:
            print(p.log_text()[-4000:])
        raise


def _kill_while_flowing(settings, rules, events, expected, *, seconds: float, kills: int, seed: int,  # type: ignore[no-untyped-def]
                        gap: tuple[float, float]):
    """Start `rules`, feed `events` over `seconds`, SIGKILL and restart it `kills` times at
    random gaps, then wait until every expected key is out; the keys seen, with counts."""
    rules.start()
    try:
        feeder = produce_paced(EventProducer(settings), events, seconds=seconds)
        rng = random.Random(seed)
        for _ in range(kills):
            time.sleep(rng.uniform(*gap))  # a random moment of the flow (chaos, not a wait for anything)
            rules.kill()
            rules.start()
        feeder.join(60)
        return _wait_all(settings, expected, [rules])
    finally:
        rules.stop()


def test_sigkill_five_times_while_10000_events_flow_loses_no_command(settings, engine, logs_dir) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine)
    events, expected = scenario(engine, store.id, customers=2000, orders_each=5)
    assert len(events) == 10_000
    rules = RoleProcess("rules", settings, logs_dir, WOOFLOW_INSTANCE_ID="crash-1")
    seen = _kill_while_flowing(settings, rules, events, expected, seconds=10, kills=5, seed=5, gap=(0.8, 2.5))
    assert set(seen) == expected, f"{len(set(seen) - expected)} unexpected, {len(expected - set(seen))} missing"
    assert min(seen.values()) >= 1
    assert rules.starts == 6


def test_transactional_mode_emits_every_key_exactly_once_across_sigkills(settings, engine, logs_dir) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine)
    events, expected = scenario(engine, store.id, customers=600, orders_each=5)
    rules = RoleProcess("rules", settings, logs_dir, WOOFLOW_TRANSACTIONAL="true", WOOFLOW_INSTANCE_ID="txn-1")
    seen = _kill_while_flowing(settings, rules, events, expected, seconds=6, kills=3, seed=11, gap=(1.0, 2.5))
    assert set(seen) == expected
    assert {k: n for k, n in seen.items() if n != 1} == {}, "read_committed sees each key exactly once"


def test_three_consumers_join_and_leave_under_load(settings, engine, logs_dir) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine)
    events, expected = scenario(engine, store.id, customers=1200, orders_each=5)
    procs = [RoleProcess("rules", settings, logs_dir / f"c{i}") for i in range(3)]
    for i in range(len(procs)):
        (logs_dir / f"c{i}").mkdir()
    # the flow in two halves (a customer's events stay in order): the second starts only once
    # the joiners hold partitions, however long they take to start on a busy machine
    half = len(events) // 2
    prod = EventProducer(settings)
    procs[0].start()
    try:
        feeder = produce_paced(prod, events[:half], seconds=6)
        # the first consumer is working through the flow before the others join
        wait_for(lambda: topic_size(settings, topics.COMMANDS) >= 200, 60, 0.2, "the first consumer's commands")
        procs[1].start()
        procs[2].start()
        # 1 → 3: both joiners got partitions while events keep flowing
        wait_for(lambda: all("assigned" in p.log_text() for p in procs[1:]), 60, 0.2, "the joiners' assignments")
        feeder.join(60)
        grown = topic_size(settings, topics.COMMANDS) + 200
        feeder = produce_paced(prod, events[half:], seconds=6)
        # ... and the three of them turn more of it into commands before two leave again
        wait_for(lambda: topic_size(settings, topics.COMMANDS) >= grown, 60, 0.2, "commands while three consume")
        procs[1].stop()  # SIGTERM: finish the batch, commit, leave the group
        procs[2].stop()
        feeder.join(60)
        seen = _wait_all(settings, expected, procs)
    finally:
        for p in procs:
            p.stop()
    assert set(seen) == expected
    assert {k: n for k, n in seen.items() if n != 1} == {}, "graceful rebalances re-emit nothing"
    assert all("rule consumer stopped" in p.log_text() for p in procs), "every consumer left gracefully"
