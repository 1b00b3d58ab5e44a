"""One chaos run, from an empty directory to its JSON report.

Set-up → traffic with faults (progress every few seconds, one line per fault) → drain →
checks → report. Everything the run starts — broker, PostgreSQL, role processes, the
store, the SMTP server, the webhook receiver — it stops again, on failure too; the run
directory keeps the role logs, `state.json` (metrics endpoints of every role instance,
for a Prometheus: `prometheus-targets.json`), and `report.json`.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import statistics
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from wooflow.clock import FileClock
from wooflow.ops.chaos import plan as P
from wooflow.ops.chaos import verify as V
from wooflow.ops.chaos.faults import Injector
from wooflow.ops.chaos.infra import Infra
from wooflow.ops.chaos.roles import Roles, free_port
from wooflow.ops.chaos.traffic import Ledger, NotedStore, Traffic, rules
from wooflow.ops.chaos.world import Mailbox, Receiver
from wooflow.settings import Settings

Say = Callable[[str], None]
# librdkafka's complaints while the run itself stops the broker are expected: not printed.
QUIET = logging.getLogger("wooflow.chaos.kafka-clients")
QUIET.addHandler(logging.NullHandler())
QUIET.propagate = False
STORE_ID = "chaos"
BASELINE = {"bridge": 1, "rules": 2, "workers": 2, "sink": 1, "scheduler": 1, "poller": 1}
WEBHOOK_TOPICS = ("order.created", "order.updated", "customer.created", "customer.updated", "product.updated")
POLL_INTERVAL_S = 5.0
EXTENSION_S = 180.0  # how much longer traffic may run for the plan's faults to be carried out
SCAN_INTERVAL_S = 3.0


@dataclass
class Options:
    profile: P.Profile
    seed: int
    run_dir: Path
    cache_dir: Path
    rate: float | None = None  # events/s (default: the profile's)
    # The launcher's fast mode turns synchronous commits off: an immediate shutdown would then
    # lose transactions PostgreSQL had acknowledged, which no client can survive.
    durable_postgres: bool = True
    drain_timeout_s: float | None = None  # None: the profile's


@dataclass
class Secrets:
    """Distinctive values that must never appear in a role's log."""

    webhook_secret: str = field(default_factory=lambda: "whsec&" + secrets.token_urlsafe(24))
    consumer_key: str = field(default_factory=lambda: "ck_" + secrets.token_hex(20))
    consumer_secret: str = field(default_factory=lambda: "cs_" + secrets.token_hex(20))
    smtp_password: str = field(default_factory=lambda: "smtp-" + secrets.token_urlsafe(18))
    signing_secret: str = field(default_factory=lambda: "sign-" + secrets.token_urlsafe(18))
    admin_token: str = field(default_factory=lambda: "wfat_" + secrets.token_urlsafe(24))


def settings_for(kafka: str, database: str, clock: Path) -> Settings:
    return Settings(kafka_bootstrap_servers=kafka, database_url=database, topic_prefix="", clock=f"file:{clock}",
                    rules_group="wooflow-rules", workers_group="wooflow-workers", sink_group="wooflow-sink",
                    scheduler_group="wooflow-scheduler", topic_partitions=12)


def role_env(s: Settings, sec: Secrets) -> dict[str, str]:
    """The roles' environment: nothing inherited that could point them elsewhere."""
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith("WOOFLOW_") and k not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL",
                                                          "SCHEMA_REGISTRY_URL")}
    return keep | {
        "WOOFLOW_KAFKA_BOOTSTRAP_SERVERS": s.kafka_bootstrap_servers, "WOOFLOW_DATABASE_URL": s.database_url,
        "WOOFLOW_TOPIC_PREFIX": s.topic_prefix, "WOOFLOW_TOPIC_PARTITIONS": str(s.topic_partitions),
        "WOOFLOW_CLOCK": s.clock, "WOOFLOW_LOG_LEVEL": "INFO",
        "WOOFLOW_POLL_INTERVAL_S": str(POLL_INTERVAL_S), "WOOFLOW_SCHEDULER_SCAN_INTERVAL_S": str(SCAN_INTERVAL_S),
        "WOOFLOW_LAG_INTERVAL_S": "5", "WOOFLOW_WEBHOOK_ALLOWLIST": "127.0.0.1",
        "WOOFLOW_ADMIN_TOKEN": sec.admin_token,
    }


class Ticker:
    """Simulated time that follows the real clock until the drain moves it on."""

    def __init__(self, clock: FileClock) -> None:
        self.clock, self.stop = clock, threading.Event()
        clock.set(datetime.now(timezone.utc))
        self.thread = threading.Thread(target=self._run, name="chaos-clock", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.5):
            self.clock.set(datetime.now(timezone.utc))

    def halt(self) -> None:
        self.stop.set()
        self.thread.join(5)


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _events_in(s: Settings) -> dict[str, int]:
    from confluent_kafka import TopicPartition

    from wooflow.kafka import topics
    from wooflow.kafka.consumer import make_reader

    reader = make_reader(s, "wooflow-chaos-counter", logger=QUIET)
    try:
        out = {}
        for base in (*topics.EVENT_TOPICS, topics.COMMANDS, topics.LOGS, topics.DLQ):
            name = s.topic(base)
            parts = reader.list_topics(name, timeout=10).topics[name].partitions
            out[base] = sum(reader.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1] for p in parts)
        return out
    finally:
        reader.close()


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1], 2)


class Run:
    def __init__(self, opts: Options, say: Say) -> None:
        self.opts, self.say = opts, say
        self.plan = P.make_plan(opts.profile, opts.seed)
        self.rate = opts.rate or opts.profile.rate
        self.sec = Secrets()
        self.ledger = Ledger()
        self.failures: list[str] = []
        self.t_start = time.monotonic()

    # --- set-up ---------------------------------------------------------------------------
    def _services(self, stack: ExitStack) -> Settings:
        from wooflow.db.migrate import upgrade
        from wooflow.kafka.admin import create_topics

        self.infra = Infra(self.opts.run_dir / "infra", self.opts.cache_dir,
                           durable_postgres=self.opts.durable_postgres)
        stack.callback(self.infra.down)
        ep = self.infra.up(say=lambda m: self.say(f"setup   {m}"))
        s = settings_for(ep.kafka_bootstrap_servers, ep.database_url, self.opts.run_dir / "clock")
        upgrade(s.database_url)
        create_topics(s)
        return s

    def _world(self, stack: ExitStack, s: Settings) -> None:
        from wooflow.simulator.server import SimulatorServer

        self.mailbox = Mailbox("chaos-mailer", self.sec.smtp_password).start()
        stack.callback(self.mailbox.stop)
        self.receiver = Receiver(self.sec.signing_secret).start()
        stack.callback(self.receiver.stop)
        self.store = NotedStore(consumer_key=self.sec.consumer_key, consumer_secret=self.sec.consumer_secret,
                                seed=self.opts.seed)
        self.sim = stack.enter_context(SimulatorServer(self.store, delivery_concurrency=4))
        self.bridge_port = free_port()
        self.traffic = Traffic(self.store, self.ledger, bridge_url=f"http://127.0.0.1:{self.bridge_port}",
                               store_id=STORE_ID, public_key="pk_" + secrets.token_hex(8), rate=self.rate,
                               seed=self.opts.seed)
        stack.callback(self.traffic.close)
        self.traffic.prepare()
        self._register(s)

    def _register(self, s: Settings) -> None:
        from sqlalchemy import insert

        from wooflow.consumer.model import RuleSpec
        from wooflow.db.engine import get_engine
        from wooflow.db.tables import rules as rules_table
        from wooflow.scheduler import triggers as _scheduled  # noqa: F401 - abandoned_cart is one of them
        from wooflow.stores import Store, upsert_store

        self.engine = get_engine(s.database_url)
        smtp = {"host": "127.0.0.1", "port": self.mailbox.port, "username": self.mailbox.username,
                "password": self.sec.smtp_password, "security": "none", "from_email": "shop@chaos.example"}
        upsert_store(self.engine, Store(
            id=STORE_ID, url=self.sim.url, webhook_secret=self.sec.webhook_secret,
            consumer_key=self.sec.consumer_key, consumer_secret=self.sec.consumer_secret,
            timezone=self.store.timezone, currency=self.store.currency, public_key=self.traffic.public_key,
            name="Chaos store", settings={"smtp": smtp, "consent": {"policy": "opt_out"},
                                          "abandoned_cart_after": "1m",
                                          "webhook_signing_secret": self.sec.signing_secret}))
        with self.engine.begin() as conn:
            for rule in rules(self.receiver.url):
                spec = RuleSpec.model_validate(rule)
                conn.execute(insert(rules_table).values(store_id=STORE_ID, **spec.model_dump(mode="json")))

    def _roles(self, stack: ExitStack, s: Settings) -> None:
        self.roles = Roles(self.opts.run_dir, role_env(s, self.sec), self.bridge_port)
        self.roles.about = {"run_dir": str(self.opts.run_dir), "seed": self.opts.seed,
                            "kafka_bootstrap_servers": s.kafka_bootstrap_servers, "database_url": s.database_url,
                            "store_id": STORE_ID, "store_url": self.sim.url}
        stack.callback(self.roles.stop_all)
        for role, n in BASELINE.items():
            for _ in range(n):
                self.roles.add(role)
        self.say(f"setup   roles started: {', '.join(i.name for i in self.roles.running())}; "
                 f"metrics endpoints in {self.opts.run_dir / 'state.json'}")
        for inst in self.roles.running():
            V.wait(partial(_ready, f"http://127.0.0.1:{inst.port}/readyz"), 120, f"{inst.name} /readyz")
        hook = f"http://127.0.0.1:{self.bridge_port}/webhooks/woocommerce/{STORE_ID}"
        for topic in WEBHOOK_TOPICS:
            self.store.create_webhook(topic, hook, secret=self.sec.webhook_secret, name=f"wooflow {topic}")
        since = datetime.now(timezone.utc)
        V.wait(lambda: V.polled_since(self.engine, STORE_ID, since), 60, "the poller's first pass")

    # --- the run ------------------------------------------------------------------------------
    def execute(self) -> dict[str, Any]:
        p = self.opts.profile
        self.opts.run_dir.mkdir(parents=True, exist_ok=True)
        self.say(f"chaos   profile {p.name}, seed {self.opts.seed}, {p.faults} faults over {p.traffic_s:.0f}s, "
                 f"{self.rate:.0f} events/s, run dir {self.opts.run_dir}")
        for f in self.plan.faults:
            self.say(f"plan    {f.at:7.1f}s  {f.describe()}")
        with ExitStack() as stack:
            s = self._services(stack)
            self.settings = s
            self.clock = FileClock(self.opts.run_dir / "clock")
            ticker = Ticker(self.clock)
            stack.callback(ticker.halt)
            self._world(stack, s)
            self._roles(stack, s)
            setup_s = time.monotonic() - self.t_start
            self.say(f"setup   done in {setup_s:.0f}s; traffic starts")
            self._chaos(stack, s)
            ticker.halt()
            return self._finish(s, setup_s)

    def _chaos(self, stack: ExitStack, s: Settings) -> None:
        stop = threading.Event()
        stack.callback(stop.set)
        self.injector = Injector(self.plan, settings=s, roles=self.roles, baseline=BASELINE, infra=self.infra,
                                 store=self.store, traffic=self.traffic, store_id=STORE_ID, say=self.say,
                                 quiet=QUIET)
        traffic = threading.Thread(target=self.traffic.run, args=(stop,), name="chaos-traffic", daemon=True)
        helpers = threading.Thread(target=self._housekeeping, args=(stop,), name="chaos-housekeeping", daemon=True)
        t0 = time.monotonic()
        self.roles.started = t0  # exits are reported in seconds since traffic started, like faults
        traffic.start()
        helpers.start()
        self.injector.start(t0, stop)
        while not self._traffic_over(t0):
            time.sleep(5.0)
            self._progress(s, t0)
        self.traffic_s = time.monotonic() - t0
        stop.set()  # the lanes watch it too: a fault still waiting for its moment is not started
        traffic.join(120)  # a post in flight on a loaded machine: the client closes after it
        self.say(f"traffic stopped after {self.traffic_s:.0f}s: {asdict(self.traffic.counts)}")
        if not self.injector.join(self.opts.profile.recover_timeout_s + 120):
            self.failures.append("fault lanes still running after traffic stopped")
        self._housekeeping_stop = True
        helpers.join(10)
        self._restore()

    _housekeeping_stop = False

    def _traffic_over(self, t0: float) -> bool:
        """The planned length has passed and the last fault was lifted `quiet_s` ago; on a box
        too slow for the plan, traffic runs on (at most `EXTENSION_S` longer) until every
        planned fault was carried out."""
        p, now = self.opts.profile, time.monotonic()
        if now - t0 < p.traffic_s:
            return False
        if now - t0 >= p.traffic_s + EXTENSION_S:
            return True
        return self.injector.lanes_done() and now - self.injector.last_lift >= p.quiet_s

    def _housekeeping(self, stop: threading.Event) -> None:
        """Supervise the roles (restart what exits on its own) and resend refused storefront batches."""
        while not self._housekeeping_stop:
            for ex in self.roles.supervise():
                self.say(f"exit    {ex.at:7.1f}s  {ex.instance} exited on its own (code {ex.code}); restarted")
            self.traffic.retry_refused()
            time.sleep(0.5)

    def _progress(self, s: Settings, t0: float) -> None:
        try:
            ev = _events_in(s)
            n = sum(ev[k] for k in ev if k.startswith("woo."))
            events = f"{n} events ({n / max(1.0, time.monotonic() - t0):.0f}/s)"
        except Exception as exc:  # the broker may be down right now
            events = f"events: ({type(exc).__name__})"
        done = len(self.injector.done)
        self.say(f"progress {time.monotonic() - t0:6.0f}s  {events}  notes {len(self.store.note_seen)}  "
                 f"emails {self.mailbox.got.count()}  webhooks {self.receiver.got.count()}  "
                 f"faults {done}/{self.plan.profile.faults}  active: {', '.join(sorted(self.injector.active)) or '-'}")

    def _restore(self) -> None:
        """Whatever a fault left behind (a failed restart) is put right before the drain."""
        self.store.rest_fault = None
        if self.infra.broker_pid() is None:
            self.failures.append("the broker was down after the faults")
            self.infra.start_broker()
        try:
            V.wait(lambda: _pg_answers(self.settings), 10, "PostgreSQL")
        except V.DrainTimeout:
            self.failures.append("PostgreSQL was down after the faults")
            self.infra.start_postgres()
        for role, n in BASELINE.items():
            if len(self.roles.running(role)) != n:
                self.roles.scale(role, n)
        for inst in self.roles.running():
            self.roles.restart(inst)
        self.roles.supervise()

    # --- the end ----------------------------------------------------------------------------------
    def _finish(self, s: Settings, setup_s: float) -> dict[str, Any]:
        drain = V.Drain(s, self.engine, STORE_ID, self.clock, self.say)
        t = time.monotonic()
        try:
            drain.run(self.store, self.traffic, self.opts.drain_timeout_s or self.plan.profile.drain_timeout_s)
        except V.DrainTimeout as exc:
            self.failures.append(f"drain: {exc} (busy: {drain.last_state})")
        drain_s = time.monotonic() - t
        self.say("verify  comparing the ledger with the store, the SMTP server and the webhook receiver")
        effects = V.compare(self.ledger, self.store, self.mailbox, self.receiver)
        report = self._report(s, effects, setup_s, drain_s, drain.timeline)
        self.opts.run_dir.joinpath("report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        return report

    def _report(self, s: Settings, effects: V.Effects, setup_s: float, drain_s: float,
                timeline: dict[str, float]) -> dict[str, Any]:
        checks: dict[str, Any] = {}
        problems = list(self.failures)
        try:
            events = _events_in(s)
        except Exception as exc:
            events = {}
            problems.append(f"could not count events: {exc}")
        log_problems = V.execution_log_problems(self.engine, STORE_ID, self.injector.poisoned)
        checks["execution_logs"] = log_problems or "one final row per idempotency key"
        problems += log_problems
        dead = V.dead_letters(s, self.injector.poisoned)
        checks["dead_letters"] = dead.problems or f"{dead.total}, all poison ({len(dead.poison)} messages)"
        problems += dead.problems
        state = {**V.backlog(self.engine, STORE_ID, self.clock.now()), **V.lags(s)}
        checks["backlog_and_lag"] = state
        problems += [f"{k} is {v} at the end" for k, v in state.items() if v]
        leaks = V.secrets_in_logs(self.roles.log_dir, asdict(self.sec))
        checks["secrets_in_logs"] = leaks or "none"
        problems += [f"secret {k} appears in {v}" for k, v in leaks.items()]
        forged = dict(self.injector.forged)
        checks["forged_webhooks"] = forged
        problems += [f"{n} forged webhooks answered {status}" for status, n in forged.items()
                     if status not in (0, 401, 503)]
        per_kind = self.injector.summary()
        for kind, n in self.plan.profile.counts.items():
            if per_kind.get(kind, 0) < n:
                problems.append(f"only {per_kind.get(kind, 0)} of {n} planned {kind} faults were carried out")
        failed = [f"{d.kind} at {d.started_at}s: {d.error}" for d in self.injector.done if d.error]
        problems += failed
        recov = [d.recovered_s for d in self.injector.done if d.recovered_s is not None]
        unrecovered = [d for d in self.injector.done if d.recovered_s is None]
        problems += [f"no recovery within {self.plan.profile.recover_timeout_s:.0f}s after {d.kind} at "
                     f"{d.lifted_at}s" for d in unrecovered]
        if effects.lost:
            problems.append(f"{effects.lost} effects lost")
        if effects.duplicated:
            problems.append(f"{effects.duplicated} effects duplicated")
        if effects.unexpected:
            problems.append(f"{effects.unexpected} unexpected effects")
        if effects.repeated_twice:
            problems.append(f"{effects.repeated_twice} effects repeated more than once")
        problems += [f"{k} {w}" for k, by in effects.by_kind.items() for w in by if w in ("unsigned",
                                                                                          "code not in the store")]
        woo = sum(v for k, v in events.items() if k.startswith("woo."))
        return {
            "passed": not problems,
            "problems": problems,
            "profile": self.plan.profile.name, "seed": self.opts.seed,
            "command": f"wooflow chaos --profile {self.plan.profile.name} --seed {self.opts.seed}"
                       + (f" --rate {self.rate:g}" if self.opts.rate else ""),
            "wall_s": round(time.monotonic() - self.t_start, 1), "setup_s": round(setup_s, 1),
            "traffic_s": round(self.traffic_s, 1), "drain_s": round(drain_s, 1), "drain_steps": timeline,
            "rounds": len(self.injector.done),
            "events": {"total": woo, "per_s": round(woo / max(1.0, self.traffic_s), 1), "topics": events,
                       "target_per_s": self.rate, "traffic": asdict(self.traffic.counts),
                       "webhook_deliveries": {"ok": self.store.deliveries_ok, "failed": self.store.deliveries_failed},
                       "poison": len(self.injector.poisoned), "forged_webhooks": sum(forged.values())},
            "effects": {"expected": effects.expected, "optional": effects.optional, "observed": effects.observed,
                        "by_kind": effects.by_kind},
            "lost": effects.lost, "duplicated": effects.duplicated, "repeated": effects.repeated,
            "unexpected": effects.unexpected, "examples": effects.examples,
            "faults": per_kind,
            "fault_log": [asdict(d) for d in self.injector.done],
            "unplanned_exits": [asdict(x) for x in self.roles.exits],
            "recovery_s": {"p50": _percentile(recov, 50), "p99": _percentile(recov, 99),
                           "max": max(recov) if recov else None, "measured": len(recov),
                           "p50_by_kind": {k: _percentile([d.recovered_s for d in self.injector.done
                                                           if d.kind == k and d.recovered_s is not None], 50)
                                           for k in P.KINDS}},
            "checks": checks,
            "dead_letters": {"total": dead.total, "poison": dead.poison, "other": dict(dead.other),
                             "examples": dead.examples},
            "run_dir": str(self.opts.run_dir),
        }


def _pg_answers(s: Settings) -> bool:
    from sqlalchemy import text

    from wooflow.db.engine import get_engine

    try:
        with get_engine(s.database_url).connect() as conn:
            return conn.execute(text("SELECT 1")).scalar() == 1
    except Exception:
        return False


def run(opts: Options, say: Say = print) -> dict[str, Any]:
    return Run(opts, say).execute()
