"""Workflows with branches, goals, A/B variants, weekday-and-time sends and versions, on the
real broker and database: the scheduler's emitter in this process on a simulated clock,
runs started as the rule consumer starts them (or by the rule consumer itself), commands
read back from automation.commands. The whole pipeline as processes is in
test_workflows_v2_e2e.py."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import text

from tests.harness import api_client, bearer
from tests.pipeline import add_rule
from tests.rules_kit import ConsumerThread, EventProducer
from tests.rules_kit import order_event as kafka_order_event
from tests.support import make_store, read_topic, wait_for, wait_until_consumed
from tests.test_scheduler_emitter import emitter, order_event, steps
from wooflow.clock import FileClock, FrozenClock
from wooflow.consumer.commands import build_command, idempotency_key, start_command
from wooflow.kafka import topics
from wooflow.scheduler.steps import store_delayed
from wooflow.scheduler.timing import zone as timing_zone

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)  # a Monday


def email(subject: str, **extra: Any) -> dict[str, Any]:
    return {"type": "send_email", "params": {"subject": subject, "html": "<p>Hi</p>"}, **extra}


def start_runs(engine, rule_id: int, store_id: str, customers: list[str], at: datetime,  # type: ignore[no-untyped-def]
               version: int = 1) -> dict[str, str]:
    """Runs of a staged workflow as the rule consumer starts them (one control row each);
    customer → the run's event id."""
    cmds = []
    for i, ckey in enumerate(customers):
        ev = order_event(store_id, 1000 + i, ckey, at, f"{ckey}@example.com")
        cmds.append(start_command(rule_id=rule_id, rule_version=version, schema="OrderEvent", event=ev,
                                  trigger="new_order", now=at))
    with engine.begin() as conn:
        assert store_delayed(conn, cmds) == len(cmds)
    return {c["customer_key"]: c["event_id"] for c in cmds}


def drain(em) -> int:  # type: ignore[no-untyped-def]
    """Emitter rounds until nothing is due (steps a round stored and that are due included)."""
    total = 0
    while n := em.run_once():
        total += n
    return total


def sent(settings) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    return [c for _, c in read_topic(settings, topics.COMMANDS, timeout=30)]


def subjects(commands: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for c in commands:
        out[c["customer_key"]].append(json.loads(c["params_json"])["subject"])
    return out


def record_engagement(engine, store_id: str, rule_id: int, event_id: str, step: int, ckey: str,  # type: ignore[no-untyped-def]
                      at: datetime, kind: str = "open", link: int = -1) -> None:
    """An open or click as the open/click tracker records it (its `engagements` row: the
    message id is the step's idempotency key)."""
    with engine.begin() as conn:
        conn.execute(text("""
            INSERT INTO engagements (message_id, kind, link, machine, store_id, rule_id, step, customer_key, at)
            VALUES (:m, :k, :l, false, :s, :r, :p, :c, :a) ON CONFLICT DO NOTHING"""),
                     {"m": idempotency_key(rule_id, event_id, step), "k": kind, "l": link, "s": store_id,
                      "r": rule_id, "p": step, "c": ckey, "a": at})


OPENED_BRANCH = {
    "name": "Welcome, then by engagement", "trigger": "new_order",
    "actions": [email("Welcome", id="welcome"),
                {"type": "branch", "id": "read-it", "condition": {"type": "email_opened", "within": "24h"},
                 "yes": {"steps": [email("Thanks for reading")]},
                 "no": {"steps": [email("Did you miss this?")], "then": "end"}},
                email("Last word", delay="day 3")],
}


def test_a_branch_on_opening_the_previous_email_sends_each_side_once(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine)
    rule_id = add_rule(engine, store.id, OPENED_BRANCH)
    clock = FrozenClock(T0)
    customers = [f"gcust{i:02d}" for i in range(12)]
    runs = start_runs(engine, rule_id, store.id, customers, T0)
    em = emitter(settings, engine, clock, store.id)
    drain(em)  # the starts: each run stores its welcome email and the branch; the emails go out
    rows = steps(engine, store.id)
    branch = {r["customer_key"]: r for r in rows.values() if r["step"] == 1}
    assert {r["due_at"] for r in branch.values()} == {T0 + timedelta(hours=24)}  # the wait is built in
    assert Counter(subjects(sent(settings))[c][0] for c in customers) == Counter({"Welcome": 12})

    openers = customers[:5]
    for c in openers:  # opened within the day
        record_engagement(engine, store.id, rule_id, runs[c], 0, c, T0 + timedelta(hours=3))
    # opened, but after the 24 hours; and a click, not an open
    record_engagement(engine, store.id, rule_id, runs[customers[5]], 0, customers[5], T0 + timedelta(hours=30))
    record_engagement(engine, store.id, rule_id, runs[customers[6]], 0, customers[6], T0 + timedelta(hours=2),
                      kind="click", link=0)
    clock.set(T0 + timedelta(hours=23, minutes=59))
    assert drain(em) == 0  # not yet
    clock.set(T0 + timedelta(hours=24))
    drain(em)
    clock.set(T0 + timedelta(days=3))
    drain(em)

    got = subjects(sent(settings))
    for c in customers:
        want = ["Welcome", "Thanks for reading", "Last word"] if c in openers else ["Welcome", "Did you miss this?"]
        assert got[c] == want, (c, got[c])
    keys = [c["idempotency_key"] for c in sent(settings)]
    assert len(keys) == len(set(keys))
    rows = steps(engine, store.id)
    decided = {r["customer_key"]: (r["status"], r["decision"]) for r in rows.values() if r["step"] == 1}
    assert decided == {c: ("done", "yes" if c in openers else "no") for c in customers}
    assert not [r for r in rows.values() if r["status"] == "pending"]


GOAL = {
    "name": "Nudge until they buy", "trigger": "new_order", "goals": [{"type": "ordered"}],
    "actions": [email("Day 0"), {"type": "branch", "delay": "day 1", "condition": {"type": "condition", "conditions": {
        "match": "all", "conditions": [{"field": "tags", "operator": "contains", "value": "vip"}]}},
        "yes": {"steps": [email("VIP day 1", delay="day 1")]}, "no": {"steps": [email("Day 1", delay="day 1")]}},
        email("Day 2", delay="day 2")],
}


def test_a_goal_reached_mid_run_ends_it_before_the_next_step(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine)
    rule_id = add_rule(engine, store.id, GOAL)
    clock = FrozenClock(T0)
    start_runs(engine, rule_id, store.id, ["gbuyer", "gbrowser", "gvip"], T0)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO customer_state (store_id, customer_key, tags) VALUES (:s, 'gvip', "
                          "ARRAY['vip'])"), {"s": store.id})
    em = emitter(settings, engine, clock, store.id)
    drain(em)
    # the buyer orders half a day later (the scheduler's activity reader keeps this table)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO customer_calendar (store_id, customer_key, last_order_at, last_order_id) "
                          "VALUES (:s, 'gbuyer', :at, 77)"), {"s": store.id, "at": T0 + timedelta(hours=12)})
    for day in (1, 2, 3):
        clock.set(T0 + timedelta(days=day))
        drain(em)
    got = subjects(sent(settings))
    assert got == {"gbuyer": ["Day 0"], "gbrowser": ["Day 0", "Day 1", "Day 2"],
                   "gvip": ["Day 0", "VIP day 1", "Day 2"]}
    logs = [r for _, r in read_topic(settings, topics.LOGS) if r["customer_key"] == "gbuyer"]
    assert [(r["step"], r["status"]) for r in logs] == [(1, "goal_reached")]  # later steps were never stored
    assert json.loads(logs[0]["details_json"])["exit"] == "goal"
    rows = {(r["customer_key"], r["step"]): r for r in steps(engine, store.id).values()}
    assert rows[("gbuyer", 1)]["exit_kind"] == "goal"
    assert rows[("gbuyer", 1)]["exit_reason"] == "goal reached: customer ordered again (order 77)"

    client, h = api_client(settings), bearer(engine, store.id)
    runs = client.get(f"/v1/rules/{rule_id}/runs", headers=h).json()
    assert runs["versions"] == [{"version": 1, "runs": 3, "active": 0, "completed": 2, "goal_reached": 1,
                                 "exited": 0}]
    journey = client.get(f"/v1/rules/{rule_id}/journeys/gvip", headers=h).json()["runs"][0]
    assert journey["state"] == "completed" and journey["version"] == 1
    assert [(s["step"], s["kind"], s["where"], s["status"], s["decision"]) for s in journey["steps"]] == [
        (-1, "start", "start", "done", "start"), (0, "send_email", "actions[0]", "emitted", None),
        (1, "branch", "actions[1]", "done", "yes"), (2, "send_email", "actions[1].yes.steps[0]", "emitted", None),
        (4, "send_email", "actions[2]", "emitted", None)]
    ended = client.get(f"/v1/rules/{rule_id}/journeys/gbuyer", headers=h).json()["runs"][0]
    assert ended["state"] == "goal_reached" and "order 77" in ended["ended_because"]


def test_weekday_and_time_sends_fire_at_the_right_instant_across_a_dst_change(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine, timezone="Europe/Warsaw")
    rule_id = add_rule(engine, store.id, {
        "name": "Monday 10:00", "trigger": "new_order",
        "actions": [email("Monday", delay="day 1", at={"days": ["mon"], "time": "10:00"})]})
    before, after = datetime(2026, 3, 20, 12, tzinfo=timezone.utc), datetime(2026, 3, 27, 12, tzinfo=timezone.utc)
    clock = FrozenClock(before)
    start_runs(engine, rule_id, store.id, ["gbefore"], before)
    em = emitter(settings, engine, clock, store.id)
    drain(em)
    clock.set(after)
    start_runs(engine, rule_id, store.id, ["gafter"], after)
    drain(em)
    due = {r["customer_key"]: r["due_at"] for r in steps(engine, store.id).values() if r["step"] == 0}
    # 10:00 in Warsaw: 09:00 UTC in winter time, 08:00 UTC from 2026-03-29
    assert due == {"gbefore": datetime(2026, 3, 23, 9, tzinfo=timezone.utc),
                   "gafter": datetime(2026, 3, 30, 8, tzinfo=timezone.utc)}
    clock.set(datetime(2026, 3, 30, 7, 59, 59, tzinfo=timezone.utc))
    drain(em)
    assert [c["customer_key"] for c in sent(settings)] == ["gbefore"]  # (sent on the 23rd, once the clock moved)
    clock.set(datetime(2026, 3, 30, 8, tzinfo=timezone.utc))
    drain(em)
    assert sorted(c["customer_key"] for c in sent(settings)) == ["gafter", "gbefore"]


AB = {
    "name": "A/B", "trigger": "new_order",
    "actions": [email("base", variants=[{"name": "A", "weight": 70, "params": {"subject": "Subject A"}},
                                        {"name": "B", "weight": 30, "params": {"subject": "Subject B"}}])],
}


def test_ab_split_matches_the_weights_and_a_customer_always_sees_the_same_variant(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine)
    rule_id = add_rule(engine, store.id, AB)
    clock = FrozenClock(T0)
    customers = [f"g{i:06d}" for i in range(2000)]
    start_runs(engine, rule_id, store.id, customers, T0)
    em = emitter(settings, engine, clock, store.id, scheduler_batch_size=2000)
    drain(em)
    first = {c: s[0] for c, s in subjects(sent(settings)).items()}
    assert set(first) == set(customers)
    share_a = Counter(first.values())["Subject A"] / 2000
    assert abs(share_a - 0.7) < 0.04, share_a  # 4 standard deviations of 2,000 draws at 70%
    # the same customers in a second run of the workflow (another order): the same variant each
    clock.set(T0 + timedelta(days=1))
    with engine.begin() as conn:
        store_delayed(conn, [start_command(rule_id=rule_id, rule_version=1, schema="OrderEvent",
                                           event=order_event(store.id, 5000 + i, c, clock.now()),
                                           trigger="new_order", now=clock.now()) for i, c in enumerate(customers)])
    drain(em)
    both = subjects(sent(settings))
    assert all(len(both[c]) == 2 and both[c][0] == both[c][1] for c in customers)
    marked = Counter(r["variant"] for r in steps(engine, store.id).values() if r["step"] == 0)
    assert marked == Counter({"A": 2 * Counter(first.values())["Subject A"],
                              "B": 2 * Counter(first.values())["Subject B"]})


def test_auto_winner_sends_only_the_winner_after_the_threshold(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine)
    spec = {"name": "A/B auto", "trigger": "new_order",
            "actions": [email("base", variants=[{"name": "A", "params": {"subject": "Subject A"}},
                                                {"name": "B", "params": {"subject": "Subject B"}}],
                              auto_winner={"metric": "click_rate", "min_sends": 30, "wait": "1h"})]}
    rule_id = add_rule(engine, store.id, spec)
    clock = FrozenClock(T0)
    wave1 = [f"gw1-{i:03d}" for i in range(120)]
    runs = start_runs(engine, rule_id, store.id, wave1, T0)
    em = emitter(settings, engine, clock, store.id)
    drain(em)
    got = {c: s[0] for c, s in subjects(sent(settings)).items()}
    split = Counter(got.values())
    assert split["Subject A"] >= 30 and split["Subject B"] >= 30, split  # every variant reached its sends
    # B's readers click more: 20 of B's, 3 of A's
    clicked = [c for c in wave1 if got[c] == "Subject B"][:20] + [c for c in wave1 if got[c] == "Subject A"][:3]
    for c in clicked:
        record_engagement(engine, store.id, rule_id, runs[c], 0, c, T0 + timedelta(minutes=20), kind="click",
                          link=0)
    # the next send sees the test complete: the winner is picked an hour later
    clock.set(T0 + timedelta(minutes=30))
    start_runs(engine, rule_id, store.id, ["gw2-000"], clock.now())
    drain(em)
    with engine.connect() as conn:
        test = conn.execute(text("SELECT * FROM variant_tests WHERE rule_id = :r"), {"r": rule_id}).mappings().one()
    assert test["ready_at"] == T0 + timedelta(minutes=90) and test["winner"] is None
    clock.set(T0 + timedelta(hours=2))
    wave3 = [f"gw3-{i:03d}" for i in range(150)]
    start_runs(engine, rule_id, store.id, wave3, clock.now())
    drain(em)
    after = subjects(sent(settings))
    assert Counter(after[c][0] for c in wave3) == Counter({"Subject B": 150})
    with engine.connect() as conn:
        test = conn.execute(text("SELECT * FROM variant_tests WHERE rule_id = :r"), {"r": rule_id}).mappings().one()
    assert test["winner"] == "B" and test["decided_at"] == T0 + timedelta(hours=2)
    assert test["stats"]["variants"]["B"]["clicks"] == 20 and test["stats"]["variants"]["A"]["clicks"] == 3
    report = api_client(settings).get(f"/v1/rules/{rule_id}/variants", headers=bearer(engine, store.id)).json()
    [ab] = report["tests"]
    assert ab["winner"] == "B" and {v["variant"]: v["clicks"] for v in ab["variants"]} == {"A": 3, "B": 20}
    assert sum(v["sends"] for v in ab["variants"]) == 271


VERSIONED = {
    "name": "Versioned", "trigger": "new_order",
    "actions": [email("A v1", id="a"), email("B v1", id="b", delay="day 1"),
                {"type": "branch", "delay": "day 2", "condition": {"type": "condition", "conditions": {
                    "match": "all", "conditions": [{"field": "tags", "operator": "contains", "value": "vip"}]}},
                 "yes": {"steps": [email("VIP v1", delay="day 2")]}, "no": {"steps": [email("C v1", delay="day 2")]}}],
}


def test_editing_a_workflow_pins_its_runs_in_flight_and_new_runs_take_the_new_version(  # type: ignore[no-untyped-def]
        settings, engine, tmp_path) -> None:
    store = make_store(engine)
    clock = FileClock(tmp_path / "clock")
    clock.set(T0)
    s = settings.model_copy(update={"clock": f"file:{clock.path}"})
    client, h = api_client(s), bearer(engine, store.id)
    r = client.post("/v1/rules", json=VERSIONED, headers=h)
    assert r.status_code == 201, r.text
    rule_id = r.json()["id"]
    old = [f"old{i:03d}@example.com" for i in range(100)]
    new = [f"new{i:03d}@example.com" for i in range(100)]
    em = emitter(s, engine, clock, store.id)
    producer = EventProducer(s)
    with ConsumerThread(s) as rules:
        for i, addr in enumerate(old):
            producer.send("OrderEvent", kafka_order_event(store.id, 1 + i, email=addr, created=T0))
        producer.flush()
        wait_until_consumed(s, s.rules_group, [topics.ORDERS])
        rules.wait_committed()
        drain(em)  # 100 runs in flight on version 1: their first email is out
        # the owner edits the workflow: step "b" deleted, every text changed
        v2 = {**VERSIONED, "actions": [email("A v2", id="a"), {**VERSIONED["actions"][2], "yes": {
            "steps": [email("VIP v2", delay="day 2")]}, "no": {"steps": [email("C v2", delay="day 2")]}}]}
        r = client.put(f"/v1/rules/{rule_id}", json=v2, headers=h)
        assert r.status_code == 200 and r.json()["version"] == 2, r.text
        wait_for(lambda: (rule := rules.consumer.rules.get(rule_id)) is not None and rule.version == 2, 30, 0.1,
                 "the rule consumer on version 2")
        clock.set(T0 + timedelta(hours=1))
        for i, addr in enumerate(new):
            producer.send("OrderEvent", kafka_order_event(store.id, 501 + i, email=addr, created=T0))
        producer.flush()
        wait_until_consumed(s, s.rules_group, [topics.ORDERS])
        rules.wait_committed()
    keys = {r["customer_key"]: r for r in steps(engine, store.id).values() if r["step"] == -1}
    vip = [k for k, r in keys.items() if int(k[1:], 16) % 2 == 0]  # half of them, old and new, are VIPs
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO customer_state (store_id, customer_key, tags) "
                          "SELECT :s, k, ARRAY['vip'] FROM unnest(CAST(:keys AS text[])) AS k "
                          "ON CONFLICT (store_id, customer_key) DO UPDATE SET tags = EXCLUDED.tags"),
                     {"s": store.id, "keys": vip})
    for day in (0, 1, 2, 3):
        clock.set(T0 + timedelta(days=day, hours=2))
        drain(em)

    got = subjects(sent(s))
    assert len(keys) == 200
    version_of = {k: r["rule_version"] for k, r in keys.items()}
    checked: Counter[int] = Counter()
    for ckey, version in version_of.items():
        side = "VIP" if ckey in vip else "C"
        want = ["A v1", "B v1", f"{side} v1"] if version == 1 else ["A v2", f"{side} v2"]
        assert got[ckey] == want, (ckey, version, got[ckey])
        checked[version] += 1
    assert checked == Counter({1: 100, 2: 100})  # every customer: 100 pinned to v1, 100 on v2
    assert not any("B v1" in got[k] for k, v in version_of.items() if v == 2)  # the deleted step: nobody on v2
    summary = client.get(f"/v1/rules/{rule_id}/runs", headers=h).json()
    assert [(v["version"], v["runs"], v["completed"]) for v in summary["versions"]] == [(1, 100, 100), (2, 100, 100)]
    versions = client.get(f"/v1/rules/{rule_id}/versions", headers=h).json()["versions"]
    assert [(v["version"], v["current"], len(v["spec"]["actions"])) for v in versions] == [(1, False, 3), (2, True, 2)]


@pytest.mark.parametrize("actions, field", [
    ([email("a"), {"type": "branch", "condition": {"type": "email_opened", "within": "24h"},
                   "yes": {"steps": [{"type": "send_email", "params": {"html": "x"}}]}}],
     "actions[1].yes.steps[0].params.subject"),
    ([email("a"), {"type": "branch", "condition": {"type": "email_opened", "within": "24h"},
                   "no": {"steps": [{"type": "launch_rocket"}]}}], "actions[1].no.steps[0].type"),
    ([email("a", variants=[{"name": "A", "params": {"subject": ""}}, {"name": "B"}])],
     "actions[0].variants[0].params.subject"),
    ([email("a", at={"time": "25:61"})], "actions[0].at.time"),
    ([email("a"), {"type": "branch", "condition": {"type": "email_opened", "within": "24h"},
                   "yes": {"then": "nowhere"}}], "actions[1].yes.then"),
    ([email("a"), {"type": "branch", "condition": {"type": "maybe"}}], "actions[1].condition.type"),
])
def test_a_wrong_workflow_gets_a_422_naming_the_step(settings, engine, actions: list[dict[str, Any]],  # type: ignore[no-untyped-def]
                                                     field: str) -> None:
    store = make_store(engine)
    client, h = api_client(settings), bearer(engine, store.id)
    r = client.post("/v1/rules", json={"name": "w", "trigger": "new_order", "actions": actions}, headers=h)
    assert r.status_code == 422, r.text
    assert field in [e["field"] for e in r.json()["errors"]], r.json()
    r = client.post("/v1/rules", json={"name": "w", "trigger": "new_order", "actions": [email("a")],
                                       "goals": [{"type": "tag_added"}]}, headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "goals[0].tag", r.text


def test_schema_describes_steps_timing_variants_and_goals(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine)
    doc = api_client(settings).get("/v1/schema", headers=bearer(engine, store.id)).json()["workflow"]
    assert set(doc["steps"]) == {"action", "branch"}
    assert set(doc["branch_conditions"]) == {"condition", "email_opened", "email_clicked"}
    assert {"days", "time", "timezone"} <= set(doc["at"]["properties"])
    assert {"ordered", "clicked", "tag_added", "condition"} <= set(doc["goals"]["types"])
    assert set(doc["when_disabled"]) == {"exit", "finish"}
    assert "metric" in doc["auto_winner"]["properties"]


def test_dry_run_shows_the_path_a_customer_would_take(settings, engine) -> None:  # type: ignore[no-untyped-def]
    from wooflow.simulator.server import SimulatorServer

    with SimulatorServer(seed=4) as sim:
        store = make_store(engine, sim.url, consumer_key=sim.auth[0], consumer_secret=sim.auth[1])
        client, h = api_client(settings), bearer(engine, store.id)
        spec = {"name": "path", "trigger": "new_order", "actions": [
            email("Welcome", id="w"),
            {"type": "branch", "delay": "hour 1", "condition": {"type": "condition", "conditions": {
                "match": "all", "conditions": [{"field": "order_count", "operator": "gt", "value": 5}]}},
             "yes": {"steps": [email("Loyal")]}, "no": {"steps": [
                 email("New", delay="day 1", at={"days": ["mon"], "time": "10:00"},
                       variants=[{"name": "A", "params": {"subject": "New A"}},
                                 {"name": "B", "params": {"subject": "New B"}}]),
                 {"type": "branch", "condition": {"type": "email_opened", "step": "w", "within": "24h"},
                  "yes": {"steps": [email("Opened")]}, "no": {"steps": [email("Not opened")]}}]}}]}
        rid = client.post("/v1/rules", json=spec, headers=h).json()["id"]
        product = sim.store.create_product("Kettle", "150.00")
        order = sim.store.create_order(line_items=[{"product_id": product.id, "quantity": 1}],
                                       billing={"email": "ala@example.com", "country": "PL", "first_name": "Ala"})
        r = client.post(f"/v1/rules/{rid}/dry-run", json={"order_id": order.id}, headers=h)
        assert r.status_code == 200, r.text
        out = r.json()
        # a first-time customer: the "no" side, then the email branch shown as not opened
        assert [(p["step"], p["where"]) for p in out["path"]] == [
            (0, "actions[0]"), (1, "actions[1]"), (3, "actions[1].no.steps[0]"), (4, "actions[1].no.steps[1]"),
            (6, "actions[1].no.steps[1].no.steps[0]")]
        steps_ = {p["step"]: p for p in out["actions"]}
        assert steps_[1]["answer"] == "no" and "does not meet" in steps_[1]["reason"]
        assert steps_[3]["variant"] in ("A", "B") and steps_[3]["params"]["subject"] == f"New {steps_[3]['variant']}"
        assert datetime.fromisoformat(steps_[3]["due_at"]).astimezone(timing_zone(store.timezone)).strftime(
            "%a %H:%M") == "Mon 10:00"
        assert steps_[4]["answer"] == "no" and "if it is, the run goes to step 5" in steps_[4]["reason"]
        assert steps_[6]["status"] == "dry_run"
        assert out["goals"] == [] and out["when_disabled"] == "exit"


def test_disabling_lets_runs_finish_or_exits_them_as_the_owner_chose(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine)
    series = {"name": "series", "trigger": "new_order",
              "actions": [email("first"), email("second", delay="day 1", at={"time": "10:00"})]}
    finish = add_rule(engine, store.id, {**series, "when_disabled": "finish"})
    leave = add_rule(engine, store.id, series)  # when_disabled: exit (the default)
    clock = FrozenClock(T0)
    start_runs(engine, finish, store.id, ["gfinish"], T0)
    start_runs(engine, leave, store.id, ["gleave"], T0)
    em = emitter(settings, engine, clock, store.id)
    drain(em)
    with engine.begin() as conn:  # disabled outside the API: no new content, no new version
        conn.execute(text("UPDATE rules SET enabled = false WHERE id = ANY(:ids)"), {"ids": [finish, leave]})
        assert conn.execute(text("SELECT version FROM rules WHERE id = :r"), {"r": finish}).scalar_one() == 1
    em.rules.reload()
    clock.set(T0 + timedelta(days=2))
    drain(em)
    assert subjects(sent(settings)) == {"gfinish": ["first", "second"], "gleave": ["first"]}
    rows = {r["customer_key"]: r for r in steps(engine, store.id).values() if r["step"] == 1}
    assert rows["gleave"]["status"] == "exited" and rows["gleave"]["exit_reason"] == "rule disabled: its runs exit"


def test_an_edit_of_what_a_run_does_is_a_new_version_whoever_writes_it(engine) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine)
    rule_id = add_rule(engine, store.id, {"name": "v", "trigger": "new_order", "actions": [email("one")]})
    with engine.begin() as conn:
        conn.execute(text("UPDATE rules SET name = 'renamed', priority = 3 WHERE id = :r"), {"r": rule_id})
        conn.execute(text("UPDATE rules SET actions = CAST(:a AS jsonb) WHERE id = :r"),
                     {"r": rule_id, "a": json.dumps([email("two")])})
        rows = conn.execute(text("SELECT version, spec -> 'actions' -> 0 -> 'params' ->> 'subject' FROM rule_versions "
                                 "WHERE rule_id = :r ORDER BY version"), {"r": rule_id}).all()
        current = conn.execute(text("SELECT version FROM rules WHERE id = :r"), {"r": rule_id}).scalar_one()
    assert [tuple(r) for r in rows] == [(1, "one"), (2, "two")] and current == 2


def test_quiet_hours_and_the_customers_own_timezone(settings, engine) -> None:  # type: ignore[no-untyped-def]
    from wooflow.stores import Store, upsert_store

    base = make_store(engine, timezone="Europe/Warsaw")
    store = Store(**{**base.__dict__, "settings": {"quiet_hours": {"start": "21:00", "end": "08:00"}}})
    upsert_store(engine, store)
    rule_id = add_rule(engine, store.id, {"name": "timed", "trigger": "new_order", "actions": [
        email("late", delay="hour 12", id="late"),
        {"type": "add_order_note", "params": {"note": "a note is not a message"}, "delay": "hour 12", "id": "note"},
        email("local", at={"time": "09:00", "timezone": "customer"})]})
    trigger = datetime(2026, 1, 14, 12, tzinfo=timezone.utc)  # 13:00 in Warsaw (CET)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO customer_state (store_id, customer_key, attributes) VALUES "
                          "(:s, 'gny', CAST(:a AS jsonb))"),
                     {"s": store.id, "a": json.dumps({"timezone": "America/New_York"})})
    start_runs(engine, rule_id, store.id, ["gny", "gwaw"], trigger)
    drain(emitter(settings, engine, FrozenClock(trigger), store.id))
    due = {(r["customer_key"], r["step"]): r["due_at"] for r in steps(engine, store.id).values() if r["step"] >= 0}
    # 01:00 in Warsaw is inside the quiet hours: the email waits for 08:00 (07:00 UTC); the note does not
    assert due[("gwaw", 0)] == datetime(2026, 1, 15, 7, tzinfo=timezone.utc)
    assert due[("gwaw", 1)] == datetime(2026, 1, 15, 0, tzinfo=timezone.utc)
    # 09:00 in the customer's New York (14:00 UTC), and in the store's Warsaw for a customer without one
    assert due[("gny", 2)] == datetime(2026, 1, 14, 14, tzinfo=timezone.utc)
    assert due[("gwaw", 2)] == datetime(2026, 1, 15, 8, tzinfo=timezone.utc)


def test_a_run_that_cannot_go_on_stops_alone_and_the_others_go_on(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine)
    rule_id = add_rule(engine, store.id, OPENED_BRANCH)
    clock = FrozenClock(T0)
    start_runs(engine, rule_id, store.id, ["gfine", "gbroken"], T0)
    with engine.begin() as conn:  # a start row written by something else, without its trigger time
        conn.execute(text("UPDATE scheduled_steps SET command = command - 'created_at' "
                          "WHERE store_id = :s AND customer_key = 'gbroken'"), {"s": store.id})
    drain(emitter(settings, engine, clock, store.id))
    assert subjects(sent(settings)) == {"gfine": ["Welcome"]}
    broken = [r for r in steps(engine, store.id).values() if r["customer_key"] == "gbroken"]
    assert [(r["status"], r["exit_kind"]) for r in broken] == [("exited", "error")]
    assert broken[0]["exit_reason"].startswith("internal error: KeyError")
    assert [r["status"] for _, r in read_topic(settings, topics.LOGS) if r["customer_key"] == "gbroken"] == ["exited"]


def test_a_click_in_a_message_of_the_run_is_a_goal(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine)
    rule_id = add_rule(engine, store.id, {"name": "until a click", "trigger": "new_order", "goals": [
        {"type": "clicked"}], "actions": [email("one"), email("two", delay="day 1"), email("three", delay="day 2")]})
    clock = FrozenClock(T0)
    with engine.begin() as conn:  # a linear workflow: the rule consumer stores its later steps
        for ckey in ("gclicker", "greader"):
            ev = order_event(store.id, 1, ckey, T0)
            store_delayed(conn, [build_command(rule_id=rule_id, rule_version=1, step=i, action_type="send_email",
                                               params={"subject": s, "html": "x"}, delay_s=86400 * i,
                                               schema="OrderEvent", event=ev, trigger="new_order", now=T0)
                                 for i, s in ((1, "two"), (2, "three"))])
            if ckey == "gclicker":  # a link in the first email, sent by the rule consumer at once
                record_engagement(engine, store.id, rule_id, ev["event_id"], 0, ckey, T0 + timedelta(hours=2),
                                  kind="click", link=0)
    em = emitter(settings, engine, clock, store.id)
    for day in (1, 2):
        clock.set(T0 + timedelta(days=day))
        drain(em)
    assert subjects(sent(settings)) == {"greader": ["two", "three"]}
    logs = [(r["customer_key"], r["step"], r["status"]) for _, r in read_topic(settings, topics.LOGS)]
    assert sorted(logs) == [("gclicker", 1, "goal_reached"), ("gclicker", 2, "exited")]
