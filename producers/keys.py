"""Kafka keys and event ids.

One customer's events must stay on one partition, so keys are `store_id:customer_key`.
Registered customers are `c<id>`; guests are `g<hash of the lowercased billing email>`
until they register. Catalog resources are keyed per resource (`p<id>`, `cp<id>`).

Event ids are derived from content, never from arrival: WooCommerce's Delivery-ID is a
hash of webhook id + the current second, so it changes on a re-send and is shared by two
different deliveries in one second. The id of a change is
`sha256(store | resource | id | kind | date_modified_gmt | body hash)`, which is the
same whether the change arrives by webhook, backfill or the reconciliation poller.
"""

from __future__ import annotations

import hashlib

import orjson

from wooflow.jsontypes import JSONObject


def email_hash(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:24]


def customer_key(customer_id: int | None, email: str | None, *, fallback: str = "") -> str:
    if customer_id:
        return f"c{customer_id}"
    if email and email.strip():
        return f"g{email_hash(email)}"
    return f"anon-{fallback}" if fallback else "anon"


def kafka_key(store_id: str, key: str) -> str:
    return f"{store_id}:{key}"


def event_id(store_id: str, resource: str, resource_id: int | str, version: str) -> str:
    """Stable across re-deliveries and across webhook/REST sources of the same change."""
    raw = f"{store_id}|{resource}|{resource_id}|{version}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


# Fields that differ between the webhook body and a REST read of the same state.
_VOLATILE = frozenset({"_links", "_embedded"})


def body_hash(payload: JSONObject) -> str:
    """Hash of the resource as WooCommerce rendered it (key order and links ignored)."""
    content = payload
    if not _VOLATILE.isdisjoint(payload):
        content = {k: v for k, v in payload.items() if k not in _VOLATILE}
    try:
        data = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # integers beyond 64 bits: rare, slower path
        import json

        data = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(data).hexdigest()[:16]
