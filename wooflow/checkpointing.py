"""The commit boundary. This is the one place that decides when consumer offsets move.

Invariant: an input offset is committed only after every output produced while
processing it (commands, logs, DLQ records) has been acknowledged by Kafka with
acks=all — or, in transactional mode, atomically with those outputs. A crash at any
point therefore re-processes at most the current batch, and the idempotency keys make
that re-processing harmless downstream.

Batches are committed before the next `consume()` (the batch roles send their offsets
without waiting for the coordinator's answer: `asynchronous`), and rebalance callbacks only
run inside `consume()`, so a revoked partition never has uncommitted work in flight.

`before_commit` is the place for a role's own durable state (the rule consumer's
customer state): it runs after the outputs are acknowledged (or written into the open
transaction) and before the offsets move, so state is never behind committed offsets.

It may also return a Future (the state being written in another thread): then the
batch's offsets wait in `_inflight` and are committed by `settle()` once it resolved —
when the role needs that state again, at the next commit, on idle, on a rebalance and on
close — so the next batch is fetched and decoded while the database writes. At most one
batch is in flight, offsets move in order, and a failed write raises from `settle()` with
the offsets never committed.
(Not in transactional mode: there the state must be written inside the transaction.)

`run_batches` is the consume → handle → checkpoint loop of the batch roles (rules, sink,
the scheduler's activity reader); the workers commit the finished prefix of each
partition through `Checkpoint` from their own loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from wooflow.db.engine import unavailable
from wooflow.kafka.consumer import GroupConsumer, consume_batch
from wooflow.kafka.producer import Producer
from wooflow.kafka.stall import GroupLost, StallGuard

log = logging.getLogger(__name__)

BatchHandler = Callable[[list[Message]], None]

_REBALANCING = (KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID)
# The group coordinator moving or loading (a broker restart), or no broker answering: the
# commit is tried again with the next batch, as during a rebalance.
_COORDINATOR = (KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE,
                KafkaError.NOT_COORDINATOR, KafkaError.REQUEST_TIMED_OUT, KafkaError._TIMED_OUT,
                KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._WAIT_COORD)


class Checkpoint:
    def __init__(self, consumer: Consumer, producer: Producer | None, *, transactional: bool = False,
                 flush_timeout: float = 300.0,
                 before_commit: Callable[[], Future[None] | None] | None = None,
                 asynchronous: bool = False) -> None:
        """`asynchronous`: a batch's offsets are sent to the group coordinator without waiting
        for its answer. For the batch roles a synchronous commit was a broker round trip in
        every batch's path (bench/e2e at 100 events/s: event → command p50 14 ms with it,
        4 ms without). Offsets still go out only after the batch's outputs and state are
        durable, in order, and rebalances still commit synchronously. A commit the
        coordinator refuses for a reason that passes (a rebalance, the coordinator moving:
        its answer comes inside a later `consume()`, `GroupConsumer`) is put off like a
        synchronous one — committed with the next batch, while idle or on revoke — unless a
        later commit of the partition went out since; any other refusal is logged, and the
        partition's next commit, or its new owner re-processing the batch, covers it."""
        self.consumer = consumer
        self.asynchronous = asynchronous
        self.before_commit = before_commit
        self.producer = producer
        self.transactional = transactional
        self.flush_timeout = flush_timeout
        self._next: dict[tuple[str, int], int] = {}
        self._in_txn = False
        self._inflight: tuple[Future[None], list[TopicPartition]] | None = None
        self._retry_at = 0.0
        self._sent: dict[tuple[str, int], int] = {}  # the last offset sent asynchronously, per partition
        if transactional:
            assert producer is not None, "transactional mode needs a transactional producer"
            producer.raw.init_transactions(30)

    def begin(self) -> None:
        if self.transactional and not self._in_txn:
            assert self.producer is not None
            self.producer.raw.begin_transaction()
            self._in_txn = True

    def track(self, topic: str, partition: int, offset: int) -> None:
        """The message at `offset` is handled: the next commit moves the partition past it."""
        self._next[(topic, partition)] = offset + 1

    def pending(self) -> dict[tuple[str, int], int]:
        return dict(self._next)

    def commit(self) -> None:
        if self.transactional:
            assert self.producer is not None
            offsets = [TopicPartition(t, p, o) for (t, p), o in self._next.items()]
            if self.before_commit is not None:
                self.producer.flush(self.flush_timeout)
                pending = self.before_commit()
                if pending is not None:
                    pending.result()
            if offsets:
                self.producer.raw.send_offsets_to_transaction(
                    offsets, self.consumer.consumer_group_metadata(), 30)
            if self._in_txn:
                self.producer.raw.commit_transaction(self.flush_timeout)
                self._in_txn = False
            self._next.clear()
            return
        if self.producer is not None:
            self.producer.flush(self.flush_timeout)
        self.settle()
        self._requeue_refused()
        # after settle(): offsets it could not commit (a rebalance) are back in _next
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._next.items()]
        pending = self.before_commit() if self.before_commit is not None else None
        self._next.clear()
        if pending is not None:
            self._inflight = (pending, offsets)
            return
        self._commit_offsets(offsets)

    def settle(self, lost: Iterable[tuple[str, int]] = ()) -> None:
        """Wait for the batch whose state is still being written, then commit its offsets
        (except those of `lost` partitions). Raises what the write raised."""
        inflight, self._inflight = self._inflight, None
        if inflight is None:
            return
        pending, offsets = inflight
        pending.result()
        gone = set(lost)
        self._commit_offsets([tp for tp in offsets if (tp.topic, tp.partition) not in gone])

    def _commit_offsets(self, offsets: list[TopicPartition]) -> None:
        if not offsets:
            return
        try:
            if self.asynchronous:
                self.consumer.commit(offsets=offsets, asynchronous=True)
                self._sent.update(((tp.topic, tp.partition), tp.offset) for tp in offsets)
            else:
                self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if err is not None and (err.code() in _REBALANCING or err.code() in _COORDINATOR):
                # The outputs are durable; only the offsets wait. Keep them and commit with
                # the next batch (or on revoke); if the partition is lost instead, its new
                # owner re-processes the batch, which is idempotent. A newer offset of the
                # same partition, already tracked, supersedes this one.
                log.info("offset commit deferred (%s): %s", "group is rebalancing" if err.code() in _REBALANCING
                         else "the group coordinator is unavailable", err.str())
                for tp in offsets:
                    self._next.setdefault((tp.topic, tp.partition), tp.offset)
                return
            raise

    def _requeue_refused(self) -> None:
        """Put off again what the coordinator refused of the asynchronous commits for a reason
        that passes, for partitions still ours whose later offsets were not sent since."""
        if not isinstance(self.consumer, GroupConsumer):
            return
        refused = self.consumer.take_refused()
        if not refused or not self.asynchronous or self.transactional:
            return
        owned: set[tuple[str, int]] | None = None
        for tp, err in refused:
            key = (tp.topic, tp.partition)
            if err.code() not in _REBALANCING + _COORDINATOR or self._sent.get(key) != tp.offset:
                continue
            if owned is None:
                owned = {(p.topic, p.partition) for p in self.consumer.assignment()}
            if key in owned:
                log.info("offset commit of %s [%d] at %d refused (%s): put off", tp.topic, tp.partition, tp.offset,
                         err.str())
                self._next.setdefault(key, tp.offset)

    def retry_deferred(self) -> None:
        """Idle: commit the offsets an earlier commit had to put off (a rebalance, the
        coordinator away). Without it they wait for the next message — when traffic stops
        right after a rebalance the group's lag stays above 0 and every alert on it fires.
        At most once per `DEFERRED_RETRY_S`."""
        if self.transactional or self._inflight is not None:
            return
        self._requeue_refused()
        if not self._next:
            return
        now = time.monotonic()
        if now < self._retry_at:
            return
        self._retry_at = now + DEFERRED_RETRY_S
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._next.items()]
        self._next.clear()
        self._commit_offsets(offsets)

    def abort(self) -> None:
        """Drop the batch: its offsets are not committed, so it will be consumed again."""
        if self.transactional and self._in_txn:
            assert self.producer is not None
            self.producer.raw.abort_transaction(30)
            self._in_txn = False
        self._next.clear()

    def revoke(self, partitions: list[TopicPartition]) -> None:
        """Partitions revoked in a (cooperative) rebalance: commit what is pending for them
        while we still own them (outputs are already durable: pending offsets here are ones
        whose commit was deferred by an earlier rebalance). If that fails too, forget them:
        the next owner re-processes, idempotently."""
        self.settle()
        self._requeue_refused()
        mine = [TopicPartition(p.topic, p.partition, self._next[(p.topic, p.partition)])
                for p in partitions if (p.topic, p.partition) in self._next]
        if not mine or self.transactional:
            self.forget(partitions)
            return
        try:
            self.consumer.commit(offsets=mine, asynchronous=False)
        except KafkaException as exc:
            log.warning("could not commit revoked partitions, their new owner re-processes: %s", exc)
        self.forget(partitions)

    def forget(self, partitions: list[TopicPartition]) -> None:
        """Partitions lost in a rebalance: their offsets can no longer be committed by us."""
        self.settle(lost=[(p.topic, p.partition) for p in partitions])
        for p in partitions:
            self._next.pop((p.topic, p.partition), None)
            self._sent.pop((p.topic, p.partition), None)


def run_batches(
    consumer: Consumer,
    checkpoint: Checkpoint,
    handle: BatchHandler,
    stop: threading.Event,
    *,
    batch_size: int,
    timeout: float,
    on_idle: Callable[[], None] | None = None,
    on_rewind: Callable[[], None] | None = None,
    stall_after_s: float = 30.0,
) -> None:
    """The batch roles' loop: consume up to `batch_size` (what is there: a batch never
    waits to fill, `consume_batch`), `handle` the batch, commit it
    through `checkpoint` before the next `consume()` (so rebalance callbacks, which run
    inside `consume()`, never meet uncommitted work).

    A batch that fails because PostgreSQL is away (`unavailable`: a restart, a failover)
    is aborted, the consumer goes back to the committed offsets, `on_rewind` lets the role
    forget what it kept of the uncommitted batches, and after a growing pause the same
    messages are read again — in the same process, still a member of its group. Any other
    failure aborts the batch and raises: it is consumed again after the restart.
    Between batches, a partition whose fetch stalled is fetched again (`StallGuard`), and a
    member its group kept out while the brokers answer stops the role (`GroupLost`)."""
    pause = REWIND_FIRST_S
    guard = StallGuard(consumer, stall_after_s)
    close = True
    try:
        while not stop.is_set():
            try:
                _one_batch(consumer, checkpoint, handle, batch_size, timeout, on_idle)
                guard.check()
                pause = REWIND_FIRST_S
            except GroupLost:
                close = False  # leaving the group would wait on the very coordinator that never answers
                raise
            except Exception as exc:
                if not unavailable(exc):
                    raise
                log.warning("PostgreSQL is unavailable (%s): the uncommitted batches are read again in %.1fs",
                            str(exc).splitlines()[0][:200], pause)
                rewind(consumer, checkpoint)
                if on_rewind:
                    on_rewind()
                stop.wait(pause)
                pause = min(pause * 2, REWIND_MAX_S)
    finally:
        try:
            checkpoint.settle()
        except Exception:  # the batch is re-processed after a restart, idempotently
            log.exception("the last batch's state could not be written; its offsets stay uncommitted")
        if close:
            consumer.close()


REWIND_FIRST_S, REWIND_MAX_S = 0.5, 10.0
DEFERRED_RETRY_S = 2.0
REWIND_WAIT_S = 90.0  # how long a rewind waits for the group coordinator (a broker restarting)


def _one_batch(consumer: Consumer, checkpoint: Checkpoint, handle: BatchHandler, batch_size: int, timeout: float,
               on_idle: Callable[[], None] | None) -> None:
    msgs = consume_batch(consumer, batch_size, timeout)
    good: list[Message] = []
    for m in msgs:
        err = m.error()
        if err is None:
            good.append(m)
        elif err.code() != KafkaError._PARTITION_EOF:
            log.warning("consumer error: %s", err)
    if not good:
        checkpoint.settle()  # nothing new: let the offsets of the last batch catch up
        checkpoint.retry_deferred()
        if on_idle:
            on_idle()
        return
    checkpoint.begin()
    try:
        handle(good)
    except BaseException:
        checkpoint.abort()
        raise
    for m in good:
        topic, partition, offset = m.topic(), m.partition(), m.offset()
        assert topic is not None and partition is not None and offset is not None, "not a consumed message"
        checkpoint.track(topic, partition, offset)
    checkpoint.commit()


def rewind(consumer: Consumer, checkpoint: Checkpoint) -> None:
    """Drop every uncommitted batch and read on from the committed offsets, as a restarted
    process would — without leaving the group. A state write still in flight is settled
    first when it can be (its batch then stays done); raises if the committed offsets
    cannot be read (the broker is away too): then the role stops and is restarted."""
    try:
        checkpoint.settle()
    except Exception:  # that batch's state did not make it: it is read again as well
        log.info("the batch whose state was being written is read again")
    checkpoint.abort()
    assigned = consumer.assignment()
    if not assigned:
        return
    deadline = time.monotonic() + REWIND_WAIT_S
    while True:
        try:
            committed = consumer.committed(assigned, timeout=10)
            break
        except KafkaException as exc:  # the broker restarting too: wait for its group coordinator
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if err is None or err.code() not in _COORDINATOR or time.monotonic() > deadline:
                raise
            time.sleep(1.0)
    for tp in committed:
        consumer.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING))
