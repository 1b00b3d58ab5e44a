"""The scheduler as real processes: SIGKILLed mid-sequence and restarted it loses no step
and no step takes effect twice; two schedulers side by side never emit a step twice."""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.pipeline import add_rule
from tests.support import RoleProcess, make_sim_store, make_store, read_topic, wait_for, wait_until_consumed
from wooflow.clock import FileClock
from wooflow.consumer.commands import build_command
from wooflow.consumer.model import RuleSpec
from wooflow.kafka import topics
from wooflow.scheduler.steps import store_delayed
from wooflow.settings import Settings
from wooflow.simulator.server import SimulatorServer

pytestmark = pytest.mark.e2e

SEQUENCE = {
    "name": "sequence", "trigger": "new_order",
    "actions": [{"type": "add_order_note", "params": {"note": f"wooflow: step {i}"}, "delay": f"day {d}"}
                for i, d in enumerate((0, 3, 7, 14))],
}


def scheduler(settings: Settings, log_dir: Path, clock: FileClock, store_id: str, **env: str) -> RoleProcess:
    base = {"WOOFLOW_CLOCK": f"file:{clock.path}", "WOOFLOW_SCHEDULER_STORES": store_id,
            "WOOFLOW_SCHEDULER_POLL_S": "0.05", "WOOFLOW_SCHEDULER_GROUP": f"{settings.topic_prefix}scheduler"}
    return RoleProcess("scheduler", settings, log_dir, "--no-scan", "--no-activity", **(base | env))


def delayed_steps(rule_id: int, store_id: str, order_ids: list[int], t0: datetime) -> list[dict[str, Any]]:
    actions = RuleSpec.model_validate(SEQUENCE).actions
    out = []
    for oid in order_ids:
        ev = {"event_id": f"order-{store_id}-{oid}", "store_id": store_id, "customer_key": f"c{oid}",
              "order_id": oid, "order": {"id": oid, "number": str(oid)}, "received_at": t0}
        for step, a in enumerate(actions):
            if a.delay_s:
                out.append(build_command(rule_id=rule_id, rule_version=1, step=step, action_type=a.type,
                                         params=a.params, delay_s=a.delay_s, schema="OrderEvent", event=ev,
                                         trigger="new_order", now=t0))
    return out


def sim_orders(sim: SimulatorServer, n: int) -> list[int]:
    """`n` orders of a cup in the simulated store, one customer each."""
    product = sim.store.create_product("Cup", "10.00")
    return [sim.store.create_order(line_items=[{"product_id": product.id, "quantity": 1}],
                                   billing={"email": f"k{i}@example.com"}).id for i in range(n)]


def wooflow_notes(sim: SimulatorServer, orders: list[int]) -> Counter[tuple[int, str]]:
    """How many times each wooflow note is on each order."""
    return Counter((oid, n.note) for oid in orders for n in sim.store.get_order_notes(oid)
                   if n.note.startswith("wooflow:"))


def status_counts(engine, store_id: str) -> Counter[str]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return Counter({r[0]: r[1] for r in conn.execute(text(
            "SELECT status, count(*) FROM scheduled_steps WHERE store_id = :s GROUP BY status"), {"s": store_id})})


def test_sigkill_mid_sequence_loses_nothing_and_fires_nothing_twice(settings, engine, logs_dir) -> None:  # type: ignore[no-untyped-def]
    clock = FileClock(logs_dir / "clock")
    t0 = clock.set(datetime.now(timezone.utc).replace(microsecond=0))
    with SimulatorServer(seed=3) as sim:
        store = make_sim_store(engine, sim)
        rule_id = add_rule(engine, store.id, SEQUENCE)
        orders = sim_orders(sim, 250)
        with engine.begin() as conn:
            assert store_delayed(conn, delayed_steps(rule_id, store.id, orders, t0)) == 750
        # small batches and a short lease: a kill lands mid-emission and the lease expires soon
        sched = scheduler(settings, logs_dir, clock, store.id, WOOFLOW_SCHEDULER_BATCH_SIZE="10",
                          WOOFLOW_SCHEDULER_LEASE_S="2")
        workers = RoleProcess("workers", settings, logs_dir)
        try:
            workers.start()
            sched.start()
            rng = random.Random(7)
            kills = 0
            for day in (3, 7, 14):
                clock.set(t0 + timedelta(days=day, minutes=1))
                done_by_day = 250 * {3: 1, 7: 2, 14: 3}[day]
                for _ in range(2):  # twice per step of the sequence, at random moments of its emission:
                    # once a random number of that day's steps is out (the round in flight dies)
                    target = min(done_by_day, status_counts(engine, store.id)["emitted"] + rng.randint(1, 120))
                    wait_for(lambda target=target: status_counts(engine, store.id)["emitted"] >= target, 60, 0.01,
                             f"{target} steps emitted")
                    sched.kill()
                    kills += 1
                    sched.start()
                wait_for(lambda done=done_by_day: status_counts(engine, store.id)["emitted"] == done, 90, 0.2,
                         f"every day-{day} step emitted")
            assert status_counts(engine, store.id) == Counter({"emitted": 750})

            wait_for(lambda: len(wooflow_notes(sim, orders)) == 750, 90, 0.5, "a note for every step")
            # every command, re-emissions after the kills included, went through the workers:
            # a duplicate note would be there by now
            wait_until_consumed(settings, settings.workers_group, [topics.COMMANDS], timeout=90)
            counts = wooflow_notes(sim, orders)
            assert set(counts) == {(oid, f"wooflow: step {s}") for oid in orders for s in (1, 2, 3)}
            assert max(counts.values()) == 1, [k for k, v in counts.items() if v > 1][:5]
            emitted = [c["idempotency_key"] for _, c in read_topic(settings, topics.COMMANDS, timeout=30)]
            assert set(emitted) == {s["idempotency_key"] for s in delayed_steps(rule_id, store.id, orders, t0)}
            # re-emissions after a kill are allowed (at-least-once); their effect is not
            print(f"{kills} kills, {len(emitted) - len(set(emitted))} steps emitted again after a kill")
        except AssertionError:
            print(sched.log_text()[-3000:], workers.log_text()[-3000:])
            raise
        finally:
            sched.stop()
            workers.stop()


def test_two_schedulers_never_emit_a_step_twice(settings, engine, logs_dir) -> None:  # type: ignore[no-untyped-def]
    clock = FileClock(logs_dir / "clock")
    t0 = clock.set(datetime(2026, 5, 1, 8, 0, tzinfo=timezone.utc))
    store = make_store(engine)
    rule_id = add_rule(engine, store.id, SEQUENCE)
    steps = delayed_steps(rule_id, store.id, list(range(1, 3335)), t0)[:10_000]
    assert len(steps) == 10_000
    with engine.begin() as conn:
        store_delayed(conn, steps)
    a = scheduler(settings, logs_dir, clock, store.id, WOOFLOW_SCHEDULER_BATCH_SIZE="100")
    b = scheduler(settings, logs_dir, clock, store.id, WOOFLOW_SCHEDULER_BATCH_SIZE="100")
    try:
        a.start()
        b.start()
        wait_for(lambda: "running (clock" in a.log_text() and "running (clock" in b.log_text(), 30, 0.1,
                 "both schedulers running")
        for day in (3, 7, 14):  # each day a third of the steps falls due for both at once
            clock.set(t0 + timedelta(days=day))
            wait_for(lambda day=day: status_counts(engine, store.id)["pending"] == sum(
                1 for s in steps if s["not_before"] > t0 + timedelta(days=day)), 120, 0.2, f"day {day} emitted")
        keys = [c["idempotency_key"] for _, c in read_topic(settings, topics.COMMANDS, timeout=60)]
        assert len(keys) == 10_000 and len(set(keys)) == 10_000
        with engine.connect() as conn:
            owners = Counter(r[0].rsplit("-", 1)[0] for r in conn.execute(text(  # host-pid(-loop)
                "SELECT claimed_by FROM scheduled_steps WHERE store_id = :s"), {"s": store.id}))
        assert len(owners) == 2 and min(owners.values()) > 500, owners  # both processes did real work
    finally:
        a.stop()
        b.stop()
