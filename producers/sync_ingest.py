"""The batch way into Kafka for backfill and the poller: the same dedupe store as the
bridge (same content → same event id → produced once, whichever source saw it first),
keyed by person like the bridge's events (identity.py; lookups, facts and claims in one
transaction), claim → produce → flush (acks=all) → mark done, one page at a time. Events
carry the `store`/`schema` headers like the bridge's (wooflow/kafka/headers.py).

While the bridge's outbox holds events (a Kafka outage it is still catching up on), a
page is not produced but written to the outbox behind them, in the claims' transaction:
a state read through REST — an order already completed — must not overtake the earlier
state a webhook delivered into the outbox (the order still processing), or the rule
consumer would take the earlier one for stale and never see the status change. The
bridge notices the rows (it checks the outbox every few seconds) and drains them in
order."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine

from wooflow.kafka.headers import event_headers
from wooflow.kafka.producer import DeliveryFailed, Producer
from wooflow.producers import dedupe
from wooflow.producers.identity import Identities
from wooflow.producers.ingest import OutboxFull
from wooflow.producers.normalise import Event
from wooflow.schemas.codec import Codec
from wooflow.settings import Settings


class SyncIngest:
    def __init__(self, settings: Settings, engine: Engine, codec: Codec, producer: Producer | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.codec = codec
        self.producer = producer or Producer(settings)
        self.identities = Identities()

    def submit(self, events: Sequence[Event]) -> tuple[int, int]:
        """Produce the events not seen before; returns (produced, duplicates)."""
        unique: dict[str, Event] = {}
        for ev in events:
            unique.setdefault(ev.event_id, ev)
        if not unique:
            return 0, len(events)
        with self.engine.begin() as conn:
            need = self.identities.lookup(unique.values())
            if need:
                self.identities.found(dedupe.lookup(conn, need))
            keyed, facts = self.identities.settle(list(unique.values()))
            depth = dedupe.outbox_depth(conn)
            claimed = dedupe.claim(conn, list(unique), [str(e.record["store_id"]) for e in keyed],
                                   stale_s=self.settings.claim_stale_s, state="done" if depth else "pending")
            dedupe.remember(conn, facts)
            fresh = [ev for ev in keyed if ev.event_id in claimed]
            if depth:
                if depth + len(fresh) > self.settings.outbox_max_rows:
                    raise OutboxFull(f"the outbox holds {depth} events: this page waits for it to drain")
                dedupe.outbox_insert(conn, [self._row(ev) for ev in fresh])
        self.identities.committed(facts)
        if depth:
            return len(fresh), len(events) - len(fresh)
        try:
            for ev in fresh:
                topic = self.settings.topic(ev.topic)
                self.producer.produce(topic, self.codec.encode(ev.schema, ev.record, topic), key=ev.key,
                                      headers=event_headers(str(ev.record["store_id"]), ev.schema))
            self.producer.flush(self.settings.delivery_timeout_s * 3)
        except (DeliveryFailed, BaseException):
            # Not durable: give the claims back so the next run (or a webhook) produces them.
            with self.engine.begin() as conn:
                dedupe.release(conn, [e.event_id for e in fresh])
            raise
        with self.engine.begin() as conn:
            dedupe.mark_done(conn, [e.event_id for e in fresh])
        return len(fresh), len(events) - len(fresh)

    def _row(self, ev: Event) -> tuple[str, str, str, str, bytes]:
        topic = self.settings.topic(ev.topic)
        return ev.event_id, str(ev.record["store_id"]), topic, ev.key, self.codec.encode(ev.schema, ev.record, topic)

    def close(self) -> None:
        self.producer.close()
