"""The alert drill: every alert of deploy/prometheus/rules provoked for real and watched in a
real Prometheus going pending → firing → resolved, then every dashboard query checked.

The pipeline runs as separate processes (bridge, rules, workers, sink, scheduler, API) on
a Kafka broker of the drill's own (launched with wooflow/devinfra, so it can be stopped)
and the given PostgreSQL, against the WooCommerce simulator; background traffic places an
order every 1.5 s. Prometheus scrapes every role each second and evaluates the shipped
rules with their durations scaled (`bench/alerts/rules.py`: `for` × 1/30, windows × 1/15;
the expressions are otherwise the shipped ones, which the drill checks).

The faults, in order (times are from a run on a 2-core machine shared with other work):
1. **Broker outage** (~2.5 min): the broker is stopped. The bridge answers webhooks from its
   PostgreSQL outbox (a flood of 1,100 fills it past 1,000) and reports Kafka unavailable;
   the consuming roles cannot read their lag; delayed steps fall due and cannot be emitted.
   Meanwhile, independent of Kafka: the API is killed (restarted once its alert fires), 25
   deliveries with a forged signature arrive, and a second store that sent a few webhooks
   stays silent. The broker is restarted on the same data.
2. **Bad data**: one undecodable message on woo.orders, orders the store does not have (their
   notes fail with 404), an order whose webhook action points at a closed port (retried,
   then dead-lettered).
3. **Stalled consumer**: a session holds `LOCK TABLE order_state IN EXCLUSIVE MODE` (as a
   long migration would) while webhooks keep coming: the rule consumer cannot save its
   state, its lag grows past 1,000; the lock is released once the alert fires.

`run_drill` returns a `DrillReport` (alerts with their times, unexplained alerts, panels);
`python -m bench.alerts` runs it from the command line. A chaos run reuses the pieces over
its own roles: `observed(workdir, targets)` (Prometheus with the scaled rules and an
`AlertWatch`; `prom.set_targets` when a role restarts on a new port), `Fault`/`Expect`/
`evaluate` (which alert each fault must raise, and the alerts nothing explains) and
`bench.alerts.panels.check_panels` (the dashboards' queries).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Producer
from sqlalchemy import Engine, text

from bench.alerts.panels import PanelResult, check_panels
from bench.alerts.rules import Scale, write_scaled_rules
from tests.pipeline import add_rule, connect_store
from tests.support import RoleProcess, free_port, fresh_database, make_store, unique, wait_for
from wooflow.db.engine import get_engine
from wooflow.db.migrate import upgrade
from wooflow.devinfra import launcher
from wooflow.devinfra.prometheus import AlertWatch, Episode, PrometheusServer, ScrapeTarget
from wooflow.kafka import topics
from wooflow.kafka.admin import create_topics
from wooflow.kafka.config import producer_config
from wooflow.producers.signature import sign
from wooflow.settings import Settings
from wooflow.simulator.server import SimulatorServer

METRICS_ROLES = ("rules", "workers", "sink", "scheduler")  # /metrics on WOOFLOW_METRICS_PORT
GRACE_S = 90.0  # an alert may go pending this long after its fault was removed (it was caused before)

NOTE_RULE = {"name": "Big order note", "trigger": "new_order",
             "conditions": {"match": "all", "conditions": [{"field": "order_total", "operator": "gt", "value": "100"}]},
             "actions": [{"type": "add_order_note", "params": {"note": "wooflow: big order {{ order.number }}"}}]}
FOLLOW_UP_RULE = {"name": "Follow-up a minute later", "trigger": "new_order",
                  "conditions": {"match": "all",
                                 "conditions": [{"field": "order_total", "operator": "gt", "value": "140"}]},
                  "actions": [{"type": "add_order_note", "delay": "1m",
                               "params": {"note": "wooflow: follow-up {{ order.number }}"}}]}


def hook_rule(url: str) -> dict[str, Any]:
    return {"name": "Very big order to the ERP", "trigger": "new_order",
            "conditions": {"match": "all",
                           "conditions": [{"field": "order_total", "operator": "gt", "value": "500"}]},
            "actions": [{"type": "webhook", "params": {"url": url, "timeout": 2}}]}


# --- expectations and the report ---------------------------------------------------------------


@dataclass
class Fault:
    name: str
    description: str
    provoked_at: float | None = None
    removed_at: float | None = None

    def provoke(self) -> None:
        self.provoked_at = time.time()

    def remove(self) -> None:
        self.removed_at = time.time()


@dataclass(frozen=True)
class Expect:
    alert: str
    labels: Mapping[str, str]
    fault: str
    required: bool = True  # False: may fire as a consequence, need not


@dataclass
class AlertResult:
    alert: str
    labels: dict[str, str]
    fault: str
    fired: bool
    resolved: bool
    pending_after_s: float | None  # from the fault's start
    firing_after_s: float | None
    resolved_after_s: float | None  # from the fault's removal
    episodes: int


@dataclass
class DrillReport:
    started_at: float
    duration_s: float
    scale: Scale
    faults: list[Fault]
    alerts: list[AlertResult]
    unexplained: list[Episode]
    panels: list[PanelResult]
    shipped_alerts: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        covered = {a.alert for a in self.alerts if a.fired and a.resolved}
        return (all(a.fired and a.resolved for a in self.alerts) and not self.unexplained
                and covered >= set(self.shipped_alerts) and all(p.has_data for p in self.panels))

    def problems(self) -> list[str]:
        out = [f"{a.alert} {a.labels} ({a.fault}): " + ("never fired" if not a.fired else "never resolved")
               for a in self.alerts if not (a.fired and a.resolved)]
        out += [f"alert without its fault: {e.name} {e.labels}" for e in self.unexplained]
        covered = {a.alert for a in self.alerts if a.fired and a.resolved}
        out += [f"shipped alert not seen firing and resolving: {n}" for n in sorted(set(self.shipped_alerts) - covered)]
        out += [f"panel without data: {p.query.dashboard} / {p.query.panel} [{p.query.ref}]: {p.expr}"
                + (f" ({p.error})" if p.error else "") for p in self.panels if not p.has_data]
        return out

    def to_json(self) -> str:
        doc = {"ok": self.ok, "duration_s": round(self.duration_s, 1), "scale": asdict(self.scale),
               "faults": [asdict(f) for f in self.faults], "alerts": [asdict(a) for a in self.alerts],
               "unexplained": [asdict(e) for e in self.unexplained],
               "panels": {"checked": len(self.panels), "with_data": sum(p.has_data for p in self.panels),
                          "empty": [f"{p.query.dashboard} / {p.query.panel} [{p.query.ref}]"
                                    for p in self.panels if not p.has_data]},
               "problems": self.problems(), "notes": self.notes}
        return json.dumps(doc, indent=2, default=str)

    def markdown(self) -> str:
        def s(v: float | None) -> str:
            return "—" if v is None else f"{round(v) or 0} s"

        lines = ["| alert | labels | fault | pending after | firing after | resolved after removal |",
                 "|---|---|---|---|---|---|"]
        for a in self.alerts:
            labels = ", ".join(f"{k}={v}" for k, v in sorted(a.labels.items())) or "—"
            lines.append(f"| {a.alert} | {labels} | {a.fault} | {s(a.pending_after_s)} | {s(a.firing_after_s)} | "
                         f"{s(a.resolved_after_s)} |")
        return "\n".join(lines)


def evaluate(expects: list[Expect], faults: Mapping[str, Fault], episodes: list[Episode]
             ) -> tuple[list[AlertResult], list[Episode]]:
    """Each required expectation against the episodes seen in its fault's window; the
    episodes that no expectation (required or tolerated) explains — pending ones included:
    a condition that held without its fault is a finding even if it did not last."""
    def window(e: Expect) -> tuple[float, float]:
        f = faults[e.fault]
        return (f.provoked_at or float("inf")), (f.removed_at or time.time()) + GRACE_S

    def candidates(e: Expect) -> list[Episode]:
        lo, hi = window(e)
        return [ep for ep in episodes if ep.matches(e.alert, e.labels) and lo <= ep.pending_at <= hi]

    results = []
    for e in (e for e in expects if e.required):
        f, found = faults[e.fault], candidates(e)
        fired = [ep for ep in found if ep.firing_at is not None]
        first = fired[0] if fired else (found[0] if found else None)
        start, end = f.provoked_at or 0.0, f.removed_at or 0.0
        results.append(AlertResult(
            e.alert, dict(e.labels), e.fault, bool(fired), bool(fired) and first is not None
            and first.resolved_at is not None,
            None if first is None else first.pending_at - start,
            None if first is None or first.firing_at is None else first.firing_at - start,
            None if first is None or first.resolved_at is None else first.resolved_at - end, len(found)))
    explained = {id(ep) for e in expects for ep in candidates(e)}
    return results, [ep for ep in episodes if id(ep) not in explained]


# --- Prometheus over the roles ----------------------------------------------------------------


@contextmanager
def observed(workdir: Path, targets: list[ScrapeTarget], scale: Scale | None = None
             ) -> Iterator[tuple[PrometheusServer, AlertWatch]]:
    """A Prometheus scraping `targets` (every second) with the shipped rules scaled by `scale`,
    and an AlertWatch on it: what a chaos run needs to see the alerts of its faults."""
    rules = write_scaled_rules(workdir / "rules", scale or Scale())
    with PrometheusServer(workdir / "prometheus", targets, [rules]) as prom, AlertWatch(prom.client) as watch:
        yield prom, watch


# --- the pipeline ------------------------------------------------------------------------------


class DrillFailure(AssertionError):
    pass


@dataclass
class Roles:
    procs: dict[str, RoleProcess]
    ports: dict[str, int]

    def targets(self) -> list[ScrapeTarget]:
        return [ScrapeTarget(role, f"127.0.0.1:{port}") for role, port in self.ports.items()]

    def wait_answering(self, timeout: float) -> None:
        def answers(port: int) -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        for role, port in self.ports.items():
            wait_for(lambda port=port: answers(port), timeout, 0.2, f"{role} /metrics")

    def logs(self, chars: int = 2500) -> str:
        return "\n".join(f"--- {n} ---\n{p.log_text()[-chars:]}" for n, p in self.procs.items())


def start_roles(s: Settings, log_dir: Path) -> Roles:
    ports = {role: free_port() for role in ("bridge", "api", *METRICS_ROLES)}
    common = {"WOOFLOW_LAG_INTERVAL_S": "1", "WOOFLOW_SCHEDULER_GROUP": s.scheduler_group}
    procs = {
        "bridge": RoleProcess("bridge", s, log_dir, "--host", "127.0.0.1", "--port", str(ports["bridge"]), **common),
        "api": RoleProcess("api", s, log_dir, "--host", "127.0.0.1", "--port", str(ports["api"]), **common),
    }
    extra = {"workers": {"WOOFLOW_ACTION_RETRY_BASE_S": "0.5", "WOOFLOW_ACTION_TIMEOUT_S": "5"}}
    for role in METRICS_ROLES:
        procs[role] = RoleProcess(role, s, log_dir, **common, WOOFLOW_METRICS_PORT=str(ports[role]),
                                  **extra.get(role, {}))
    for p in procs.values():
        p.start()
    return Roles(procs, ports)


def order_body(order_id: int, customer: int, total: str) -> bytes:
    order = {"id": order_id, "number": str(order_id), "status": "processing", "currency": "EUR", "total": total,
             "customer_id": customer, "billing": {"email": f"c{customer}@example.com"},
             "date_created_gmt": "2026-11-25T10:00:00", "date_modified_gmt": "2026-11-25T10:00:00",
             "line_items": [], "meta_data": []}
    return json.dumps(order).encode()


class Deliveries:
    """Signed (or forged) order webhooks straight to the bridge, as WooCommerce sends them."""

    def __init__(self, bridge_url: str) -> None:
        self.bridge_url = bridge_url
        self.last_id = 900_000  # far above the simulator's own order ids
        self.statuses: dict[int, int] = {}
        self._lock = threading.Lock()  # the background traffic delivers too

    def _next_id(self) -> int:
        with self._lock:
            self.last_id += 1
            return self.last_id

    async def _send(self, client: httpx.AsyncClient, store: Any, body: bytes, forged: bool) -> None:
        signature = "Zm9yZ2VkIHNpZ25hdHVyZQ==" if forged else sign(body, store.webhook_secret)
        r = await client.post(f"{self.bridge_url}/webhooks/woocommerce/{store.id}", content=body, headers={
            "Content-Type": "application/json", "X-WC-Webhook-Topic": "order.created",
            "X-WC-Webhook-Signature": signature, "X-WC-Webhook-Delivery-ID": "1"})
        with self._lock:
            self.statuses[r.status_code] = self.statuses.get(r.status_code, 0) + 1

    def send(self, store: Any, n: int, *, total: str = "20.00", per_second: float | None = None,
             concurrency: int = 8, forged: bool = False, until: Callable[[], bool] | None = None) -> int:
        """Deliver `n` new orders (or until `until()`), paced if `per_second`; returns how many."""
        async def run() -> int:
            sent = 0
            gate = asyncio.Semaphore(concurrency)
            started = time.monotonic()
            async with httpx.AsyncClient(timeout=60) as client:
                async def one(order_id: int) -> None:
                    async with gate:
                        await self._send(client, store, order_body(order_id, 5000 + order_id % 50, total), forged)

                tasks = []
                for i in range(n):
                    if until is not None and until():
                        break
                    if per_second:
                        await asyncio.sleep(max(0.0, started + i / per_second - time.monotonic()))
                    tasks.append(asyncio.create_task(one(self._next_id())))
                    sent += 1
                await asyncio.gather(*tasks)
            return sent

        return asyncio.run(run())


class Traffic:
    """Background orders in the simulated store (its webhooks reach the bridge): one every
    `every_s`, alternately big (a note now, a follow-up a minute later) and small; and,
    every 10 s, whatever else is added to `periodic` (a store that is back sends again)."""

    def __init__(self, sim_store: Any, every_s: float = 1.5) -> None:
        self.sim_store, self.every_s = sim_store, every_s
        self.placed = 0
        self.periodic: list[Callable[[], object]] = []
        self._stop = threading.Event()
        self.product = sim_store.create_product("Drill product", "10.00")
        self._thread = threading.Thread(target=self._run, name="drill-traffic", daemon=True)

    def place(self, total: str) -> int:
        quantity = max(1, round(float(total) / 10))
        order = self.sim_store.create_order(line_items=[{"product_id": self.product.id, "quantity": quantity}],
                                            billing={"email": f"shopper{self.placed % 20}@example.com",
                                                     "first_name": "Ola", "country": "PL"}, status="processing")
        self.placed += 1
        return int(order.id)

    def _run(self) -> None:
        ticks = 0
        while not self._stop.wait(self.every_s):
            self.place("150.00" if self.placed % 2 == 0 else "20.00")
            ticks += 1
            if ticks % round(10 / self.every_s) == 0:
                for job in list(self.periodic):
                    job()

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


@contextmanager
def table_locked(engine: Engine, table: str) -> Iterator[None]:
    """Hold an EXCLUSIVE lock on `table` (reads pass, writes wait) until the block ends."""
    with engine.connect() as conn:
        conn.execute(text("SET lock_timeout = '20s'"))
        conn.execute(text(f"LOCK TABLE {table} IN EXCLUSIVE MODE"))
        try:
            yield
        finally:
            conn.rollback()


# --- the drill ---------------------------------------------------------------------------------


class AlertDrill:
    def __init__(self, database_url: str, workdir: Path, *, scale: Scale | None = None,
                 outbox_flood: int = 1100, log: Callable[[str], None] = print) -> None:
        self.database_url, self.workdir = database_url, workdir
        self.scale = scale or Scale()
        self.outbox_flood = outbox_flood
        self._log = log
        self.t0 = time.time()
        self.faults = {f.name: f for f in (
            Fault("broker outage", "Kafka broker stopped, then restarted on the same data"),
            Fault("api killed", "SIGKILL of the API process, restarted once its alert fired"),
            Fault("forged signatures", "25 deliveries with a forged signature in 5 s"),
            Fault("silent store", "a store sent 6 webhooks, then none until its alert fired"),
            Fault("bad data", "an undecodable event, 6 orders the store does not have, a webhook to a closed port"),
            Fault("locked state table", "LOCK TABLE order_state IN EXCLUSIVE MODE while webhooks keep coming"),
        )}

    def log(self, message: str) -> None:
        self._log(f"[{time.time() - self.t0:6.1f}s] {message}")

    def expectations(self, s: Settings, main: str, quiet: str) -> list[Expect]:
        groups = (s.rules_group, s.workers_group, s.sink_group, s.scheduler_group)
        return [
            Expect("WooflowBridgeKafkaUnavailable", {"component": "bridge"}, "broker outage"),
            Expect("WooflowOutboxBacklog", {}, "broker outage"),
            *(Expect("WooflowLagNotReported", {"group": g}, "broker outage") for g in groups),
            Expect("WooflowSchedulerLate", {}, "broker outage"),
            # the outbox drains at once after the outage: the readers of woo.orders may trail for a while
            Expect("WooflowConsumerLagGrowing", {}, "broker outage", required=False),
            Expect("WooflowRoleDown", {"component": "api"}, "api killed"),
            Expect("WooflowSignatureFailureSpike", {"store": main}, "forged signatures"),
            Expect("WooflowStoreSilent", {"store": quiet}, "silent store"),
            Expect("WooflowDLQReceiving", {"stage": "rules", "reason": "undecodable"}, "bad data"),
            Expect("WooflowDLQReceiving", {"stage": "scheduler", "reason": "undecodable"}, "bad data"),
            Expect("WooflowDLQReceiving", {"stage": "workers", "reason": "action_error"}, "bad data"),
            Expect("WooflowDLQReceiving", {"stage": "workers", "reason": "max_attempts"}, "bad data"),
            Expect("WooflowActionErrorRatioHigh", {"action": "add_order_note"}, "bad data"),
            # one dead-lettered webhook among no other webhook actions: a ratio of 1, but its counter's
            # first sample may already hold it
            Expect("WooflowActionErrorRatioHigh", {"action": "webhook"}, "bad data", required=False),
            Expect("WooflowConsumerLagGrowing", {"group": s.rules_group}, "locked state table"),
            # the flood that grows it (60 webhooks/s) may outrun the scheduler's reader of woo.orders too
            Expect("WooflowConsumerLagGrowing", {}, "locked state table", required=False),
        ]

    def run(self) -> DrillReport:
        with ExitStack() as stack:
            # a database of its own: roles drain every outbox row and emit every due step they find
            self.database_url = stack.enter_context(fresh_database(self.database_url, "alerts"))
            return self._run(stack)

    # --- set-up ----------------------------------------------------------------------------
    def _broker(self, stack: ExitStack) -> Path:
        state = self.workdir / "kafka"
        stack.callback(launcher.down, state)
        launcher.down_when_gone(state)
        launcher.up(state, Settings().cache_dir, postgres=False)
        return state

    def _settings(self, bootstrap: str) -> Settings:
        tag = unique("alerts")
        return Settings(kafka_bootstrap_servers=bootstrap, database_url=self.database_url, topic_prefix=f"{tag}.",
                        topic_partitions=4, rules_group=f"{tag}-rules", workers_group=f"{tag}-workers",
                        sink_group=f"{tag}-sink", scheduler_group=f"{tag}-scheduler", action_lease_s=5.0,
                        batch_timeout_s=0.1, store_cache_ttl_s=1.0, action_max_attempts=2,
                        allow_private_webhooks=True, state_dir=self.workdir / "state")

    def _run(self, stack: ExitStack) -> DrillReport:
        self.workdir.mkdir(parents=True, exist_ok=True)
        state = self._broker(stack)
        bootstrap = launcher.status(state)["kafka"]["address"]
        s = self._settings(bootstrap)
        upgrade(self.database_url)
        create_topics(s)
        engine = get_engine(self.database_url)
        sim = stack.enter_context(SimulatorServer(seed=11))
        main = make_store(engine, sim.url, consumer_key=sim.auth[0], consumer_secret=sim.auth[1])
        quiet = make_store(engine)
        for rule in (NOTE_RULE, FOLLOW_UP_RULE, hook_rule(f"http://127.0.0.1:{free_port()}/erp")):
            add_rule(engine, main.id, rule)
        log_dir = self.workdir / "logs"
        log_dir.mkdir(exist_ok=True)
        roles = start_roles(s, log_dir)
        for p in roles.procs.values():
            stack.callback(p.stop)
        prom, watch = stack.enter_context(observed(self.workdir, [], self.scale))
        bridge_url = f"http://127.0.0.1:{roles.ports['bridge']}"
        self.log(f"broker {bootstrap}, Prometheus {prom.url}, bridge {bridge_url}, logs in {log_dir}")
        try:
            roles.wait_answering(90)
        except AssertionError as exc:
            raise DrillFailure(f"{exc}\n{roles.logs()}") from exc
        prom.set_targets(roles.targets())  # scraped from their first answer: a start is no outage
        connect_store(sim.store, main, bridge_url, ("order.created",), timeout=90)
        deliveries = Deliveries(bridge_url)
        traffic = Traffic(sim.store).start()
        stack.callback(traffic.stop)
        try:
            self._warm_up(prom, watch, deliveries, quiet, engine, main)
            self._outage(state, s, roles, watch, deliveries, main, quiet)
            traffic.periodic.append(lambda: deliveries.send(quiet, 1))  # the quiet store is back
            self._bad_data(s, watch, deliveries, main, traffic)
            self._stall(engine, s, watch, deliveries, main)
            # these two take their `for` while the later faults run
            self.wait_firing(watch, "WooflowSchedulerLate", {}, "broker outage", 60)
            self.wait_firing(watch, "WooflowActionErrorRatioHigh", {"action": "add_order_note"}, "bad data", 60)
            self._all_resolved(watch)
        except AssertionError as exc:
            raise DrillFailure(f"{exc}\n{roles.logs()}\nalerts seen: {watch.snapshot()}") from exc
        end = time.time()
        panels = check_panels(prom.client, self.t0, end, values={"store": main.id, "group": s.workers_group})
        results, unexplained = evaluate(self.expectations(s, main.id, quiet.id), self.faults, watch.snapshot())
        shipped = sorted(r.name for r in prom.client.rules() if r.kind == "alerting")
        return DrillReport(self.t0, end - self.t0, self.scale, list(self.faults.values()), results, unexplained,
                           panels, shipped, [f"deliveries by status: {deliveries.statuses}",
                                             f"orders placed in the store: {traffic.placed}"])

    # --- phases ----------------------------------------------------------------------------
    def wait_firing(self, watch: AlertWatch, alert: str, labels: Mapping[str, str], fault: str,
                    timeout: float) -> Episode:
        since = self.faults[fault].provoked_at or 0.0
        found = wait_for(lambda: [e for e in watch.find(alert, labels, since=since) if e.firing_at], timeout, 0.25,
                         f"{alert} {dict(labels)} to fire")
        self.log(f"{alert} {dict(labels)} firing")
        return found[0]

    def _warm_up(self, prom: PrometheusServer, watch: AlertWatch, deliveries: Deliveries, quiet: Any,
                 engine: Engine, main: Any) -> None:
        silent = self.faults["silent store"]
        for _ in range(6):  # one a second: a counter's first sample is no increase to Prometheus
            deliveries.send(quiet, 1)
            time.sleep(1.0)  # pacing, not synchronisation
        silent.provoke()
        self.log("quiet store sent its 6 webhooks")
        client = prom.client
        wait_for(lambda: len([t for t in client.targets() if t.health == "up"]) == 6, 90, 0.5, "every role scraped")
        wait_for(lambda: [x for x in client.query('sum(wooflow_actions_total{outcome="succeeded"})') if x.value > 0],
                 90, 0.5, "a first action done by the pipeline")
        wait_for(lambda: len(client.query("wooflow_consumer_lag_updated_timestamp_seconds")) >= 4, 30, 0.5,
                 "lag readings of the four groups")

        def steps() -> int:  # delayed steps that will fall due during the outage
            with engine.connect() as conn:
                return int(conn.execute(text("SELECT count(*) FROM scheduled_steps WHERE store_id = :s AND "
                                             "status = 'pending'"), {"s": main.id}).scalar_one())

        wait_for(lambda: steps() >= 3, 60, 0.5, "delayed steps waiting in the scheduler")
        if watch.active():
            raise DrillFailure(f"alerts before any fault: {watch.active()}")
        self.log("warm: every role scraped, the pipeline makes notes, no alert")

    def _outage(self, state: Path, s: Settings, roles: Roles, watch: AlertWatch, deliveries: Deliveries,
                main: Any, quiet: Any) -> None:
        outage, api, forged = self.faults["broker outage"], self.faults["api killed"], self.faults["forged signatures"]
        self.log("stopping the broker")
        outage.provoke()  # before: the roles notice the broker leaving while it shuts down
        launcher.down(state)
        api.provoke()
        roles.procs["api"].kill()
        self.wait_firing(watch, "WooflowBridgeKafkaUnavailable", {"component": "bridge"}, outage.name, 60)
        flooded = deliveries.send(main, self.outbox_flood)
        self.log(f"{flooded} webhooks while the broker is down: {deliveries.statuses}")
        self.wait_firing(watch, "WooflowRoleDown", {"component": "api"}, api.name, 60)
        roles.procs["api"].start()
        api.remove()
        forged.provoke()
        deliveries.send(main, 25, forged=True, per_second=5, concurrency=1)
        forged.remove()
        self.wait_firing(watch, "WooflowSignatureFailureSpike", {"store": main.id}, forged.name, 30)
        self.wait_firing(watch, "WooflowOutboxBacklog", {}, outage.name, 90)
        self.wait_firing(watch, "WooflowStoreSilent", {"store": quiet.id}, "silent store", 240)
        for group in (s.rules_group, s.workers_group, s.sink_group, s.scheduler_group):
            self.wait_firing(watch, "WooflowLagNotReported", {"group": group}, outage.name, 240)
        self.log("restarting the broker")
        launcher.up(state, Settings().cache_dir, postgres=False)
        outage.remove()
        deliveries.send(quiet, 1)
        self.faults["silent store"].remove()
        for alert, labels in (("WooflowBridgeKafkaUnavailable", {}), ("WooflowOutboxBacklog", {})):
            wait_for(lambda a=alert, lab=labels: not [e for e in watch.active() if e.matches(a, lab)], 120, 0.5,
                     f"{alert} to resolve")
        self.log("the bridge produces to Kafka again and its outbox is drained")
        client = watch.client
        for group in (s.rules_group, s.workers_group):  # consuming again (they rejoin their groups first)
            wait_for(lambda g=group: [x for x in client.query(f'wooflow:consumer_lag:sum{{group="{g}"}} < 100 and '
                                                              f'on () time() - max(wooflow_consumer_lag_updated_'
                                                              f'timestamp_seconds{{group="{g}"}}) < 5')], 120, 0.5,
                     f"{group} to catch up")
        self.log("the rule consumers and the workers have caught up")

    def _bad_data(self, s: Settings, watch: AlertWatch, deliveries: Deliveries, main: Any, traffic: Traffic) -> None:
        bad = self.faults["bad data"]
        bad.provoke()
        producer = Producer(producer_config(s))
        producer.produce(s.topic(topics.ORDERS), b"\x00not avro at all", key=f"{main.id}:c1")
        if producer.flush(30):
            raise DrillFailure("the undecodable event was not acknowledged")
        traffic.place("600.00")  # its webhook action meets a closed port: retried, then dead-lettered
        for _ in range(6):  # the store has no such orders: their notes fail with 404
            deliveries.send(main, 1, total="120.00")
            time.sleep(1.5)  # pacing: failures spread over scrapes, as real ones are
        bad.remove()
        for labels in ({"stage": "rules", "reason": "undecodable"}, {"stage": "scheduler", "reason": "undecodable"},
                       {"stage": "workers", "reason": "action_error"}, {"stage": "workers", "reason": "max_attempts"}):
            self.wait_firing(watch, "WooflowDLQReceiving", labels, bad.name, 90)

    def _stall(self, engine: Engine, s: Settings, watch: AlertWatch, deliveries: Deliveries, main: Any) -> None:
        stall = self.faults["locked state table"]
        stall.provoke()
        with table_locked(engine, "order_state"):
            self.log("order_state locked; webhooks keep coming")

            def fired() -> bool:
                return bool([e for e in watch.find("WooflowConsumerLagGrowing", {"group": s.rules_group},
                                                   since=stall.provoked_at or 0.0) if e.firing_at])

            sent = deliveries.send(main, 20_000, per_second=60, concurrency=8, until=fired)
            if not fired():
                raise AssertionError(f"WooflowConsumerLagGrowing did not fire after {sent} webhooks")
            stall.remove()
        self.log(f"WooflowConsumerLagGrowing firing after {sent} webhooks; lock released")

    def _all_resolved(self, watch: AlertWatch, timeout: float = 150) -> None:
        wait_for(lambda: not watch.active(), timeout, 0.5, "every alert to resolve")
        self.log("every alert resolved")


def run_drill(database_url: str, workdir: Path, **options: Any) -> DrillReport:
    return AlertDrill(database_url, workdir, **options).run()
