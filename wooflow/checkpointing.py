"""The commit boundary. This is the one place that decides when consumer offsets move.

Invariant: an input offset is committed only after every output produced while
processing it (commands, logs, DLQ records) has been acknowledged by Kafka with
acks=all — or, in transactional mode, atomically with those outputs. A crash at any
point therefore re-processes at most the current batch, and the idempotency keys make
that re-processing harmless downstream.

Batches are committed before the next `consume()`, and rebalance callbacks only run
inside `consume()`, so a revoked partition never has uncommitted work in flight.
"""

from __future__ import annotations

import logging

from confluent_kafka import Consumer, Message, TopicPartition

from wooflow.kafka.producer import Producer

log = logging.getLogger(__name__)


class Checkpoint:
    def __init__(self, consumer: Consumer, producer: Producer | None, *, transactional: bool = False,
                 flush_timeout: float = 300.0) -> None:
        self.consumer = consumer
        self.producer = producer
        self.transactional = transactional
        self.flush_timeout = flush_timeout
        self._next: dict[tuple[str, int], int] = {}
        self._in_txn = False
        if transactional:
            assert producer is not None, "transactional mode needs a transactional producer"
            producer.raw.init_transactions(30)

    def begin(self) -> None:
        if self.transactional and not self._in_txn:
            assert self.producer is not None
            self.producer.raw.begin_transaction()
            self._in_txn = True

    def track(self, msg: Message) -> None:
        self._next[(msg.topic(), msg.partition())] = msg.offset() + 1

    def pending(self) -> dict[tuple[str, int], int]:
        return dict(self._next)

    def commit(self) -> None:
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._next.items()]
        if self.transactional:
            assert self.producer is not None
            if offsets:
                self.producer.raw.send_offsets_to_transaction(
                    offsets, self.consumer.consumer_group_metadata(), 30)
            if self._in_txn:
                self.producer.raw.commit_transaction(self.flush_timeout)
                self._in_txn = False
        else:
            if self.producer is not None:
                self.producer.flush(self.flush_timeout)
            if offsets:
                self.consumer.commit(offsets=offsets, asynchronous=False)
        self._next.clear()

    def abort(self) -> None:
        """Drop the batch: its offsets are not committed, so it will be consumed again."""
        if self.transactional and self._in_txn:
            assert self.producer is not None
            self.producer.raw.abort_transaction(30)
            self._in_txn = False
        self._next.clear()

    def forget(self, partitions: list[TopicPartition]) -> None:
        """Partitions lost in a rebalance: their offsets can no longer be committed by us."""
        for p in partitions:
            self._next.pop((p.topic, p.partition), None)
