"""Carrying out a chaos plan: each lane's faults in order at their planned moments, the
poison at its own, and after every fault its time to recover.

Time to recover: from the moment a fault is lifted (the role restarted, the broker or
PostgreSQL answering again, the scale back at its baseline, the REST API healthy) until an
order placed at that moment — a canary — has its first note in the store: the event went
through the bridge (or the poller), Kafka, a rule consumer, a worker and the store's REST
API. With lanes overlapping, a recovery can include another fault's remaining time; that
is what a shopper would see.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from wooflow.kafka import topics
from wooflow.kafka.config import BATCH
from wooflow.kafka.producer import Producer
from wooflow.ops.chaos import plan as P
from wooflow.ops.chaos.infra import Infra
from wooflow.ops.chaos.roles import Roles
from wooflow.ops.chaos.traffic import NotedStore, Traffic
from wooflow.schemas.codec import get_codec
from wooflow.settings import Settings
from wooflow.simulator.faults import RestFault

Say = Callable[[str], None]
SETTLE_S = 30.0


@dataclass
class Done:
    """A fault as it happened."""

    kind: str
    describe: str
    planned_at: float
    started_at: float  # seconds after traffic started
    lifted_at: float
    recovered_s: float | None = None
    target: str = ""
    error: str = ""


class Injector:
    def __init__(self, plan: P.Plan, *, settings: Settings, roles: Roles, baseline: dict[str, int], infra: Infra,
                 store: NotedStore, traffic: Traffic, store_id: str, say: Say, quiet: logging.Logger) -> None:
        self.plan, self.settings, self.roles, self.baseline = plan, settings, roles, baseline
        self.infra, self.store, self.traffic, self.store_id, self.say = infra, store, traffic, store_id, say
        self.quiet = quiet  # librdkafka's logger for the run's own clients
        self.rng = random.Random(plan.seed ^ 0x5EED)
        self.done: list[Done] = []
        self.poisoned: list[P.Poison] = []
        self.forged: Counter[int] = Counter()  # the bridge's answers to forged webhooks, by status
        self.active: set[str] = set()
        self._lock = threading.Lock()
        self._lanes: list[threading.Thread] = []
        self._others: list[threading.Thread] = []  # poison, recovery measurements
        self.t0 = 0.0
        self.last_lift = 0.0  # time.monotonic() of the latest fault lifted

    def start(self, t0: float, stop: threading.Event) -> None:
        self.t0 = t0
        for lane, faults in self.plan.lanes().items():
            t = threading.Thread(target=self._lane, args=(faults, stop), name=f"chaos-{lane}", daemon=True)
            t.start()
            self._lanes.append(t)
        self._spawn(self._poison, stop)
        self._spawn(self._forge, stop)

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        t.start()
        with self._lock:
            self._others.append(t)

    def lanes_done(self) -> bool:
        """Every planned fault was carried out and lifted (recoveries may still be measured)."""
        return not any(t.is_alive() for t in self._lanes)

    def join(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = [*self._lanes, *self._others]
        for t in threads:
            t.join(max(0.1, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads)

    def now(self) -> float:
        return time.monotonic() - self.t0

    # --- lanes ---------------------------------------------------------------------------------
    def _lane(self, faults: list[P.Fault], stop: threading.Event) -> None:
        previous: Done | None = None
        for f in faults:
            if stop.wait(max(0.0, f.at - self.now())):
                return
            # A lane running late (slow restarts) does not hit a service again before it
            # worked end to end once more — or `SETTLE_S` passed — or its outages would merge.
            while previous is not None and previous.recovered_s is None and \
                    self.now() - previous.lifted_at < SETTLE_S:
                if stop.wait(0.2):
                    return
            record = Done(f.kind, f.describe(), f.at, round(self.now(), 2), 0.0, target=f.target)
            tag = f"{f.kind}#{sum(d.kind == f.kind for d in self.done) + 1}"
            with self._lock:
                self.active.add(tag)
            self.say(f"fault   {record.started_at:7.1f}s  {f.describe()}")
            try:
                record.target = self._inject(f) or f.target
            except Exception as exc:  # a fault that could not be carried out is reported, never hidden
                record.error = f"{type(exc).__name__}: {exc}"
                self.say(f"fault   {self.now():7.1f}s  {f.kind} FAILED: {record.error}")
            record.lifted_at = round(self.now(), 2)
            self.say(f"lifted  {record.lifted_at:7.1f}s  {f.kind}")
            with self._lock:
                self.active.discard(tag)
                self.done.append(record)
                self.last_lift = time.monotonic()
            # measured aside: the lane's next fault keeps its moment
            self._spawn(self._recover, record)
            previous = record

    def _inject(self, f: P.Fault) -> str:
        """Carry out one fault, lift it; returns what it hit."""
        if f.kind == P.KILL:
            live = [i for i in self.roles.running(f.target) if i.alive()]
            if not live:
                return f"{f.target} (none running)"
            inst = self.rng.choice(live)
            self.roles.kill(inst)
            time.sleep(f.hold_s)
            self.roles.restart(inst)
            return inst.name
        if f.kind == P.BROKER:
            self.infra.stop_broker(kill=f.variant == "kill")
            time.sleep(f.hold_s)
            self.infra.start_broker()
            return f"broker ({f.variant})"
        if f.kind in (P.PG_FAST, P.PG_IMMEDIATE):
            self.infra.stop_postgres("fast" if f.kind == P.PG_FAST else "immediate")
            time.sleep(f.hold_s)
            self.infra.start_postgres()
            return "postgres"
        if f.kind == P.SCALE:
            for n, hold in zip((1, 4, 1), f.steps, strict=True):
                self.roles.scale(f.target, n)
                time.sleep(hold)
            self.roles.scale(f.target, self.baseline[f.target])
            return f.target
        fault = RestFault(mode="error" if f.kind == P.REST_ERROR else "slow", until=time.monotonic() + f.hold_s,
                          status=self.rng.choice((500, 502, 503)), delay_s=float(f.variant or 0), seed=f.seed)
        self.store.rest_fault = fault
        time.sleep(f.hold_s)
        self.store.rest_fault = None
        return f"store REST ({fault.requests} requests hit)"

    def _recover(self, record: Done) -> None:
        oid = self.traffic.canary()
        text = f"chaos:new:{oid}"
        t = self.t0 + record.lifted_at
        deadline = time.monotonic() + self.plan.profile.recover_timeout_s
        while time.monotonic() < deadline:
            seen = self.store.note_seen.get(text)
            if seen is not None:
                record.recovered_s = round(seen - t, 2)
                self.say(f"recover {self.now():7.1f}s  {record.kind} lifted at {record.lifted_at:.1f}s: "
                         f"end to end again after {record.recovered_s:.1f}s")
                return
            time.sleep(0.1)
        self.say(f"recover {self.now():7.1f}s  {record.kind} lifted at {record.lifted_at:.1f}s: NOT recovered within "
                 f"{self.plan.profile.recover_timeout_s:.0f}s")

    # --- poison --------------------------------------------------------------------------------
    def _poison(self, stop: threading.Event) -> None:
        # The broker may be down when a poison is due: its producer waits as long as the batch roles'.
        producer = Producer(self.settings, BATCH, logger=self.quiet)
        try:
            for p in self.plan.poison:
                if stop.wait(max(0.0, p.at - self.now())):
                    return
                topic, value = self._poison_message(p)
                try:
                    producer.produce(self.settings.topic(topic), value, key=p.key)
                    producer.flush(330)
                except Exception as exc:  # reported: the run checks only the poison that was sent
                    self.say(f"poison  {self.now():7.1f}s  {p.key} could not be produced: {exc}")
                    continue
                self.poisoned.append(p)
                self.say(f"poison  {self.now():7.1f}s  {p.target} ({p.key})")
        finally:
            producer.close()

    # --- forged webhooks ---------------------------------------------------------------------------
    def _forge(self, stop: threading.Event) -> None:
        """Bursts of order webhooks signed with a wrong secret: each must be refused (401) and
        none may reach the pipeline — an order id the store does not have would show up as an
        action error in the dead letters or an unexpected effect."""
        url = f"http://127.0.0.1:{self.roles.bridge_port}/webhooks/woocommerce/{self.store_id}"
        for n, at in enumerate(self.plan.forgeries):
            if stop.wait(max(0.0, at - self.now())):
                return
            with httpx.Client(timeout=10) as client:
                for i in range(self.plan.profile.forgery_burst):
                    self.forged[self._forged_delivery(client, url, 9_000_000 + n * 1000 + i)] += 1
            self.say(f"forged  {self.now():7.1f}s  {self.plan.profile.forgery_burst} webhooks with a wrong "
                     f"signature: {dict(self.forged)}")

    @staticmethod
    def _forged_delivery(client: httpx.Client, url: str, order_id: int) -> int:
        body = json.dumps({"id": order_id, "status": "processing", "total": "999.00", "currency": "EUR",
                           "billing": {"email": "forger@example.com"}, "line_items": []}).encode()
        signature = base64.b64encode(hmac.new(b"not the store's secret", body, hashlib.sha256).digest()).decode()
        headers = {"Content-Type": "application/json", "X-WC-Webhook-Topic": "order.created",
                   "X-WC-Webhook-Resource": "order", "X-WC-Webhook-Event": "created",
                   "X-WC-Webhook-Signature": signature, "X-WC-Webhook-Delivery-ID": f"forged-{order_id}"}
        try:
            return client.post(url, content=body, headers=headers).status_code
        except httpx.HTTPError:
            return 0  # the bridge being restarted by a kill fault: nothing was accepted

    def _poison_message(self, p: P.Poison) -> tuple[str, bytes]:
        if p.target != "unknown_action":
            return p.target, b"\x00not avro: chaos poison " + p.key.encode()
        from wooflow.workers.testing import command

        cmd = command(store_id=self.store_id, action_type="chaos_no_such_action", params={},
                      event_id=p.key, customer_key="poison")
        topic = self.settings.topic(topics.COMMANDS)
        return topics.COMMANDS, get_codec(self.settings.schema_registry_url).encode("ActionCommand", cmd, topic)

    def summary(self) -> dict[str, int]:
        out = dict.fromkeys(P.KINDS, 0)
        for d in self.done:
            out[d.kind] += 1
        return out
