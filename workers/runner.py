"""`wooflow workers`: the action worker process.

Consumes automation.commands, executes each batch concurrently (async I/O), produces
one execution log per command to automation.logs (and failures to automation.dlq), and
commits offsets through wooflow.checkpointing once those are acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from confluent_kafka import Message

from wooflow import metrics
from wooflow.checkpointing import Checkpoint
from wooflow.db.engine import get_engine
from wooflow.dlq import dead_letter
from wooflow.kafka import topics
from wooflow.kafka.consumer import make_consumer
from wooflow.kafka.loop import run_batches
from wooflow.kafka.producer import Producer
from wooflow.schemas.codec import DecodeError, get_codec
from wooflow.settings import Settings
from wooflow.stores import StoreCache
from wooflow.workers.executor import Executor
from wooflow.workers.woo_client import WooClients

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.codec = get_codec(settings.schema_registry_url)
        self.engine = get_engine(settings.database_url, pool_size=10)
        self.producer = Producer(settings, **{"message.timeout.ms": 300000})
        self.loop = asyncio.new_event_loop()
        self.clients = WooClients(timeout=settings.action_timeout_s)
        self.executor: Executor | None = None
        self.logs_topic = settings.topic(topics.LOGS)
        self.ready = threading.Event()

    def handle(self, batch: list[Message]) -> None:
        commands, sources = [], []
        for msg in batch:
            try:
                schema, cmd = self.codec.decode(msg.value() or b"", msg.topic())
                if schema != "ActionCommand":
                    raise DecodeError(f"expected ActionCommand, got {schema}")
            except DecodeError as exc:
                dead_letter(self.producer, self.codec, self.settings, msg, stage="workers", reason="undecodable",
                            error=str(exc))
                continue
            metrics.events_consumed.labels("workers", msg.topic(), cmd["store_id"]).inc()
            commands.append(cmd)
            sources.append(msg)
        assert self.executor is not None
        outcomes = self.loop.run_until_complete(self.executor.run_batch(commands))
        by_key = {m_cmd["idempotency_key"]: m for m_cmd, m in zip(commands, sources)}
        for o in outcomes:
            if o.log is not None:
                self.producer.produce(self.logs_topic, self.codec.encode("ExecutionLog", o.log, self.logs_topic),
                                      key=f"{o.cmd['store_id']}:{o.cmd['customer_key']}")
            if o.dlq_reason:
                dead_letter(self.producer, self.codec, self.settings, by_key[o.cmd["idempotency_key"]], stage="workers",
                            reason=o.dlq_reason, error=o.log["message"] if o.log else "", store_id=o.cmd["store_id"],
                            attempts=int(o.log["attempt"]) if o.log else 1)

    def run(self, stop: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.executor = Executor(self.settings, self.engine, StoreCache(self.engine, self.settings.store_cache_ttl_s),
                                 self.clients)
        consumer = make_consumer(self.settings, self.settings.workers_group, [self.settings.topic(topics.COMMANDS)])
        checkpoint = Checkpoint(consumer, self.producer)
        self.ready.set()
        log.info("worker running (group %s)", self.settings.workers_group)
        try:
            run_batches(consumer, checkpoint, self.handle, stop, batch_size=self.settings.batch_size,
                        timeout=self.settings.batch_timeout_s)
        finally:
            self.loop.run_until_complete(self.clients.aclose())
