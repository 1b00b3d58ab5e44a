"""`wooflow scheduler`: workflows over time, as one process with three loops.

- emitter (scheduler/emitter.py): due steps → automation.commands, exit conditions first;
- activity reader (scheduler/activity.py): woo.storefront / woo.orders / woo.customers →
  carts, storefront activity, the customer calendar, cart recovery and attribution;
- scan (scheduler/scan.py): abandoned carts, behaviour and calendar triggers → the rule
  engine → new runs in scheduled_steps.

Run as many schedulers as you like: emitters claim disjoint rows (SKIP LOCKED + lease),
activity readers share partitions in one consumer group, and one scheduler at a time
holds the scan lock. If a loop dies the process stops, so the orchestrator restarts it;
nothing is lost (every loop resumes from PostgreSQL or its committed offsets).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import text

from wooflow import metrics
from wooflow.clock import get_clock
from wooflow.consumer.engine import RuleEngine
from wooflow.consumer.rules import RuleCache, RuleListener
from wooflow.db.engine import get_engine, when_available
from wooflow.kafka.config import scheduler_profile
from wooflow.kafka.producer import Producer
from wooflow.scheduler.activity import ActivityReader
from wooflow.scheduler.emitter import Emitter
from wooflow.scheduler.scan import Scanner
from wooflow.scheduler.synth import Firer
from wooflow.schemas.codec import get_codec
from wooflow.settings import Settings
from wooflow.stores import StoreCache

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, settings: Settings, *, scan: bool = True, activity: bool = True) -> None:
        self.settings = settings
        self.db = get_engine(settings.database_url, pool_size=8)
        self.clock = get_clock(settings)
        self.rules = RuleCache(self.db, fallback_interval=settings.rules_reload_s)
        self.stores = StoreCache(self.db, settings.store_cache_ttl_s)
        # one producer per emitter loop: each flush waits for its own batch only
        self.producers = [Producer(settings, scheduler_profile(settings)) for _ in range(settings.scheduler_threads)]
        codec = get_codec(settings.schema_registry_url)
        self.emitters = [Emitter(settings, self.db, p, codec, self.clock, self.rules, stores=self.stores)
                         for p in self.producers]
        self.scanner = Scanner(settings, self.db, self.rules, Firer(RuleEngine(self.rules)), self.clock, self.stores)
        self.activity = ActivityReader(settings, self.db) if activity else None
        self.scan_enabled = scan
        self.ready = threading.Event()
        self.died: str | None = None  # the loop whose failure stopped the process

    def _scan_loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                stats = self.scanner.scan_once()
                if stats and any(stats.values()):
                    log.info("scan fired %s", {k: v for k, v in stats.items() if v})
            except Exception:
                log.exception("trigger scan failed")
            stop.wait(self.settings.scheduler_scan_interval_s)

    def _gauges(self, stop: threading.Event) -> None:
        while not stop.wait(15.0):
            try:
                with self.db.connect() as conn:
                    due, future = conn.execute(text(
                        "SELECT count(*) FILTER (WHERE due_at <= :n), count(*) FILTER (WHERE due_at > :n) "
                        "FROM scheduled_steps WHERE status = 'pending'"), {"n": self.clock.now()}).one()
                metrics.scheduler_pending.labels("due").set(due)
                metrics.scheduler_pending.labels("future").set(future)
            except Exception:
                log.debug("pending gauge failed", exc_info=True)

    def _guard(self, name: str, target: Callable[[threading.Event], None], stop: threading.Event) -> threading.Thread:
        def run() -> None:
            try:
                target(stop)
            except BaseException as exc:
                log.exception("scheduler %s loop died; stopping the process", name)
                self.died = self.died or f"{name}: {type(exc).__name__}: {exc}"
                stop.set()
                raise
        t = threading.Thread(target=run, name=f"scheduler-{name}", daemon=True)
        t.start()
        return t

    def run(self, stop: threading.Event) -> None:
        when_available(lambda: self.rules.refresh(force=True), stop, "loading the rules")
        if stop.is_set():
            return
        # rule edits (a disabled workflow, new exit conditions) reach the scheduler at once
        RuleListener(self.rules, self.settings.database_url, stop).start()
        threads = []
        if self.activity is not None:
            threads.append(self._guard("activity", self.activity.run, stop))
        if self.scan_enabled:
            threads.append(self._guard("scan", self._scan_loop, stop))
        threads.append(self._guard("gauges", self._gauges, stop))
        for i, em in enumerate(self.emitters[1:], 1):
            threads.append(self._guard(f"emitter-{i}", em.run, stop))
        self.ready.set()
        log.info("scheduler %s running (clock %r, %d emitter loops, batch %d, lease %.0fs)", self.emitters[0].owner,
                 self.clock, len(self.emitters), self.settings.scheduler_batch_size, self.settings.scheduler_lease_s)
        try:
            self.emitters[0].run(stop)
        finally:
            stop.set()
            for t in threads:
                t.join(15)
            for p in self.producers:
                p.close(5)
        if self.died is not None:  # a failure, not a requested stop: the exit code must say so
            raise RuntimeError(f"the scheduler's {self.died.split(':')[0]} loop died ({self.died})")
