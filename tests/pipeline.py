"""A whole pipeline for a test: simulated store → bridge → rules → workers → sink,
each role a real process, on the session's real Kafka broker and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, text

from tests.harness import hook_url
from tests.support import RoleProcess, free_port, logs_of, make_sim_store, ready, wait_for
from wooflow.consumer.model import RuleSpec
from wooflow.db.tables import rules
from wooflow.settings import Settings
from wooflow.simulator.server import SimulatorServer

BIG_ORDER_RULE = {
    "name": "High-value order note", "trigger": "new_order",
    "conditions": {"match": "all", "conditions": [{"field": "order_total", "operator": "gt", "value": "100"}]},
    "actions": [{"type": "add_order_note", "params": {"note": "wooflow: big order {{ order.number }}"}}],
}


def add_rule(engine: Engine, store_id: str, rule: dict[str, Any]) -> int:
    spec = RuleSpec.model_validate(rule)
    with engine.begin() as conn:
        return int(conn.execute(insert(rules).values(store_id=store_id, **spec.model_dump(mode="json"))
                                .returning(rules.c.id)).scalar_one())


def connect_store(sim_store: Any, store: Any, bridge_url: str, webhook_topics: tuple[str, ...],
                  timeout: float = 120.0) -> None:
    """Once the bridge answers /readyz, point the simulated store's webhooks at it. The deadline
    is generous: a bridge process starting on a machine at load 20+ took over 40 s; the wait
    ends as soon as it answers."""
    wait_for(lambda: ready(bridge_url, 1), timeout, 0.1, "bridge /readyz")
    hook = hook_url(bridge_url, store.id)
    for topic in webhook_topics:
        sim_store.create_webhook(topic, hook, secret=store.webhook_secret)


class Pipeline:
    def __init__(self, settings: Settings, engine: Engine, log_dir: Path, stack: ExitStack,
                 rules: tuple[dict[str, Any], ...] = (),
                 webhook_topics: tuple[str, ...] = ("order.created", "order.updated"),
                 before_start: Callable[[Pipeline], None] | None = None,
                 ) -> None:
        self.settings, self.engine, self.log_dir = settings, engine, log_dir
        self.sim = stack.enter_context(SimulatorServer(seed=7))
        self.store = make_sim_store(engine, self.sim)
        # Rules exist before the consumers start, so no event races a rule reload.
        self.rule_ids = [add_rule(engine, self.store.id, r) for r in rules]
        if before_start is not None:  # e.g. rules made through the API or the console
            before_start(self)
        port = free_port()
        self.bridge_url = f"http://127.0.0.1:{port}"
        self.roles = {
            "bridge": RoleProcess("bridge", settings, log_dir, "--host", "127.0.0.1", "--port", str(port)),
            "rules": RoleProcess("rules", settings, log_dir),
            "workers": RoleProcess("workers", settings, log_dir),
            "sink": RoleProcess("sink", settings, log_dir),
        }
        for role in self.roles.values():
            stack.callback(role.stop)
            role.start()
        connect_store(self.sim.store, self.store, self.bridge_url, webhook_topics)

    def notes(self, order_id: int) -> list[str]:
        return [n.note for n in self.sim.store.get_order_notes(order_id)]

    def wooflow_notes(self, order_id: int) -> list[str]:
        return [n for n in self.notes(order_id) if n.startswith("wooflow:")]

    def log_rows(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(
                text("SELECT * FROM execution_logs WHERE store_id = :s"), {"s": self.store.id})]

    def role_logs(self) -> str:
        return logs_of(self.roles, 3000)
