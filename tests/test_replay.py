"""Replay through the rules: a rule added after the fact fires once per matching past
event (live); a dry run changes nothing; nothing that already executed fires again."""

from __future__ import annotations

from contextlib import ExitStack
from datetime import datetime, timedelta, timezone

import pytest

from tests.pipeline import BIG_ORDER_RULE, Pipeline, add_rule
from tests.support import env_of, topic_size, wait_for, wait_until_pipeline_idle, wooflow_cli
from wooflow.kafka import topics
from wooflow.ops.replay import Replayer, ReplayError, ReplaySpec

pytestmark = pytest.mark.e2e

CUSTOMS_RULE = {
    "name": "Customs note", "trigger": "new_order",
    "conditions": {"match": "all", "conditions": [{"field": "geo_scope", "operator": "equals", "value": "non_eu"}]},
    "actions": [{"type": "add_order_note", "params": {"note": "wooflow: customs for {{ order.number }}"}}],
}


def test_replay_dry_run_then_live_after_adding_a_rule(settings, engine, logs_dir) -> None:  # type: ignore[no-untyped-def]
    start = datetime.now(timezone.utc) - timedelta(minutes=1)
    with ExitStack() as stack:
        p = Pipeline(settings, engine, logs_dir, stack, rules=(BIG_ORDER_RULE,))
        sim = p.sim.store
        cheap, pricey = sim.create_product("Pen", "10.00"), sim.create_product("Desk", "300.00")
        plan = [("PL", pricey), ("US", pricey), ("US", cheap), ("GB", cheap), ("DE", cheap), ("NO", pricey)]
        orders = {}
        for i, (country, product) in enumerate(plan):
            o = sim.create_order(line_items=[{"product_id": product.id, "quantity": 1}],
                                 billing={"email": f"r{i}@example.com", "country": country})
            orders[o.id] = (country, product is pricey)
        big = [o for o, (_, is_big) in orders.items() if is_big]
        non_eu = [o for o, (c, _) in orders.items() if c in ("US", "GB")]  # Norway's geo_scope is eea
        wait_for(lambda: all(p.wooflow_notes(o) for o in big), 60, 0.3, "live notes for big orders")
        wait_for(lambda: len([r for r in p.log_rows() if r["status"] == "succeeded"]) == len(big), 30, 0.3,
                 "live execution logs")

        customs_id = add_rule(engine, p.store.id, CUSTOMS_RULE)
        replayer = Replayer(settings)
        spec = ReplaySpec(topic=topics.ORDERS, start=start, store=p.store.id)
        commands_before = topic_size(settings, topics.COMMANDS)

        dry = replayer.run(spec)
        assert dry.rules[customs_id].commands == len(non_eu)
        assert dry.rules[p.rule_ids[0]].commands == len(big)
        assert topic_size(settings, topics.COMMANDS) == commands_before, "a dry run produces nothing"
        assert all(not any("customs" in n for n in p.notes(o)) for o in orders)
        # the partitions shared by two processes: the same plan
        split = replayer.run(spec, workers=2)
        assert {r: (t.matched, t.commands) for r, t in split.rules.items()} == \
            {r: (t.matched, t.commands) for r, t in dry.rules.items()}
        assert split.events == dry.events and topic_size(settings, topics.COMMANDS) == commands_before
        # the same from the command line: forked workers under a progress bar, a summary table
        cli = wooflow_cli("replay", "--topic", topics.ORDERS, "--from", start.isoformat(), "--store", p.store.id,
                          "--dry-run", "--workers", "2", env=env_of(settings))
        assert cli.returncode == 0, cli.stderr
        assert f"{dry.events} events" in cli.stdout and "Customs note" in cli.stdout, cli.stdout
        assert topic_size(settings, topics.COMMANDS) == commands_before

        live = replayer.run(ReplaySpec(topic=topics.ORDERS, start=start, store=p.store.id, live=True))
        assert (live.rules[customs_id].emitted, live.rules[customs_id].already) == (len(non_eu), 0)
        assert (live.rules[p.rule_ids[0]].emitted, live.rules[p.rule_ids[0]].already) == (0, len(big))
        wait_for(lambda: all(any("customs" in n for n in p.notes(o)) for o in non_eu), 60, 0.3, "customs notes")
        wait_for(lambda: len([r for r in p.log_rows() if r["status"] == "succeeded"]) == len(big) + len(non_eu),
                 30, 0.3, "all execution logs")

        again = replayer.run(ReplaySpec(topic=topics.ORDERS, start=start, store=p.store.id, live=True))
        assert sum(t.emitted for t in again.rules.values()) == 0
        wait_until_pipeline_idle(settings)  # a duplicate note would be there by now
        for o, (_country, is_big) in orders.items():
            notes = p.wooflow_notes(o)
            assert len([n for n in notes if "customs" in n]) == (1 if o in non_eu else 0), (o, notes)
            assert len([n for n in notes if "big order" in n]) == (1 if is_big else 0), (o, notes)

        only = replayer.run(ReplaySpec(topic=topics.ORDERS, start=start, store=p.store.id,
                                       rules=frozenset({customs_id})))
        assert set(only.rules) == {customs_id} and only.rules[customs_id].commands == len(non_eu)
        # a rule on customers' events: nothing of the orders topic can fire it, nothing is decoded
        signup_id = add_rule(engine, p.store.id, {"name": "Signup", "trigger": "new_customer",
                                                  "actions": [{"type": "add_customer_tag", "params": {"tag": "new"}}]})
        other = replayer.run(ReplaySpec(topic=topics.ORDERS, start=start, store=p.store.id,
                                        rules=frozenset({signup_id})))
        assert other.events >= len(orders) and other.skipped_unwatched == other.events and other.decoded == 0
        assert not other.rules
        with pytest.raises(ReplayError, match="no enabled rule"):
            replayer.run(ReplaySpec(topic=topics.ORDERS, start=start, rules=frozenset({10**9})))
