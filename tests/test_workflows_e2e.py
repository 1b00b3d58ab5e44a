"""Workflows over time, end to end through Kafka with a simulated clock.

Every role runs as a real process (simulated store → bridge → rules → workers → sink, plus
the scheduler), emails go to a real SMTP server, and time is a file every process reads
(WOOFLOW_CLOCK=file:...; the store simulator uses it for its dates too). The tests move
that clock by days instead of waiting days.

The clock starts at the real time: the bridge stamps storefront events with the time it
received them, so starting there keeps every source of time consistent.
"""

from __future__ import annotations

import email
import email.policy
import re
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, text

from tests.harness import ApiThread, Inbox
from tests.pipeline import connect_store
from tests.support import RoleProcess, free_port, logs_of, make_sim_store, wait_for, wait_until_consumed
from wooflow.clock import FileClock
from wooflow.kafka import topics
from wooflow.producers.keys import email_hash
from wooflow.producers.storefront import customer_signature
from wooflow.scheduler.recovery import parse_items_param
from wooflow.scheduler.templates import install
from wooflow.settings import Settings
from wooflow.simulator.server import SimulatorServer
from wooflow.stores import Store, upsert_store
from wooflow.workers.consent import record as record_consent

pytestmark = pytest.mark.e2e


def text_part(msg: email.message.EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain",))
    return part.get_content() if part is not None else ""


class Workflows:
    """The whole pipeline with a shared simulated clock, an SMTP inbox and the admin API."""

    def __init__(self, settings: Settings, engine: Engine, log_dir: Path, stack: ExitStack,
                 store_settings: dict[str, Any] | None = None) -> None:
        self.engine = engine
        self.clock = FileClock(log_dir / "clock")
        self.t0 = self.clock.set(datetime.now(timezone.utc).replace(microsecond=0))
        self.inbox = stack.enter_context(Inbox())
        self.sim = stack.enter_context(SimulatorServer(seed=11, clock=self.clock.epoch))
        store = make_sim_store(engine, self.sim)
        self.store = Store(**{**store.__dict__, "settings": store_settings or {}})
        upsert_store(engine, self.store)
        self.inbox.store_id = self.store.id
        # the admin API in-process: it serves the public cart recovery links
        self.settings = settings.model_copy(update={"clock": f"file:{self.clock.path}"})
        self.api = stack.enter_context(ApiThread(self.settings))
        self.settings = self.settings.model_copy(update={"public_base_url": self.api.url})
        tag = settings.topic_prefix.rstrip(".")
        env = {"WOOFLOW_CLOCK": f"file:{self.clock.path}", "WOOFLOW_SCHEDULER_GROUP": f"{tag}-scheduler",
               "WOOFLOW_SCHEDULER_SCAN_INTERVAL_S": "0.3", "WOOFLOW_SCHEDULER_POLL_S": "0.1",
               "WOOFLOW_SMTP_HOST": "127.0.0.1", "WOOFLOW_SMTP_PORT": str(self.inbox.port),
               "WOOFLOW_PUBLIC_BASE_URL": self.settings.public_base_url, "WOOFLOW_RULES_RELOAD_S": "0.5",
               "WOOFLOW_DEFERRED_POLL_S": "0.2", "WOOFLOW_SCHEDULER_STORES": self.store.id}
        port, self.scheduler_metrics = free_port(), f"http://127.0.0.1:{free_port()}"
        self.bridge_url = f"http://127.0.0.1:{port}"
        self.scheduler_group = env["WOOFLOW_SCHEDULER_GROUP"]
        self.roles = {
            "bridge": RoleProcess("bridge", settings, log_dir, "--host", "127.0.0.1", "--port", str(port), **env),
            "rules": RoleProcess("rules", settings, log_dir, **env),
            "workers": RoleProcess("workers", settings, log_dir, **env),
            "sink": RoleProcess("sink", settings, log_dir, **env),
            "scheduler": RoleProcess("scheduler", settings, log_dir, **env,
                                     WOOFLOW_METRICS_PORT=self.scheduler_metrics.rsplit(":", 1)[1]),
        }
        self.log_dir = log_dir
        for role in self.roles.values():
            stack.callback(role.stop)

    def start(self, webhook_topics: tuple[str, ...] = ("order.created", "order.updated", "customer.created")) -> None:
        for role in self.roles.values():
            role.start()

        connect_store(self.sim.store, self.store, self.bridge_url, webhook_topics)

    # --- time ----------------------------------------------------------------------
    def at(self, delta: timedelta) -> datetime:
        """Move the shared clock to t0 + delta."""
        return self.clock.set(self.t0 + delta)

    def scans(self) -> int:
        """Trigger scans the scheduler has finished so far (its /metrics)."""
        try:
            body = httpx.get(f"{self.scheduler_metrics}/metrics", timeout=2).text
        except httpx.HTTPError:
            return -1
        return int(sum(sample.value for family in text_string_to_metric_families(body)
                       for sample in family.samples
                       if sample.name == "wooflow_scheduler_scan_seconds_count"
                       and sample.labels.get("scan") == "carts"))

    def settle(self) -> None:
        """Proof that everything the clock's current time calls for has happened, so that
        an email that has not arrived will not: events went through the rules and the
        scheduler's activity reader; two trigger scans ran after the clock was last moved
        (the first may have started before); no step is due and still pending; every
        command went through the workers (each send acknowledged by SMTP before it commits)."""
        wait_until_consumed(self.settings, self.settings.rules_group, topics.EVENT_TOPICS)
        wait_until_consumed(self.settings, self.scheduler_group, (topics.ORDERS, topics.CUSTOMERS, topics.STOREFRONT))
        scans = wait_for(lambda: (n,) if (n := self.scans()) >= 0 else None, 30, 0.1, "the scheduler's metrics")[0]
        wait_for(lambda: self.scans() >= scans + 2, 30, 0.1, "two trigger scans at the current time")
        wait_for(lambda: not self.query("SELECT 1 FROM scheduled_steps WHERE store_id = :s AND status = 'pending' "
                                        "AND due_at <= :now", now=self.clock.now()), 30, 0.1, "every due step emitted")
        wait_until_consumed(self.settings, self.settings.workers_group, [topics.COMMANDS])

    # --- storefront ----------------------------------------------------------------
    def storefront(self, session: str, *events: dict[str, Any]) -> dict[str, Any]:
        r = httpx.post(f"{self.bridge_url}/storefront/{self.store.id}/events",
                       json={"key": self.store.public_key, "session_id": session, "events": list(events)},
                       headers={"Origin": self.sim.url}, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    # --- database views --------------------------------------------------------------
    def query(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(text(sql), {"s": self.store.id, **params}).mappings()]

    def steps(self, customer_key: str) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM scheduled_steps WHERE store_id = :s AND customer_key = :k ORDER BY step",
                          k=customer_key)

    def logs(self, customer_key: str, status: str) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM execution_logs WHERE store_id = :s AND customer_key = :k AND status = :st "
                          "ORDER BY step", k=customer_key, st=status)

    def role_logs(self) -> str:
        """Each role's log tail and what the inbox received, for a failure's report."""
        return f"{logs_of(self.roles)}\ninbox: {self.inbox.summary()}"


def test_welcome_series_fires_on_days_0_3_7_and_14(settings, engine, logs_dir) -> None:  # type: ignore[no-untyped-def]
    with ExitStack() as stack:
        w = Workflows(settings, engine, logs_dir, stack)
        rule_id = install(engine, w.store.id, "welcome_series")
        addr = "ala@example.com"
        record_consent(engine, w.store.id, granted=True, email=addr, source="checkout")
        w.start()
        try:
            product = w.sim.store.create_product("Mug", "49.00")
            order = w.sim.store.create_order(line_items=[{"product_id": product.id, "quantity": 1}],
                                             billing={"email": addr, "first_name": "Ala", "country": "PL"},
                                             status="processing")
            ckey = f"g{email_hash(addr)}"
            wait_for(lambda: w.inbox.to(addr), 60, 0.2, "the day-0 welcome email")
            wait_for(lambda: len(w.steps(ckey)) == 4, 30, 0.2, "the delayed steps stored by the rule consumer")
            steps = w.steps(ckey)
            created = datetime.fromisoformat(steps[0]["command"]["created_at"])
            assert [s["due_at"] - created for s in steps] == [timedelta(days=d) for d in (3, 7, 7, 14)]
            assert all(s["rule_id"] == rule_id and s["status"] == "pending" for s in steps)

            expected = [["Welcome to"], ["a few tips"], ["How did we do?"], ["Picked for you"]]
            for n, day in ((1, 0), (2, 3), (3, 7), (4, 14)):
                if day:
                    w.at(timedelta(days=day, hours=1))
                wait_for(lambda n=n: len(w.inbox.to(addr)) >= n, 60, 0.2, f"the day-{day} email")
            w.settle()  # a fifth email (a step run twice) would be here by now
            subjects = w.inbox.subjects(addr)
            assert len(subjects) == 4, subjects
            for got, want in zip(subjects, expected, strict=True):
                assert want[0] in got, subjects
            day7 = text_part(w.inbox.to(addr)[2])
            code = re.search(r"next order: (THANKS[\w-]+)", day7)
            assert code, day7  # the coupon created by the day-7 apply_coupon step
            assert w.sim.store.coupon_by_code(code.group(1)) is not None
            done = w.steps(ckey)
            assert [s["status"] for s in done] == ["emitted"] * 4
            assert [s["emitted_at"] - w.t0 for s in done] == [timedelta(days=d, hours=1) for d in (3, 7, 7, 14)]
            wait_for(lambda: len(w.logs(ckey, "succeeded")) == 5, 30, 0.2, "five succeeded execution logs")
            assert order.id
        except AssertionError:
            print(w.role_logs())
            raise


def test_cart_recovery_stops_when_the_customer_orders_and_a_guest_recovers_through_the_link(  # type: ignore[no-untyped-def]
        settings, engine, logs_dir) -> None:
    with ExitStack() as stack:
        w = Workflows(settings, engine, logs_dir, stack, store_settings={"abandoned_cart_after": "15m"})
        rule_id = install(engine, w.store.id, "cart_recovery")
        member_addr, guest_addr = "jan@example.com", "guest@example.com"
        for addr in (member_addr, guest_addr):
            record_consent(engine, w.store.id, granted=True, email=addr, source="checkout")
        w.start()
        try:
            mug = w.sim.store.create_product("Mug", "19.90")
            tea = w.sim.store.create_product("Tea", "12.00")
            member = w.sim.store.create_customer(member_addr, first_name="Jan")
            member_key = f"c{member.id}"
            guest_key = f"g{email_hash(guest_addr)}"
            # a registered customer logs in (signed by the store) and fills a cart
            sess_m, sess_g = "sess-member-0001", "sess-guest-00001"
            sig = customer_signature(w.store.webhook_secret, w.store.id, sess_m, member.id)
            assert w.storefront(sess_m, {"type": "login", "customer_id": member.id, "customer_sig": sig, "id": "m1"},
                                {"type": "cart_updated", "id": "m2", "cart": [
                                    {"product_id": mug.id, "quantity": 1, "price": "19.90", "name": "Mug"}],
                                 "cart_total": "19.90"})["customer_key"] == member_key
            # a guest fills a cart, then types an email at checkout and leaves
            w.storefront(sess_g, {"type": "cart_updated", "id": "g1", "cart": [
                {"product_id": mug.id, "quantity": 2, "price": "19.90", "name": "Mug"},
                {"product_id": tea.id, "quantity": 1, "price": "12.00", "name": "Tea"}], "cart_total": "51.80"})
            assert w.storefront(sess_g, {"type": "email_captured", "email": guest_addr, "id": "g2"})[
                "customer_key"] == guest_key
            wait_for(lambda: len(w.query("SELECT 1 FROM carts WHERE store_id = :s AND customer_key IS NOT NULL")) == 2,
                     60, 0.2, "both carts known to the scheduler")

            w.at(timedelta(minutes=20))  # idle past the store's 15 minutes: abandoned
            wait_for(lambda: len(w.steps(member_key)) == 5 and len(w.steps(guest_key)) == 5, 30, 0.2,
                     "the cart recovery runs")
            w.at(timedelta(hours=1, minutes=30))
            wait_for(lambda: w.inbox.to(member_addr) and w.inbox.to(guest_addr), 60, 0.2, "the hour-1 reminders")

            # the guest follows the link in the email — a tracked click (a marketing email), then the
            # cart recovery link — back to the store's cart, with the items
            link = re.search(r"(http://\S+/t/c/\S+)", text_part(w.inbox.to(guest_addr)[0]))
            assert link, text_part(w.inbox.to(guest_addr)[0])
            clicked = httpx.get(link.group(1), follow_redirects=False, timeout=10)
            assert clicked.status_code == 302 and "/recover/cart/" in clicked.headers["location"], clicked.text
            assert w.query("SELECT 1 FROM engagements WHERE store_id = :s AND kind = 'click' AND customer_key = :k",
                           k=guest_key)
            r = httpx.get(clicked.headers["location"], follow_redirects=False, timeout=10)
            assert r.status_code == 302
            target = urlsplit(r.headers["location"])
            assert target.netloc == urlsplit(w.sim.url).netloc and target.path == "/cart/"
            params = parse_qs(target.query)
            items = parse_items_param(params["wooflow_items"][0])
            assert sorted((i["product_id"], i["quantity"]) for i in items) == sorted([(mug.id, 2), (tea.id, 1)])
            # ... and checks out with the restored cart (the store keeps the cart token in the order meta)
            order_g = w.sim.store.create_order(
                line_items=[{"product_id": i["product_id"], "quantity": i["quantity"]} for i in items],
                billing={"email": guest_addr, "first_name": "Gosia"}, status="processing",
                meta_data=[{"key": "_wooflow_cart", "value": params["wooflow_cart"][0]}])
            wait_for(lambda: w.query("SELECT * FROM attributions WHERE store_id = :s AND order_id = :o", o=order_g.id),
                     60, 0.2, "the guest's order attributed to the workflow")
            att = w.query("SELECT * FROM attributions WHERE store_id = :s AND order_id = :o", o=order_g.id)[0]
            assert (att["rule_id"], att["kind"], att["cart_session"]) == (rule_id, "cart_recovery", sess_g)
            assert Decimal(att["revenue"]) == Decimal(str(order_g.total))
            assert w.query("SELECT status FROM carts WHERE store_id = :s AND session_id = :g",
                           g=sess_g)[0]["status"] == "recovered"

            w.at(timedelta(hours=25))
            wait_for(lambda: len(w.inbox.to(member_addr)) == 2, 60, 0.2, "the member's hour-24 reminder")
            wait_for(lambda: w.logs(guest_key, "exited"), 60, 0.2, "the guest's sequence exited")
            w.settle()
            assert [st["status"] for st in w.steps(guest_key)] == ["emitted"] + ["exited"] * 4
            assert len(w.inbox.to(guest_addr)) == 1  # recovered: no more reminders
            assert w.logs(guest_key, "exited")[0]["message"].startswith("cart recovered (order")

            # the member orders: the hour-48 steps must not run
            order_m = w.sim.store.create_order(line_items=[{"product_id": mug.id, "quantity": 1}],
                                               customer_id=member.id, status="processing",
                                               billing={"email": member_addr, "first_name": "Jan"})
            wait_for(lambda: w.query("SELECT 1 FROM customer_calendar WHERE store_id = :s AND last_order_id = :o",
                                     o=order_m.id), 60, 0.2, "the member's order seen by the scheduler")
            w.at(timedelta(hours=50))
            wait_for(lambda: len(w.logs(member_key, "exited")) == 3, 60, 0.2, "the member's remaining steps exited")
            exited = w.logs(member_key, "exited")
            assert [e["step"] for e in exited] == [2, 3, 4]
            assert exited[0]["message"] == f"cart recovered (order {order_m.id})"
            assert [s["status"] for s in w.steps(member_key)] == ["emitted", "emitted", "exited", "exited", "exited"]
            w.at(timedelta(days=8))
            w.settle()
            assert len(w.inbox.to(member_addr)) == 2 and len(w.inbox.to(guest_addr)) == 1
            subjects = w.inbox.subjects(member_addr)
            assert "you left something in your cart" in subjects[0] and "stock is limited" in subjects[1]
        except AssertionError:
            print(w.role_logs())
            raise
