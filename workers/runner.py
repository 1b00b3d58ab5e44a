"""`wooflow workers`: the action worker process.

Consumes automation.commands and executes commands concurrently (async I/O), one key at a
time per customer (workers/dispatcher.py), up to `worker_concurrency` in flight. Each
command produces its execution log to automation.logs (and failures to automation.dlq).
Offsets are committed through wooflow.checkpointing for the finished prefix of each
partition only (workers/tracker.py): a message is finished when its effects are recorded
in PostgreSQL and its outputs are acknowledged by Kafka. So a slow command never holds
back the others, and a crash re-delivers only unfinished work, which the idempotency
claims make harmless.

Threads: the asyncio loop runs everything; the Kafka consumer is only touched from one
dedicated thread (consume, commit, rebalance callbacks); PostgreSQL calls run on a small
pool of database threads in batches; the producer's delivery reports arrive on its
polling thread; the leases of running actions are renewed from a thread of their own
(workers/leases.py — if they cannot be, the worker cancels those actions and stops with
LeaseLost). Commands put aside for later (delays, retries, busy keys) are released
from PostgreSQL by `_release_loop` (workers/deferred.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from wooflow import dlq, metrics
from wooflow.checkpointing import Checkpoint
from wooflow.db.engine import get_engine
from wooflow.kafka import topics
from wooflow.kafka.config import RELEASE, WORKERS
from wooflow.kafka.consumer import consume_batch, make_consumer
from wooflow.kafka.producer import Producer, produce_when_room
from wooflow.process import new_event_loop
from wooflow.schemas.codec import DecodeError, get_codec
from wooflow.schemas.types import ACTION_COMMAND
from wooflow.settings import Settings
from wooflow.stores import StoreCache
from wooflow.workers import deferred
from wooflow.workers.dispatcher import Dispatcher, Item
from wooflow.workers.executor import Executor, Outcome, count
from wooflow.workers.leases import LeaseKeeper, LeaseLost, instance_id, settings_problem
from wooflow.workers.mailer import Mailer
from wooflow.workers.netguard import Resolver
from wooflow.workers.services import Services, build_services
from wooflow.workers.tracker import TP, Handle, OffsetTracker
from wooflow.workers.woo_client import WooClients

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, settings: Settings, *, resolver: Resolver | None = None, mailer: Mailer | None = None,
                 extras: dict[str, Any] | None = None) -> None:
        problem = settings_problem(settings)
        if problem is not None:
            raise ValueError(problem)
        self.settings = settings
        self.owner = instance_id()  # the claims' owner: leases are renewed for this instance only
        self.codec = get_codec(settings.schema_registry_url)
        self.engine = get_engine(settings.database_url, pool_size=10)
        self.commands_topic = settings.topic(topics.COMMANDS)
        self.logs_topic = settings.topic(topics.LOGS)
        self.ready = threading.Event()
        self._resolver, self._mailer, self._extras = resolver, mailer, extras
        self.tracker = OffsetTracker()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.consumer: Consumer | None = None
        self.checkpoint: Checkpoint | None = None
        self.dispatcher: Dispatcher | None = None
        self.executor: Executor | None = None
        self.services: Services | None = None
        self.producer: Producer | None = None
        self._bulk_tasks: set[asyncio.Future[None]] = set()

    # --- process -------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        loop = new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main(stop))
        finally:
            loop.close()

    async def _main(self, stop: threading.Event) -> None:
        s = self.settings
        self.loop = loop = asyncio.get_running_loop()
        self.services = build_services(s, self.engine, resolver=self._resolver, mailer=self._mailer,
                                       extras=self._extras)
        clients = WooClients(timeout=s.action_timeout_s, max_connections=64)
        leases = LeaseKeeper(s, self.owner)
        leases.start()
        self.executor = Executor(s, self.engine, StoreCache(self.engine, s.store_cache_ttl_s), clients,
                                 self.services, self.codec, self.commands_topic, leases)
        self.producer = Producer(s, WORKERS)
        self.producer.start_polling()
        release_producer = Producer(s, RELEASE)
        self.dispatcher = Dispatcher(self._process, s.worker_concurrency)
        kafka = ThreadPoolExecutor(1, thread_name_prefix="wooflow-kafka")
        self.consumer = make_consumer(s, s.workers_group, [self.commands_topic], on_revoke=self._on_revoke,
                                      on_lost=self._on_lost)
        self.checkpoint = Checkpoint(self.consumer, None)
        releaser = asyncio.ensure_future(self._release_loop(stop, release_producer))
        self.ready.set()
        log.info("worker %s running (group %s, concurrency %d)", self.owner, s.workers_group, s.worker_concurrency)
        last_commit = time.monotonic()
        try:
            while not stop.is_set():
                if self.tracker.failed:
                    raise RuntimeError(f"an output could not be delivered to Kafka: {self.tracker.failed}")
                if leases.lapsed:
                    raise LeaseLost(f"worker {self.owner} {leases.lapsed}; their commands are delivered again")
                if self.tracker.unfinished >= s.worker_max_inflight:
                    await asyncio.sleep(0.02)  # back-pressure: let the running commands finish
                else:
                    msgs = await loop.run_in_executor(kafka, consume_batch, self.consumer, s.batch_size,
                                                      s.batch_timeout_s)
                    if msgs:
                        self._dispatch(self._intake(msgs))
                if time.monotonic() - last_commit >= s.worker_commit_interval_s:
                    await loop.run_in_executor(kafka, self._commit, None)
                    last_commit = time.monotonic()
            log.info("stopping: finishing %d commands in flight", self.tracker.unfinished)
            dispatcher = self.dispatcher
            assert dispatcher is not None
            await self._wait(lambda: dispatcher.idle and self.tracker.unfinished == 0, s.action_timeout_s + 30)
            if leases.lapsed:
                raise LeaseLost(f"worker {self.owner} {leases.lapsed}; their commands are delivered again")
            await loop.run_in_executor(kafka, self._commit, None)
        finally:
            releaser.cancel()
            await asyncio.gather(releaser, return_exceptions=True)
            try:
                await loop.run_in_executor(kafka, self.consumer.close)
            except Exception:  # closing after a fatal error must not hide it
                log.exception("closing the consumer")
            kafka.shutdown(wait=False)
            await loop.run_in_executor(None, self.producer.close, 30.0)
            await loop.run_in_executor(None, release_producer.close, 10.0)
            await clients.aclose()
            await self.services.aclose()
            leases.stop()  # last: actions still finishing during the shutdown keep their leases

    @staticmethod
    async def _wait(cond: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    # --- intake and outputs ----------------------------------------------------------------
    def _intake(self, msgs: list[Message]) -> list[Item]:
        items: list[Item] = []
        consumed: Counter[tuple[Any, str]] = Counter()
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", err)
                continue
            topic, partition, offset = m.topic(), m.partition(), m.offset()
            assert topic is not None and partition is not None and offset is not None, "a consumed message"
            handle = self.tracker.add(topic, partition, offset)
            try:
                cmd = self.codec.decode_as(m.value() or b"", ACTION_COMMAND, topic)
            except DecodeError as exc:
                self._dead_letter(handle, m, "undecodable", str(exc), None, 1)
                self.tracker.done(handle)
                continue
            consumed[(topic, cmd["store_id"])] += 1
            items.append(Item((topic, partition), (topic, partition, m.key()), m, handle, cmd))
        for (topic, store), n in consumed.items():
            count(metrics.events_consumed, "workers", topic, store, n=n)
        return items

    def _dispatch(self, items: list[Item]) -> None:
        """Plain local-state commands of keys seen once in this batch go to one bulk transaction;
        the rest through the dispatcher (in order per key)."""
        assert self.dispatcher is not None and self.executor is not None
        now = datetime.now(timezone.utc)
        seen = Counter(it.key for it in items)
        bulk: list[Item] = []
        rest: list[Item] = []
        for it in items:
            if seen[it.key] == 1 and not self.dispatcher.busy(it.key) and self.executor.bulk_eligible(it.cmd, now):
                bulk.append(it)
            else:
                rest.append(it)
        if len(bulk) < 8:  # not worth a bulk round of its own
            rest, bulk = items, []
        if bulk:
            keys = [it.key for it in bulk]
            self.dispatcher.reserve(keys)
            task = asyncio.ensure_future(self._process_bulk(bulk, keys))
            self._bulk_tasks.add(task)
            task.add_done_callback(self._bulk_tasks.discard)
        if rest:
            self.dispatcher.submit(rest)

    async def _process_bulk(self, items: list[Item], keys: list[Any]) -> None:
        assert self.executor is not None and self.dispatcher is not None
        try:
            try:
                outcomes = await self.executor.execute_bulk([(it.cmd, it.msg) for it in items])
            except Exception:  # never lose the batch: the per-command path tries each
                log.exception("bulk batch failed; running its commands one by one")
                await asyncio.gather(*(self._process(it) for it in items))
                return
            for it, o in zip(items, outcomes, strict=True):
                self._emit(it, o)
                self.tracker.done(it.handle)
        finally:
            self.dispatcher.release(keys)

    async def _process(self, item: Item) -> None:
        assert self.executor is not None
        outcome = await self.executor.execute(item.cmd, item.msg)
        self._emit(item, outcome)
        self.tracker.done(item.handle)

    def _emit(self, item: Item, o: Outcome) -> None:
        if o.log is not None:
            self.tracker.add_outputs(item.handle, 1)
            self._produce(self.logs_topic, self.codec.encode("ExecutionLog", o.log, self.logs_topic),
                          f"{o.cmd['store_id']}:{o.cmd['customer_key']}", item.handle)
            count(metrics.events_out, "workers", self.logs_topic, o.cmd["store_id"])
        if o.dlq_reason:
            self._dead_letter(item.handle, item.msg, o.dlq_reason, o.log["message"] if o.log else "",
                              o.cmd["store_id"], int(o.log["attempt"]) if o.log else 1)

    def _dead_letter(self, handle: Handle, msg: Message, reason: str, error: str, store_id: str | None,
                     attempts: int) -> None:
        record = dlq.record_of(msg, stage="workers", reason=reason, error=error, store_id=store_id, attempts=attempts)
        self.tracker.add_outputs(handle, 1)
        topic, value = dlq.encode(self.codec, self.settings, record)
        self._produce(topic, value, msg.key(), handle)
        dlq.counted("workers", reason, dlq.where(msg), error)

    def _produce(self, topic: str, value: bytes, key: str | bytes | None, handle: Handle) -> None:
        assert self.producer is not None
        tracker = self.tracker

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                tracker.delivery_failed(f"{topic}: {err.str()}")
            else:
                tracker.done(handle)

        produce_when_room(self.producer.raw, topic, value, key=key, on_delivery=delivered)

    # --- offsets (only ever on the Kafka thread) ----------------------------------------------
    def _commit(self, only: set[TP] | None) -> None:
        assert self.checkpoint is not None
        positions = self.tracker.committable(only)
        if not positions:
            return
        for (t, p), offset in positions.items():
            self.checkpoint.track(t, p, offset - 1)  # the last finished message: the commit moves to `offset`
        try:
            self.checkpoint.commit()
        except KafkaException as exc:
            # E.g. mid-rebalance; the positions stay uncommitted and are tried again.
            self.checkpoint.abort()
            log.warning("offset commit failed: %s", exc)
            return
        self.tracker.mark_committed(positions)

    def _on_revoke(self, _consumer: Consumer, parts: list[TopicPartition]) -> None:
        tps = {(p.topic, p.partition) for p in parts}
        if self.loop is not None and self.loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self._let_go(tps), self.loop)
            try:
                fut.result(timeout=self.settings.action_timeout_s + 15)
            except Exception as exc:
                log.warning("revoked partitions still busy, letting them go: %r", exc)
        self._commit(tps)
        self.tracker.forget(tps)
        if self.checkpoint is not None:
            self.checkpoint.forget(parts)

    def _on_lost(self, _consumer: Consumer, parts: list[TopicPartition]) -> None:
        tps = {(p.topic, p.partition) for p in parts}
        if self.loop is not None and self.loop.is_running() and self.dispatcher is not None:
            asyncio.run_coroutine_threadsafe(self._drop(tps), self.loop).result(timeout=10)
        self.tracker.forget(tps)
        if self.checkpoint is not None:
            self.checkpoint.forget(parts)

    async def _drop(self, tps: set[TP]) -> int:
        assert self.dispatcher is not None
        return self.dispatcher.drop(tps)

    async def _let_go(self, tps: set[TP]) -> None:
        """Revocation: drop what has not started, let what runs finish, wait for its outputs."""
        assert self.dispatcher is not None
        dropped = self.dispatcher.drop(tps)
        dispatcher = self.dispatcher
        await self._wait(lambda: dispatcher.active_in(tps) == 0, self.settings.action_timeout_s + 5)
        await self._wait(lambda: self.tracker.unfinished_in(tps) <= dropped, 5)

    # --- deferred commands --------------------------------------------------------------------
    async def _release_loop(self, stop: threading.Event, producer: Producer) -> None:
        assert self.services is not None
        while not stop.is_set():
            try:
                n = await self.services.db(deferred.release_due, self.engine, producer, self.commands_topic, 1000)
            except Exception:  # the database or Kafka is away: try again later
                log.exception("releasing deferred commands failed")
                n = 0
            if n:
                count(metrics.events_out, "workers", self.commands_topic, "all", n=n)
            if n < 1000:
                await asyncio.sleep(self.settings.deferred_poll_s)
