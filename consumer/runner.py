"""`wooflow rules`: the rule consumer process.

Reads the woo.* topics in one consumer group (scaled by adding processes), matches
rules, produces commands keyed like their events (one customer stays on one partition),
and lets wooflow.checkpointing commit offsets once the commands are acknowledged.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import datetime, timezone

from confluent_kafka import Message

from wooflow import metrics
from wooflow.checkpointing import Checkpoint
from wooflow.consumer.engine import RuleEngine
from wooflow.consumer.rules import RuleCache
from wooflow.db.engine import get_engine
from wooflow.dlq import dead_letter
from wooflow.kafka import topics
from wooflow.kafka.consumer import make_consumer
from wooflow.kafka.loop import run_batches
from wooflow.kafka.producer import Producer
from wooflow.schemas.codec import DecodeError, get_codec
from wooflow.settings import Settings

log = logging.getLogger(__name__)


class RuleConsumer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.codec = get_codec(settings.schema_registry_url)
        self.rules = RuleCache(get_engine(settings.database_url))
        self.engine = RuleEngine(self.rules)
        txn_id = f"wooflow-rules-{socket.gethostname()}-{os.getpid()}" if settings.transactional else None
        # Batch roles wait out short broker outages instead of failing the batch.
        self.producer = Producer(settings, transactional_id=txn_id, **{"message.timeout.ms": 300000})
        self.commands_topic = settings.topic(topics.COMMANDS)
        self.ready = threading.Event()

    def handle(self, batch: list[Message]) -> None:
        self.rules.refresh()
        for msg in batch:
            self.handle_one(msg)

    def handle_one(self, msg: Message) -> None:
        value = msg.value()
        try:
            schema, event = self.codec.decode(value or b"", msg.topic())
        except DecodeError as exc:
            dead_letter(self.producer, self.codec, self.settings, msg, stage="rules", reason="undecodable", error=str(exc))
            return
        store = str(event.get("store_id", ""))
        metrics.events_consumed.labels("rules", msg.topic(), store).inc()
        try:
            matches = self.engine.matches(schema, event)
        except Exception as exc:  # a poison event must not stall the partition
            log.exception("evaluation failed")
            dead_letter(self.producer, self.codec, self.settings, msg, stage="rules", reason="evaluation_error",
                        error=f"{type(exc).__name__}: {exc}", store_id=store)
            return
        now = datetime.now(timezone.utc)
        for match in matches:
            for cmd in match.commands:
                self.producer.produce(self.commands_topic, self.codec.encode("ActionCommand", cmd, self.commands_topic),
                                      key=msg.key())
                metrics.commands_emitted.labels(store, cmd["action_type"]).inc()
                if cmd.get("received_at"):
                    metrics.event_to_command_seconds.observe((now - cmd["received_at"]).total_seconds())

    def run(self, stop: threading.Event) -> None:
        self.rules.refresh(force=True)
        consumer = make_consumer(self.settings, self.settings.rules_group,
                                 [self.settings.topic(t) for t in topics.EVENT_TOPICS])
        checkpoint = Checkpoint(consumer, self.producer, transactional=self.settings.transactional)
        self.ready.set()
        started = time.monotonic()
        log.info("rule consumer running (group %s, %d rules)", self.settings.rules_group, len(self.rules))
        run_batches(consumer, checkpoint, self.handle, stop, batch_size=self.settings.batch_size,
                    timeout=self.settings.batch_timeout_s, on_idle=self.rules.refresh)
        log.info("rule consumer stopped after %.0fs", time.monotonic() - started)
