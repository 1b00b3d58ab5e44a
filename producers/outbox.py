"""The bridge's PostgreSQL outbox: events made durable while Kafka cannot take them.

While the breaker is open (Kafka unavailable) or the outbox is not empty (`backlog`),
new events are claimed and written here in one transaction and their callers answered
from that commit; events Kafka refused after they were claimed land here too. Once
Kafka answers, `drain_step` produces the oldest rows in `seq` order (one drainer across
bridges, by advisory lock) and deletes the acknowledged prefix; only when the outbox is
empty do new events go straight to Kafka again, so per-key order survives an outage. A
row Kafka will never take (too large, topic gone...) is dead-lettered with its reason
instead of blocking the outbox. The outbox is bounded (`outbox_max_rows`): beyond it
callers get 503.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Engine

from wooflow import dlq, metrics
from wooflow.kafka.delivery import LoopProducer, permanent_error
from wooflow.producers import dedupe
from wooflow.producers.identity import Facts
from wooflow.schemas.codec import Codec
from wooflow.settings import Settings

log = logging.getLogger(__name__)

Row = tuple[str, str, str, str, bytes]  # event id, store, topic, key, value
RunInTransaction = Callable[[Callable[[Connection], Any]], Any]


class Outbox:
    def __init__(self, settings: Settings, engine: Engine, codec: Codec, kafka: LoopProducer,
                 on_refused: Callable[[str], None]) -> None:
        self.settings = settings
        self.engine = engine
        self.codec = codec
        self.kafka = kafka
        self.on_refused = on_refused  # a drain Kafka did not acknowledge: the breaker opens
        self.depth = 0
        self.backlog = False  # new events queue behind the outbox
        self._dconn: Connection | None = None  # the drainer's own (autocommit, advisory lock)

    def has_room(self, n: int) -> bool:
        return self.depth + n <= self.settings.outbox_max_rows

    def claim_into(self, c: Connection, rows: Sequence[Row], facts: Facts) -> set[str]:
        """Claim the events and write the ones claimed (the caller's transaction); their ids."""
        claimed = dedupe.claim(c, [r[0] for r in rows], [r[1] for r in rows], stale_s=self.settings.claim_stale_s,
                               state="done")
        dedupe.outbox_insert(c, [r for r in rows if r[0] in claimed])
        dedupe.remember(c, facts)
        return claimed

    def written(self, n: int) -> None:
        self.backlog = True
        self.depth += n
        metrics.outbox_written.inc(n)
        metrics.outbox_depth.set(self.depth)

    async def keep(self, rows: list[Row]) -> bool:
        """Claimed events Kafka refused: into the outbox, claims marked done. False when
        PostgreSQL failed too (the claims are released, the callers get 503)."""
        def fallback(c: Connection) -> None:
            dedupe.outbox_insert(c, rows)
            dedupe.mark_done(c, [r[0] for r in rows])

        try:
            await asyncio.to_thread(self._in_transaction, fallback)
        except Exception as exc:  # noqa: BLE001 - neither Kafka nor PostgreSQL
            log.error("outbox write failed too: %s", exc)
            try:
                await asyncio.to_thread(self._in_transaction, lambda c: dedupe.release(c, [r[0] for r in rows]))
            except Exception:  # noqa: BLE001 - stale claims are reclaimed after claim_stale_s anyway
                pass
            return False
        self.written(len(rows))
        return True

    def _in_transaction(self, fn: Callable[[Connection], Any]) -> Any:
        with self.engine.begin() as conn:
            return fn(conn)

    async def check_depth(self, run: RunInTransaction) -> None:
        """Rows another bridge wrote during an outage: queue behind them until drained."""
        depth = await asyncio.to_thread(run, dedupe.outbox_depth)
        self.depth = depth
        metrics.outbox_depth.set(depth)
        if depth and not self.backlog:
            log.info("the outbox holds %d events: queueing behind them", depth)
            self.backlog = True

    # --- draining ------------------------------------------------------------------------
    async def drain_step(self) -> bool:
        """Produce the oldest outbox rows; True once the outbox is empty."""
        conn = await asyncio.to_thread(self._drain_conn)
        locked = await asyncio.to_thread(dedupe.try_lock, conn)
        if not locked:
            return False  # another bridge drains; keep queueing behind the outbox
        try:
            rows = await asyncio.to_thread(dedupe.outbox_read, conn, self.settings.outbox_drain_batch)
            if not rows:
                self.depth = 0
                metrics.outbox_depth.set(0)
                return True
            acks = [self.kafka.produce(topic, key, value, store_id) for _, topic, key, value, store_id, _ in rows]
            try:
                results = await asyncio.wait_for(asyncio.gather(*acks, return_exceptions=True),
                                                 self.settings.delivery_timeout_s + 5)
            except TimeoutError:
                results = [a.result() if a.done() and not a.exception() else TimeoutError() for a in acks]
            # Delete the acknowledged prefix only: a failure keeps its row and everything
            # after it, so the next attempt resumes in order.
            ok, dead = [], []
            for row, res in zip(rows, results, strict=True):
                if isinstance(res, BaseException):
                    # Kafka will never take this one (too large, topic gone...): it goes to
                    # the DLQ with its reason instead of blocking the outbox forever.
                    reason = permanent_error(res)
                    if reason is not None and await self._dead_letter(row, reason, str(res)):
                        dead.append(row[0])
                    break
                ok.append(row[0])
            await asyncio.to_thread(dedupe.outbox_delete, conn, ok + dead)
            metrics.outbox_drained.inc(len(ok))
            self.depth = max(0, self.depth - len(ok) - len(dead))
            metrics.outbox_depth.set(self.depth)
            if len(ok) + len(dead) < len(rows):
                self.on_refused("outbox drain not acknowledged")
                return False
            if dead:
                return False
            if len(rows) < self.settings.outbox_drain_batch:
                depth = await asyncio.to_thread(dedupe.outbox_depth, conn)
                self.depth = depth
                metrics.outbox_depth.set(depth)
                return depth == 0
            return False
        finally:
            await asyncio.to_thread(dedupe.unlock, conn)

    async def _dead_letter(self, row: tuple[int, str, str, bytes, str, str], reason: str, error: str) -> bool:
        seq, topic, key, value, store_id, eid = row
        record = dlq.record_of_unsent(stage="bridge", reason=reason, error=error, store_id=store_id, topic=topic,
                                      key=key, value=value, event_id=eid, seq=seq)
        dlq_topic, encoded = dlq.encode(self.codec, self.settings, record)
        try:
            await asyncio.wait_for(self.kafka.produce(dlq_topic, key, encoded), self.settings.delivery_timeout_s + 5)
        except Exception as exc:  # noqa: BLE001 - keep the row; the next drain tries again
            log.error("could not dead-letter outbox row %s: %s", seq, exc)
            return False
        dlq.counted("bridge", reason, f"event {eid} of store {store_id}", error, logging.ERROR)
        return True

    def _drain_conn(self) -> Connection:
        conn = self._dconn
        if conn is None or conn.closed or conn.invalidated:
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            self._dconn = conn
        return conn
