"""Workflows with branches, goals and weekday-and-time sends, end to end: every role a real
process (simulated store → bridge → rules → workers → sink, and the scheduler), emails to a
real SMTP server, a simulated clock shared through a file (tests/test_workflows_e2e.py's
`Workflows`); and the scheduler and the workers SIGKILLed while branched runs go on."""

from __future__ import annotations

import random
from collections import Counter
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import text

from tests.pipeline import add_rule
from tests.support import RoleProcess, make_sim_store, read_topic, wait_for, wait_until_consumed
from tests.test_scheduler_crash import scheduler, sim_orders, status_counts, wooflow_notes
from tests.test_workflows_e2e import Workflows
from tests.test_workflows_v2 import record_engagement
from wooflow.clock import FileClock
from wooflow.consumer.commands import idempotency_key, start_command
from wooflow.kafka import topics
from wooflow.producers.keys import email_hash
from wooflow.scheduler.steps import store_delayed
from wooflow.simulator.server import SimulatorServer

pytestmark = pytest.mark.e2e


def email(subject: str, **extra: Any) -> dict[str, Any]:
    return {"type": "send_email", "params": {"subject": subject, "text": "Hello {{ order.billing.first_name }}"},
            **extra}


def order(w: Workflows, addr: str) -> int:
    product = w.sim.store.create_product("Mug", "49.00")
    return int(w.sim.store.create_order(line_items=[{"product_id": product.id, "quantity": 1}], status="processing",
                                        billing={"email": addr, "first_name": "Ala", "country": "PL"}).id)


def test_a_branch_on_opening_the_welcome_email_sends_each_side_once(settings, engine, logs_dir) -> None:  # type: ignore[no-untyped-def]
    with ExitStack() as stack:
        w = Workflows(settings, engine, logs_dir, stack)
        rule_id = add_rule(engine, w.store.id, {
            "name": "Welcome by engagement", "trigger": "new_order",
            "actions": [email("Welcome", id="welcome"),
                        {"type": "branch", "condition": {"type": "email_opened", "step": "welcome", "within": "24h"},
                         "yes": {"steps": [email("Thanks for reading")]},
                         "no": {"steps": [email("Did you miss this?")]}}]})
        w.start()
        try:
            addrs = [f"reader{i}@example.com" for i in range(4)]
            for addr in addrs:
                order(w, addr)
            wait_for(lambda: all(w.inbox.to(a) for a in addrs), 90, 0.2, "every welcome email")
            runs = {r["customer_key"]: r["event_id"] for r in w.query(
                "SELECT customer_key, event_id FROM scheduled_steps WHERE store_id = :s AND step = -1")}
            keys = {a: f"g{email_hash(a)}" for a in addrs}
            # the tracker records two opens within the day, one after it
            for addr, hours in ((addrs[0], 2), (addrs[1], 20), (addrs[2], 26)):
                record_engagement(engine, w.store.id, rule_id, runs[keys[addr]], 0, keys[addr],
                                  w.t0 + timedelta(hours=hours))
            w.at(timedelta(hours=23, minutes=59))
            w.settle()
            assert all(len(w.inbox.to(a)) == 1 for a in addrs)  # the branch waits its 24 hours
            w.at(timedelta(hours=24))
            wait_for(lambda: all(len(w.inbox.to(a)) == 2 for a in addrs), 90, 0.2, "every follow-up")
            w.at(timedelta(days=2))
            w.settle()  # a second follow-up (a side run twice, or both sides) would be here by now
            assert {a: w.inbox.subjects(a) for a in addrs} == {
                addrs[0]: ["Welcome", "Thanks for reading"], addrs[1]: ["Welcome", "Thanks for reading"],
                addrs[2]: ["Welcome", "Did you miss this?"], addrs[3]: ["Welcome", "Did you miss this?"]}
            decided = {r["customer_key"]: r["decision"] for r in w.query(
                "SELECT customer_key, decision FROM scheduled_steps WHERE store_id = :s AND step = 1")}
            assert decided == {keys[addrs[0]]: "yes", keys[addrs[1]]: "yes", keys[addrs[2]]: "no",
                               keys[addrs[3]]: "no"}
        except AssertionError:
            print(w.role_logs())
            raise


def test_a_goal_reached_mid_run_ends_it_before_the_next_step(settings, engine, logs_dir) -> None:  # type: ignore[no-untyped-def]
    with ExitStack() as stack:
        w = Workflows(settings, engine, logs_dir, stack)
        add_rule(engine, w.store.id, {
            "name": "Until the second order", "trigger": "first_purchase", "goals": [{"type": "ordered"}],
            "actions": [email("Day 0"), email("Day 1", delay="day 1"), email("Day 2", delay="day 2")]})
        w.start()
        try:
            buyer, browser = "buyer@example.com", "browser@example.com"
            first = order(w, buyer)
            order(w, browser)
            wait_for(lambda: w.inbox.to(buyer) and w.inbox.to(browser), 90, 0.2, "both day-0 emails")
            w.at(timedelta(hours=6))
            second = order(w, buyer)  # the goal: an order after the run started
            wait_for(lambda: w.query("SELECT 1 FROM customer_calendar WHERE store_id = :s AND last_order_id = :o",
                                     o=second), 60, 0.2, "the second order seen by the scheduler")
            w.at(timedelta(days=1, hours=1))
            wait_for(lambda: len(w.inbox.to(browser)) == 2, 90, 0.2, "the browser's day-1 email")
            buyer_key = f"g{email_hash(buyer)}"
            wait_for(lambda: w.logs(buyer_key, "goal_reached"), 60, 0.2, "the buyer's goal logged")
            w.at(timedelta(days=3))
            wait_for(lambda: len(w.inbox.to(browser)) == 3, 90, 0.2, "the browser's day-2 email")
            w.settle()
            assert w.inbox.subjects(buyer) == ["Day 0"] and w.inbox.subjects(browser) == ["Day 0", "Day 1", "Day 2"]
            goal = w.logs(buyer_key, "goal_reached")
            assert [g["step"] for g in goal] == [1]
            assert goal[0]["message"] == f"goal reached: customer ordered again (order {second})"
            assert [s["status"] for s in w.steps(buyer_key)] == ["exited", "exited"]
            assert [s["exit_kind"] for s in w.steps(buyer_key)] == ["goal", "goal"]
            assert first != second
        except AssertionError:
            print(w.role_logs())
            raise


def test_a_monday_ten_o_clock_step_fires_at_ten_after_the_clocks_go_forward(settings, engine, logs_dir) -> None:  # type: ignore[no-untyped-def]
    with ExitStack() as stack:
        w = Workflows(settings, engine, logs_dir, stack)
        assert w.store.timezone == "Europe/Warsaw"  # CET until 2027-03-28 02:00, CEST after
        w.t0 = w.clock.set(datetime(2027, 3, 26, 12, 0, tzinfo=timezone.utc))  # a Friday
        add_rule(engine, w.store.id, {"name": "Monday morning", "trigger": "new_order",
                                      "actions": [email("Monday", delay="day 1", at={"days": ["mon"],
                                                                                      "time": "10:00"})]})
        w.start()
        try:
            addr = "monday@example.com"
            order(w, addr)
            key = f"g{email_hash(addr)}"
            wait_for(lambda: [s for s in w.steps(key) if s["step"] == 0], 90, 0.2, "the step stored")
            due = datetime(2027, 3, 29, 8, 0, tzinfo=timezone.utc)  # 10:00 CEST, not 09:00 UTC as in winter
            assert [s["due_at"] for s in w.steps(key) if s["step"] == 0] == [due]
            w.clock.set(due - timedelta(seconds=1))
            w.settle()
            assert w.inbox.to(addr) == []
            w.clock.set(due)
            wait_for(lambda: w.inbox.to(addr), 90, 0.2, "the Monday email")
            w.settle()
            assert w.inbox.subjects(addr) == ["Monday"]
            assert [s["emitted_at"] for s in w.steps(key) if s["step"] == 0] == [due]
        except AssertionError:
            print(w.role_logs())
            raise


BRANCHED = {
    "name": "branched notes", "trigger": "new_order",
    "actions": [{"type": "add_order_note", "params": {"note": "wooflow: s0"}},
                {"type": "branch", "delay": "hour 12", "condition": {"type": "condition", "conditions": {
                    "match": "all", "conditions": [{"field": "tags", "operator": "contains", "value": "vip"}]}},
                 "yes": {"steps": [{"type": "add_order_note", "params": {"note": "wooflow: yes-a"}, "delay": "day 1"},
                                   {"type": "add_order_note", "params": {"note": "wooflow: yes-b"}, "delay": "day 2"}]},
                 "no": {"steps": [{"type": "add_order_note", "params": {"note": "wooflow: no-a"}, "delay": "day 1"}]}},
                {"type": "add_order_note", "params": {"note": "wooflow: last"}, "delay": "day 3"}],
}


def test_sigkill_of_the_scheduler_and_the_workers_during_branched_runs_loses_no_step_and_repeats_none(  # type: ignore[no-untyped-def]
        settings, engine, logs_dir) -> None:
    clock = FileClock(logs_dir / "clock")
    t0 = clock.set(datetime.now(timezone.utc).replace(microsecond=0))
    with SimulatorServer(seed=5) as sim:
        store = make_sim_store(engine, sim)
        rule_id = add_rule(engine, store.id, BRANCHED)
        orders = sim_orders(sim, 150)
        vip = set(orders[::2])
        with engine.begin() as conn:  # 150 runs, as the rule consumer starts them; every other customer a VIP
            store_delayed(conn, [start_command(
                rule_id=rule_id, rule_version=1, schema="OrderEvent", trigger="new_order", now=t0,
                event={"event_id": f"order-{store.id}-{oid}", "store_id": store.id, "customer_key": f"c{oid}",
                       "order_id": oid, "order": {"id": oid, "number": str(oid)}, "received_at": t0})
                for oid in orders])
            conn.execute(text("INSERT INTO customer_state (store_id, customer_key, tags) "
                              "SELECT :s, 'c' || o, ARRAY['vip'] FROM unnest(CAST(:o AS bigint[])) AS o"),
                         {"s": store.id, "o": sorted(vip)})
        sched = scheduler(settings, logs_dir, clock, store.id, WOOFLOW_SCHEDULER_BATCH_SIZE="10",
                          WOOFLOW_SCHEDULER_LEASE_S="2")
        workers = RoleProcess("workers", settings, logs_dir, WOOFLOW_DEFERRED_POLL_S="0.2")
        expected = {oid: {"wooflow: s0", "wooflow: last"} | ({"wooflow: yes-a", "wooflow: yes-b"} if oid in vip
                                                            else {"wooflow: no-a"}) for oid in orders}

        try:
            workers.start()
            sched.start()
            rng = random.Random(11)
            kills = Counter[str]()
            # each moment a part of the runs moves on: starts, branches, each side's steps, the last step
            for at in (timedelta(0), timedelta(hours=12), timedelta(days=1), timedelta(days=2), timedelta(days=3)):
                clock.set(t0 + at + timedelta(minutes=1))
                for _ in range(2):  # the scheduler dies twice at random moments of the emission
                    target = _moved(engine, store.id) + rng.randint(1, 40)
                    wait_for(lambda target=target: _moved(engine, store.id) >= target
                             or _nothing_due(engine, store.id, clock.now()), 90, 0.01, f"{target} rows moved on")
                    sched.kill()
                    kills["scheduler"] += 1
                    sched.start()
                workers.kill()  # mid-action, with commands in flight
                kills["workers"] += 1
                workers.start()
                wait_for(lambda: _nothing_due(engine, store.id, clock.now()), 120, 0.2, f"every step due at {at}")
            assert status_counts(engine, store.id)["pending"] == 0
            want = {(o, n) for o, ns in expected.items() for n in ns}
            wait_for(lambda: set(wooflow_notes(sim, orders)) == want, 180, 0.5, "every note of every side taken")
            wait_until_consumed(settings, settings.workers_group, [topics.COMMANDS], timeout=120)
            counts = wooflow_notes(sim, orders)
            assert set(counts) == want
            assert max(counts.values()) == 1, [k for k, v in counts.items() if v > 1][:5]
            with engine.connect() as conn:
                decided = {r[0]: r[1] for r in conn.execute(text(
                    "SELECT customer_key, decision FROM scheduled_steps WHERE store_id = :s AND step = 1"),
                    {"s": store.id})}
            assert decided == {f"c{o}": "yes" if o in vip else "no" for o in orders}
            # no command of a side not taken ever went out, not even as a re-emission after a kill
            emitted = [c["idempotency_key"] for _, c in read_topic(settings, topics.COMMANDS, timeout=60)]
            steps_of = {o: (0, 2, 3, 5) if o in vip else (0, 4, 5) for o in orders}
            assert set(emitted) == {idempotency_key(rule_id, f"order-{store.id}-{o}", st)
                                    for o, sts in steps_of.items() for st in sts}
            print(f"kills: {dict(kills)}, {len(emitted) - len(set(emitted))} commands emitted again after a kill")
        except AssertionError:
            print(sched.log_text()[-3000:], workers.log_text()[-3000:])
            raise
        finally:
            sched.stop()
            workers.stop()


def _nothing_due(engine, store_id: str, now: datetime) -> bool:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM scheduled_steps WHERE store_id = :s AND status = 'pending' "
                                 "AND due_at <= :now"), {"s": store_id, "now": now}).scalar_one() == 0


def _moved(engine, store_id: str) -> int:  # type: ignore[no-untyped-def]
    """Rows that left `pending` for good: steps sent to the workers, starts and branches decided."""
    counts = status_counts(engine, store_id)
    return counts["emitted"] + counts["done"]
