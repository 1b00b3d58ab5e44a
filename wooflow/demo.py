"""`wooflow demo`: the whole pipeline against a simulated store, with a live summary.

Starts the local Kafka + PostgreSQL (unless KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL point
at existing ones), migrates, creates topics, registers a simulated WooCommerce store
whose webhooks point at the bridge, installs demo rules and the welcome-series template,
runs every role as its own process, and lets the store's traffic generator place orders.

Marketing email: the demo store's policy is opt-in with a checkout checkbox
(`_wooflow_marketing_consent` = `yes` in the order meta) that about half of the shoppers
tick, so the summary shows welcome emails sent and skipped for want of consent. They go
to a local SMTP server the demo runs with aiosmtpd — a development extra (`./run demo`
installs it); without it the demo runs without the email workflow.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from sqlalchemy import Connection, Engine, func, select, text

from wooflow.settings import Settings, get_settings

console = Console()

DEMO_STORE = "demo"
DEMO_CONSENT = {"policy": "opt_in", "meta_key": "_wooflow_marketing_consent", "meta_yes": ["yes"]}
DEMO_CONSENT_SHARE = 0.5  # of the shoppers tick the checkout's marketing box
DEMO_RULES = [
    {"name": "Thank big spenders", "trigger": "new_order", "priority": 1,
     "conditions": {"match": "all", "conditions": [{"field": "order_total", "operator": "gt", "value": "100"}]},
     "actions": [{"type": "add_order_note",
                  "params": {"note": "wooflow: high-value order {{ order.number }} ({{ order.total }} "
                                     "{{ order.currency }}) - send the VIP thank-you card."}}]},
    {"name": "Outside the EU: check customs", "trigger": "new_order", "priority": 5,
     # every country outside the EU, Norway, Iceland and Liechtenstein included (their geo_scope is eea)
     "conditions": {"match": "all", "conditions": [{"field": "geo_regions", "operator": "contains",
                                                    "value": "non_eu"}]},
     "actions": [{"type": "add_order_note",
                  "params": {"note": "wooflow: ships to {{ order.shipping.country or order.billing.country }}"
                                     " (outside the EU) - attach customs declaration."}}]},
    {"name": "Order completed: thank the customer", "trigger": "order_status_changed", "priority": 10,
     "trigger_options": {"to": "completed"},
     "actions": [{"type": "add_order_note", "params": {
         "note": "Thank you for shopping with us, {{ order.billing.first_name or 'friend' }}!",
         "customer_note": True}}]},
]


@dataclass
class Roles:
    env: dict[str, str]
    log_dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *args: str) -> None:
        with open(self.log_dir / f"{name}.log", "ab") as log:  # the child keeps its own handle
            self.procs[name] = subprocess.Popen([sys.executable, "-m", "wooflow.cli", *args], env=self.env,
                                                stdout=log, stderr=subprocess.STDOUT)

    def dead(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is not None]

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for p in self.procs.values():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()


class Inbox:
    """The demo's SMTP server's mailbox (an aiosmtpd handler): counts what arrives."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received = 0

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:  # aiosmtpd hook
        with self.lock:
            self.received += 1
        return "250 OK"


def _smtp_server(stack: ExitStack) -> tuple[Inbox, int] | None:
    """A local SMTP server on a free port, or None without aiosmtpd (a development extra:
    production sends through the store's own mail server and never needs one)."""
    try:
        from aiosmtpd.controller import Controller
    except ImportError:
        console.print("[yellow]aiosmtpd is not installed (pip install 'wooflow[dev]'): no email workflow in "
                      "this demo[/]")
        return None
    inbox, port = Inbox(), _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    stack.callback(controller.stop)
    return inbox, port


@dataclass(frozen=True)
class EmailCounts:
    """Email commands by outcome (each command once, whatever its retries)."""

    sent: int = 0
    no_consent: int = 0
    other: int = 0  # failed, skipped for another reason, still retrying


def email_counts(conn: Connection, store_id: str, since: float) -> EmailCounts:
    rows = conn.execute(text("""
        SELECT count(*) FILTER (WHERE status = 'succeeded') AS sent,
               count(*) FILTER (WHERE status = 'skipped' AND reason = 'no_consent') AS no_consent,
               count(*) FILTER (WHERE status <> 'succeeded' AND NOT (status = 'skipped' AND reason = 'no_consent'))
        FROM (SELECT DISTINCT ON (idempotency_key) status, details->>'reason' AS reason
              FROM execution_logs
              WHERE store_id = :store AND action_type = 'send_email' AND NOT dry_run
                AND executed_at >= to_timestamp(:since)
              ORDER BY idempotency_key, executed_at DESC) last
    """), {"store": store_id, "since": since}).one()
    return EmailCounts(int(rows[0]), int(rows[1]), int(rows[2]))


def _reset_store(engine: Engine) -> None:
    """Forget the previous run's demo store: the simulator starts afresh (same order ids,
    same shoppers), and remembered orders would fire no `new_order` or `first_purchase`."""
    from wooflow.db.tables import metadata

    with engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            if "store_id" in table.c and table.name != "api_tokens":
                conn.execute(table.delete().where(table.c.store_id == DEMO_STORE))


def _services(s: Settings, stack: ExitStack) -> Settings:
    env_kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or os.environ.get("WOOFLOW_KAFKA_BOOTSTRAP_SERVERS")
    env_db = os.environ.get("DATABASE_URL") or os.environ.get("WOOFLOW_DATABASE_URL")
    if env_kafka and env_db:
        console.print(f"using Kafka at [bold]{env_kafka}[/] and the database from DATABASE_URL")
        return s
    from wooflow.devinfra.launcher import up

    console.print("starting local Kafka and PostgreSQL ([dim]wooflow dev up[/])...")
    services = up(s.state_dir / "dev", s.cache_dir, kafka=not env_kafka, postgres=not env_db,
                  progress=lambda m: console.print(f"  {m}", style="dim"))
    return s.model_copy(update={"kafka_bootstrap_servers": env_kafka or services.kafka_bootstrap_servers,
                                "database_url": env_db or services.database_url})


def _install_rules(engine: Engine, *, email: bool) -> None:
    from sqlalchemy import delete, insert

    from wooflow.consumer.model import RuleSpec
    from wooflow.db.tables import rules
    from wooflow.scheduler.templates import install

    with engine.begin() as conn:
        conn.execute(delete(rules).where(rules.c.store_id == DEMO_STORE))
        for r in DEMO_RULES:
            spec = RuleSpec.model_validate(r)
            conn.execute(insert(rules).values(store_id=DEMO_STORE, **spec.model_dump(mode="json")))
    if email:
        install(engine, DEMO_STORE, "welcome_series", actor="demo")  # marketing email after a first order


def _env(s: Settings, bridge_port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"WOOFLOW_KAFKA_BOOTSTRAP_SERVERS": s.kafka_bootstrap_servers, "WOOFLOW_DATABASE_URL": s.database_url,
                "WOOFLOW_TOPIC_PREFIX": s.topic_prefix, "WOOFLOW_BRIDGE_PORT": str(bridge_port),
                "WOOFLOW_LOG_LEVEL": "WARNING"})
    return env


def _wait_http(url: str, timeout: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


class Summary:
    def __init__(self, s: Settings, engine: Engine, started: float, inbox: Inbox | None = None) -> None:
        self.s, self.engine, self.started, self.inbox = s, engine, started, inbox
        self.baseline: dict[str, int] | None = None

    def _topic_totals(self) -> dict[str, int]:
        from confluent_kafka import TopicPartition

        from wooflow.kafka import topics
        from wooflow.kafka.consumer import make_reader

        c = make_reader(self.s, "wooflow-demo-summary")
        try:
            out = {}
            for base in (*topics.EVENT_TOPICS, topics.COMMANDS, topics.LOGS, topics.DLQ):
                name = self.s.topic(base)
                md = c.list_topics(name, timeout=5).topics[name]
                out[base] = sum(c.get_watermark_offsets(TopicPartition(name, p), timeout=5)[1] for p in md.partitions)
            return out
        finally:
            c.close()

    def lag(self) -> int:
        from wooflow.kafka import topics
        from wooflow.kafka.groups import lag

        try:
            parts = lag(self.s, self.s.rules_group, [self.s.topic(t) for t in topics.EVENT_TOPICS], timeout=5)
        except Exception:  # the group may not have committed yet: show "-1", keep the demo going
            return -1
        return sum(p.lag for p in parts)

    def render(self, orders_placed: int) -> Group:
        from wooflow.db.tables import execution_logs

        totals = self._topic_totals()
        if self.baseline is None:
            self.baseline = totals
        delta = {k: v - self.baseline.get(k, 0) for k, v in totals.items()}
        with self.engine.connect() as conn:
            by_status: dict[str, int] = dict(conn.execute(
                select(execution_logs.c.status, func.count())
                .where(execution_logs.c.store_id == DEMO_STORE,
                       execution_logs.c.executed_at >= func.to_timestamp(self.started))
                .group_by(execution_logs.c.status)).all())
            recent = conn.execute(
                select(execution_logs.c.executed_at, execution_logs.c.action_type, execution_logs.c.status,
                       execution_logs.c.message).where(execution_logs.c.store_id == DEMO_STORE)
                .order_by(execution_logs.c.executed_at.desc()).limit(6)).all()
            emails = email_counts(conn, DEMO_STORE, self.started)
        stats = Table.grid(padding=(0, 3))
        stats.add_column(style="bold")
        stats.add_column(justify="right")
        stats.add_row("running for", f"{time.time() - self.started:.0f} s")
        stats.add_row("orders placed in the store", str(orders_placed))
        stats.add_row("events in (woo.orders / customers / products)",
                      f"{delta['woo.orders']} / {delta['woo.customers']} / {delta['woo.products']}")
        stats.add_row("rules matched (commands emitted)", str(delta["automation.commands"]))
        stats.add_row("actions executed", " ".join(f"{k}={v}" for k, v in sorted(by_status.items())) or "0")
        if self.inbox is not None:
            stats.add_row("marketing emails sent / skipped (no consent)", f"{emails.sent} / {emails.no_consent}")
            stats.add_row("emails received by the local SMTP server", str(self.inbox.received))
        stats.add_row("rule consumer lag", str(self.lag()))
        stats.add_row("dead letters", str(delta["automation.dlq"]))
        table = Table("when", "action", "status", "message", title="latest actions", expand=True)
        for when, action, status, msg in recent:
            table.add_row(when.strftime("%H:%M:%S"), action, status, msg[:90])
        return Group(Panel(stats, title="wooflow demo — simulated store → Kafka → rules → workers → PostgreSQL"), table)


def run_demo(*, duration: float | None, orders_per_second: float, seed: int) -> int:
    from wooflow.api.auth import create_token
    from wooflow.db.engine import get_engine
    from wooflow.db.migrate import upgrade
    from wooflow.devinfra.kafka import LauncherError
    from wooflow.kafka.admin import create_topics
    from wooflow.simulator import traffic
    from wooflow.simulator.server import SimulatorServer
    from wooflow.stores import Store, upsert_store

    s = get_settings()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with ExitStack() as stack:
        try:
            s = _services(s, stack)
        except LauncherError as exc:
            console.print(f"[red]error:[/] {exc}")
            return 1
        console.print("migrating the database and creating topics...")
        upgrade(s.database_url)
        create_topics(s)
        engine = get_engine(s.database_url)

        log_dir = s.state_dir / "demo-logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        bridge_port = _free_port()
        bridge_url = f"http://127.0.0.1:{bridge_port}"
        roles = Roles(_env(s, bridge_port), log_dir)
        stack.callback(roles.stop)
        api_port = _free_port()
        console_url = f"http://127.0.0.1:{api_port}/"
        console.print(f"starting roles (logs in {log_dir}): bridge, rules, workers, sink, scheduler, api...")
        roles.start("bridge", "bridge", "--host", "127.0.0.1", "--port", str(bridge_port))
        for role in ("rules", "workers", "sink", "scheduler"):
            roles.start(role, role)
        roles.start("api", "api", "--host", "127.0.0.1", "--port", str(api_port))
        _wait_http(f"{bridge_url}/readyz")

        sim = stack.enter_context(SimulatorServer(seed=seed, consumer_key="ck_demo", consumer_secret="cs_demo"))
        store = sim.store
        secret = store.generate_password()
        smtp = _smtp_server(stack)
        settings: dict[str, object] = {"consent": DEMO_CONSENT}
        if smtp is not None:
            settings["smtp"] = {"host": "127.0.0.1", "port": smtp[1], "from_email": "shop@demo.example"}
        _reset_store(engine)
        upsert_store(engine, Store(id=DEMO_STORE, name="Demo store", url=sim.url, webhook_secret=secret,
                                   consumer_key="ck_demo", consumer_secret="cs_demo", timezone=store.timezone,
                                   currency=store.currency, settings=settings))
        _install_rules(engine, email=smtp is not None)
        hook_url = f"{bridge_url}/webhooks/woocommerce/{DEMO_STORE}"
        for topic in ("order.created", "order.updated", "order.deleted", "customer.created", "customer.updated",
                      "product.created", "product.updated"):
            store.create_webhook(topic, hook_url, secret=secret, name=f"wooflow {topic}")
        console.print(f"simulated store at {sim.url} delivers webhooks to {hook_url}")
        _wait_http(f"{console_url}readyz")
        # the token is printed apart from the URL: a token in a URL ends up in histories and logs
        console.print(f"web console at [bold]{console_url}[/] — sign in with the demo store's token "
                      f"[bold]{create_token(engine, DEMO_STORE, 'demo console')}[/]")

        box = traffic.ConsentBox(str(DEMO_CONSENT["meta_key"]), "yes", DEMO_CONSENT_SHARE)
        shopper = threading.Thread(target=traffic.generate, args=(store, None, orders_per_second),
                                   kwargs={"seed": seed, "stop_event": stop, "consent": box}, name="traffic",
                                   daemon=True)
        shopper.start()
        started = time.time()
        summary = Summary(s, engine, started, smtp[0] if smtp else None)
        exit_code = 0
        try:
            with Live(summary.render(0), console=console, refresh_per_second=2) as live:
                while not stop.is_set():
                    if duration is not None and time.time() - started >= duration:
                        break
                    dead = roles.dead()
                    if dead:
                        console.print(f"[red]role(s) exited: {', '.join(dead)}[/] — see {log_dir}")
                        exit_code = 1
                        break
                    live.update(summary.render(len(store.orders)))
                    stop.wait(1.0)
        except KeyboardInterrupt:
            pass
        stop.set()
        shopper.join(10)
        console.print(summary.render(len(store.orders)))
        console.print("stopping roles...")
        return exit_code
    return 0


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    raise SystemExit(run_demo(duration=30, orders_per_second=2, seed=42))
