"""WooCommerce Subscriptions end to end: the simulated store delivers subscription.*
webhooks as WooCommerce Subscriptions does; the bridge, the rule consumer, the scheduler
and the workers run as processes on the real broker and database, on a simulated clock
every process reads; reminders go out by email to a real SMTP server.

A subscription whose next payment is 3 days ahead — counted in the store's timezone, here
Auckland's, where the day starts 11 to 13 hours before UTC's — gets the renewal reminder
once, from the first minute of its local day; a cancelled one gets none. Its status
changes fire `subscription_status_changed`.
"""

from __future__ import annotations

from contextlib import ExitStack
from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, text

from tests.harness import Inbox
from tests.pipeline import add_rule, connect_store
from tests.support import RoleProcess, free_port, logs_of, make_sim_store, wait_for, wait_until_consumed
from wooflow.clock import FileClock
from wooflow.kafka import topics
from wooflow.scheduler import triggers as _scheduled  # noqa: F401 - registers subscription_renewal
from wooflow.settings import Settings
from wooflow.simulator.server import SimulatorServer
from wooflow.stores import Store, upsert_store

pytestmark = pytest.mark.e2e

TZ = ZoneInfo("Pacific/Auckland")
TOPICS = ("subscription.created", "subscription.updated", "subscription.deleted", "customer.created")
RULES = (
    {"name": "renewal reminder", "trigger": "subscription_renewal", "trigger_options": {"days_before": 3},
     "actions": [{"type": "send_email", "params": {
         "subject": "Renews on {{ subscription.renewal_date }}",
         "text": "Subscription {{ subscription.id }} renews in {{ subscription.days_left }} days."}}]},
    {"name": "cancelled", "trigger": "subscription_status_changed", "trigger_options": {"to": "cancelled"},
     "actions": [{"type": "send_email", "params": {"subject": "Sorry to see you go", "text": "Come back!"}}]},
)


class Subscriptions:
    """The pipeline with the scheduler, a shared clock file and an SMTP inbox."""

    def __init__(self, settings: Settings, engine: Engine, log_dir: Path, stack: ExitStack) -> None:
        self.settings, self.engine = settings, engine
        self.clock = FileClock(log_dir / "clock")
        self.t0 = self.clock.set(datetime.now(timezone.utc).replace(microsecond=0))
        self.inbox = stack.enter_context(Inbox())
        self.sim = stack.enter_context(SimulatorServer(seed=5, clock=self.clock.epoch))
        self.store = Store(**{**make_sim_store(engine, self.sim).__dict__, "timezone": str(TZ)})
        upsert_store(engine, self.store)
        self.inbox.store_id = self.store.id
        self.rule_ids = [add_rule(engine, self.store.id, r) for r in RULES]
        tag = settings.topic_prefix.rstrip(".")
        self.scheduler_group = f"{tag}-scheduler"
        self.metrics = f"http://127.0.0.1:{free_port()}"
        env = {"WOOFLOW_CLOCK": f"file:{self.clock.path}", "WOOFLOW_SCHEDULER_GROUP": self.scheduler_group,
               "WOOFLOW_SCHEDULER_SCAN_INTERVAL_S": "0.3", "WOOFLOW_SCHEDULER_POLL_S": "0.1",
               "WOOFLOW_SMTP_HOST": "127.0.0.1", "WOOFLOW_SMTP_PORT": str(self.inbox.port),
               "WOOFLOW_DEFERRED_POLL_S": "0.2", "WOOFLOW_SCHEDULER_STORES": self.store.id}
        port = free_port()
        self.roles = {
            "bridge": RoleProcess("bridge", settings, log_dir, "--host", "127.0.0.1", "--port", str(port), **env),
            "rules": RoleProcess("rules", settings, log_dir, **env),
            "workers": RoleProcess("workers", settings, log_dir, **env),
            "scheduler": RoleProcess("scheduler", settings, log_dir, **env,
                                     WOOFLOW_METRICS_PORT=self.metrics.rsplit(":", 1)[1]),
        }
        for role in self.roles.values():
            stack.callback(role.stop)
            role.start()
        connect_store(self.sim.store, self.store, f"http://127.0.0.1:{port}", TOPICS)

    def at(self, when: datetime) -> None:
        self.clock.set(when)

    def scans(self) -> int:
        try:
            body = httpx.get(f"{self.metrics}/metrics", timeout=2).text
        except httpx.HTTPError:
            return -1
        return int(sum(s.value for f in text_string_to_metric_families(body) for s in f.samples
                       if s.name == "wooflow_scheduler_scan_seconds_count" and s.labels.get("scan") == "carts"))

    def settle(self) -> None:
        """Every delivery in Kafka and applied by the rule consumer, two scheduler scans at
        the clock's time, every due step emitted and every command executed: a reminder that
        has not arrived by then will not."""
        wait_for(lambda: self.sim.store.wait_idle(0.5) and all(d.success for d in self.sim.store.deliveries()), 60,
                 0.2, "every webhook delivered")
        wait_until_consumed(self.settings, self.settings.rules_group, topics.EVENT_TOPICS)
        start = wait_for(lambda: (n,) if (n := self.scans()) >= 0 else None, 60, 0.1, "scheduler metrics")[0]
        wait_for(lambda: self.scans() >= start + 2, 60, 0.1, "two trigger scans at the current time")
        wait_for(lambda: not self.rows("SELECT 1 FROM scheduled_steps WHERE store_id = :s AND status = 'pending' "
                                       "AND due_at <= :now", now=self.clock.now()), 30, 0.1, "due steps emitted")
        wait_until_consumed(self.settings, self.settings.workers_group, [topics.COMMANDS])

    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(text(sql), {"s": self.store.id, **params}).mappings()]


def local_midnight(day: Any) -> datetime:
    return datetime.combine(day, time(0, 0), TZ).astimezone(timezone.utc)


def test_renewal_reminder_once_three_local_days_ahead_and_none_for_a_cancelled_subscription(  # type: ignore[no-untyped-def]
        settings, engine, logs_dir) -> None:
    with ExitStack() as stack:
        s = Subscriptions(settings, engine, logs_dir, stack)
        try:
            store = s.sim.store
            box = store.create_product("Coffee box", "59.00")
            today = s.t0.astimezone(TZ).date()
            renews = today + timedelta(days=5)
            # 00:30 in Auckland on the renewal day: still the day before in UTC
            due = int((local_midnight(renews) + timedelta(minutes=30)).timestamp())
            ala = store.create_customer("ala@example.com", first_name="Ala")
            olek = store.create_customer("olek@example.com", first_name="Olek")
            kept = store.create_subscription(customer_id=ala.id, line_items=[{"product_id": box.id, "quantity": 1}],
                                             status="active", next_payment_date=due)
            gone = store.create_subscription(customer_id=olek.id, line_items=[{"product_id": box.id, "quantity": 1}],
                                             status="active", next_payment_date=due)
            # WooCommerce builds a delivery's payload when it runs: the active state reaches wooflow
            # only if it is delivered before the cancellation, which the state kept proves
            wait_for(lambda: len(s.rows("SELECT 1 FROM subscription_state WHERE store_id = :s AND status = 'active'"))
                     == 2, 90, 0.2, "both subscriptions active in wooflow's state")
            store.update_subscription(gone.id, status="cancelled")
            wait_for(lambda: s.inbox.to("olek@example.com"), 90, 0.2, "the cancellation email")
            s.settle()
            assert s.inbox.to("ala@example.com") == []  # five days ahead: not yet

            # the reminder's day is the renewal's local day minus 3, from its local midnight
            reminder_day = local_midnight(renews - timedelta(days=3))
            s.at(reminder_day - timedelta(minutes=1))
            s.settle()
            assert s.inbox.to("ala@example.com") == []
            s.at(reminder_day + timedelta(minutes=1))
            mail = wait_for(lambda: s.inbox.to("ala@example.com"), 60, 0.2, "the renewal reminder")
            assert mail[0]["Subject"] == f"Renews on {renews.isoformat()}"
            s.at(reminder_day + timedelta(days=1, hours=2))  # the days after: still one reminder
            s.settle()
            assert [m["Subject"] for m in s.inbox.to("ala@example.com")] == [f"Renews on {renews.isoformat()}"]
            assert [m["Subject"] for m in s.inbox.to("olek@example.com")] == ["Sorry to see you go"]
            assert s.rows("SELECT status FROM subscription_state WHERE store_id = :s ORDER BY subscription_id") == \
                [{"status": "active"}, {"status": "cancelled"}]
            assert kept.id < gone.id
        except AssertionError:
            print(logs_of(s.roles), s.inbox.summary(), s.sim.store.deliveries())
            raise
