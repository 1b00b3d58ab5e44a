"""The batch way into Kafka for backfill and the poller: the same dedupe store as the
bridge (same content → same event id → produced once, whichever source saw it first),
keyed by person like the bridge's events (identity.py; lookups, facts and claims in one
transaction), claim → produce → flush (acks=all) → mark done, one page at a time. Events
carry the `store`/`schema` headers like the bridge's (wooflow/kafka/headers.py)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine

from wooflow.kafka.headers import event_headers
from wooflow.kafka.producer import DeliveryFailed, Producer
from wooflow.producers import dedupe
from wooflow.producers.identity import Identities
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
            claimed = dedupe.claim(conn, list(unique), [str(e.record["store_id"]) for e in keyed],
                                   stale_s=self.settings.claim_stale_s)
            dedupe.remember(conn, facts)
        self.identities.committed(facts)
        fresh = [ev for ev in keyed if ev.event_id in claimed]
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

    def close(self) -> None:
        self.producer.close()
