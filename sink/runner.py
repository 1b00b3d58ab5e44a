"""`wooflow sink`: automation.logs → execution_logs, batched and idempotent.

Rows are keyed by log_id, so a batch re-read after a crash inserts nothing twice (and a
worker re-emitting the log of an already finished command adds nothing). The logs a batch
wrote are counted per rule and day in the same transaction (sink/daily.py). Rows older than
the retention (`--retention-days` or WOOFLOW_EXECUTION_LOG_RETENTION_DAYS) are deleted
at most once an hour.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime, timedelta, timezone

from confluent_kafka import Message
from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert

from wooflow import metrics
from wooflow.checkpointing import Checkpoint, run_batches
from wooflow.db.engine import get_engine
from wooflow.db.tables import execution_logs
from wooflow.dlq import dead_letter
from wooflow.kafka import topics
from wooflow.kafka.config import BATCH
from wooflow.kafka.consumer import make_consumer
from wooflow.kafka.producer import Producer
from wooflow.schemas.codec import DecodeError, get_codec
from wooflow.schemas.types import EXECUTION_LOG, ExecutionLog
from wooflow.settings import Settings
from wooflow.sink import daily

log = logging.getLogger(__name__)


def row_of(rec: ExecutionLog) -> dict[str, object]:
    """An `execution_logs` row."""
    try:
        details = json.loads(rec["details_json"] or "{}")
    except ValueError:
        details = {"raw": rec["details_json"]}
    return {
        "log_id": rec["log_id"], "idempotency_key": rec["idempotency_key"], "store_id": rec["store_id"],
        "customer_key": rec["customer_key"], "rule_id": rec["rule_id"], "event_id": rec["event_id"],
        "step": rec["step"], "action_type": rec["action_type"], "status": rec["status"],
        "message": rec["message"], "attempt": rec["attempt"], "duration_ms": rec["duration_ms"],
        "dry_run": rec["dry_run"], "details": details, "executed_at": rec["executed_at"],
        "received_at": rec["received_at"],
    }


class LogSink:
    def __init__(self, settings: Settings, retention_days: int | None = None) -> None:
        self.settings = settings
        self.codec = get_codec(settings.schema_registry_url)
        self.engine = get_engine(settings.database_url)
        self.producer = Producer(settings, BATCH)
        # --retention-days wins over WOOFLOW_EXECUTION_LOG_RETENTION_DAYS; neither: keep everything.
        self.retention_days = retention_days if retention_days is not None else settings.execution_log_retention_days
        self._last_purge = datetime.min.replace(tzinfo=timezone.utc)
        self.ready = threading.Event()

    def handle(self, batch: list[Message]) -> None:
        rows = []
        for msg in batch:
            try:
                rec = self.codec.decode_as(msg.value() or b"", EXECUTION_LOG, msg.topic())
                rows.append(row_of(rec))
                metrics.events_consumed.labels("sink", msg.topic(), rec["store_id"]).inc()
            except (DecodeError, KeyError) as exc:
                dead_letter(self.producer, self.codec, self.settings, msg, stage="sink", reason="undecodable",
                            error=str(exc))
        if rows:
            t = execution_logs.c
            with self.engine.begin() as conn:
                written = conn.execute(insert(execution_logs).on_conflict_do_nothing(index_elements=["log_id"])
                                       .returning(t.store_id, t.rule_id, t.step, t.action_type, t.status,
                                                  t.executed_at, t.dry_run), rows).all()
                daily.count(conn, written)
            metrics.logs_written.inc(len(rows))
        self.purge()

    def purge(self) -> None:
        """Drop rows older than the retention setting, at most once an hour."""
        if not self.retention_days:
            return
        now = datetime.now(timezone.utc)
        if now - self._last_purge < timedelta(hours=1):
            return
        self._last_purge = now
        with self.engine.begin() as conn:
            n = conn.execute(delete(execution_logs).where(
                execution_logs.c.executed_at < now - timedelta(days=self.retention_days))).rowcount
        if n:
            log.info("purged %d execution logs older than %d days", n, self.retention_days)

    def run(self, stop: threading.Event) -> None:
        consumer = make_consumer(self.settings, self.settings.sink_group, [self.settings.topic(topics.LOGS)])
        checkpoint = Checkpoint(consumer, self.producer, asynchronous=True)
        self.ready.set()
        log.info("log sink running (group %s)", self.settings.sink_group)
        run_batches(consumer, checkpoint, self.handle, stop, batch_size=self.settings.batch_size,
                    timeout=self.settings.batch_timeout_s, on_idle=self.purge,
                    stall_after_s=self.settings.stall_refetch_s)
