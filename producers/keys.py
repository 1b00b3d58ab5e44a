"""Kafka keys and event ids.

One customer's events must stay on one partition, so keys are `store_id:customer_key`.
Registered customers are `c<id>`; guests are `g<hash of the lowercased billing email>`
until they register.
"""

from __future__ import annotations

import hashlib


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
