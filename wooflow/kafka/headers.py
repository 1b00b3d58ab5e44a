"""The `store` and `schema` headers of the events on the woo.* topics.

Whoever produces an event sets them (the bridge, backfill, the poller); readers that may
skip an event use them to decide without decoding it: the rule consumer and `wooflow
replay` skip events of stateless schemas (products, coupons) that no rule of the store
listens to. An event without them is decoded, so they are an optimisation, never a
requirement — but every producer of events sets them.
"""

from __future__ import annotations

from confluent_kafka import Message

from wooflow.kafka.topics import SCHEMA_OF_TOPIC
from wooflow.settings import Settings

STORE, SCHEMA = "store", "schema"

EventHeaders = list[tuple[str, str | bytes | None]]


def event_headers(store_id: str, schema: str) -> EventHeaders:
    return [(STORE, store_id.encode()), (SCHEMA, schema.encode())]


class HeaderCache(dict[tuple[str, str], EventHeaders | None]):
    """The headers of an event by `cache[topic, store_id]`, built once per pair: on the
    bridge's hot path a hit is one dict lookup, no Python call (None: not an event topic)."""

    def __init__(self, settings: Settings, max_entries: int = 10_000) -> None:
        super().__init__()
        self.prefix = settings.topic_prefix
        self.max_entries = max_entries

    def __missing__(self, key: tuple[str, str]) -> EventHeaders | None:
        topic, store_id = key
        schema = SCHEMA_OF_TOPIC.get(topic.removeprefix(self.prefix)) if store_id else None
        headers = event_headers(store_id, schema) if store_id and schema else None
        if len(self) < self.max_entries:
            self[key] = headers
        return headers


def read_hint(msg: Message) -> tuple[str | None, str | None]:
    """(store, schema) from an event's headers, or None for each one it lacks."""
    hs = msg.headers()
    if not hs:
        return None, None
    store = schema = None
    for k, v in (hs.items() if isinstance(hs, dict) else hs):
        if k == STORE:
            store = v.decode() if isinstance(v, bytes) else v
        elif k == SCHEMA:
            schema = v.decode() if isinstance(v, bytes) else v
    return store, schema
