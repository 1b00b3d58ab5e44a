"""The consume → handle → checkpoint loop shared by every consuming role."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, Message

from wooflow.checkpointing import Checkpoint

log = logging.getLogger(__name__)

BatchHandler = Callable[[list[Message]], None]


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM (Kubernetes) and SIGINT (Ctrl-C) finish the current batch, then exit."""
    def handler(signum: int, _frame: object) -> None:
        log.info("signal %s: finishing the current batch", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


def run_batches(
    consumer: Consumer,
    checkpoint: Checkpoint,
    handle: BatchHandler,
    stop: threading.Event,
    *,
    batch_size: int,
    timeout: float,
    on_idle: Callable[[], None] | None = None,
) -> None:
    try:
        while not stop.is_set():
            msgs = consumer.consume(batch_size, timeout)
            good: list[Message] = []
            for m in msgs:
                err = m.error()
                if err is None:
                    good.append(m)
                elif err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", err)
            if not good:
                checkpoint.settle()  # nothing new: let the offsets of the last batch catch up
                if on_idle:
                    on_idle()
                continue
            checkpoint.begin()
            try:
                handle(good)
            except BaseException:
                checkpoint.abort()
                raise
            for m in good:
                checkpoint.track(m)
            checkpoint.commit()
    finally:
        try:
            checkpoint.settle()
        except Exception:  # the batch is re-processed after a restart, idempotently
            log.exception("the last batch's state could not be written; its offsets stay uncommitted")
        consumer.close()
