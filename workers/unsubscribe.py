"""Signed unsubscribe links: who, which store, which channel — unforgeable, no database row.

A token is `base64url(payload).base64url(HMAC-SHA256(key, payload))`. The key is derived
from `WOOFLOW_UNSUBSCRIBE_SECRET` when set, else it is the store's own `link_key` (each
tenant's links signed with a different key, no extra secret to share between the workers
and the API). It is not the webhook secret: rotating that must not break the links in
messages already sent. The API's unsubscribe route (wooflow/api/consent.py)
verifies the token and records the withdrawal in the consents table.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

from wooflow.engagement import b64, unb64
from wooflow.jsontypes import JSONObject
from wooflow.settings import Settings
from wooflow.stores import Store


class BadToken(ValueError):
    pass


def signing_key(settings: Settings, store: Store) -> bytes:
    if settings.unsubscribe_secret is not None:
        base = settings.unsubscribe_secret.get_secret_value().encode()
        return hmac.new(base, f"unsubscribe|{store.id}".encode(), hashlib.sha256).digest()
    if not store.link_key:  # a Store built in memory: its key exists only in its row
        raise ValueError(f"store {store.id!r} has no link key: read the store from the database")
    return bytes.fromhex(store.link_key)


def make_token(settings: Settings, store: Store, *, email: str | None, customer_key: str | None,
               channel: str = "email", rule_id: int | None = None) -> str:
    payload = json.dumps({"s": store.id, "e": email, "k": customer_key, "c": channel, "r": rule_id,
                          "t": int(time.time())}, separators=(",", ":")).encode()
    sig = hmac.new(signing_key(settings, store), payload, hashlib.sha256).digest()[:20]
    return f"{b64(payload)}.{b64(sig)}"


def store_of(token: str) -> str:
    """The store a token claims to belong to (unverified: only to find the key)."""
    try:
        return str(json.loads(unb64(token.split(".", 1)[0]))["s"])
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise BadToken("malformed unsubscribe token") from exc


def verify(settings: Settings, store: Store, token: str) -> JSONObject:
    try:
        body, sig = token.split(".", 1)
        payload = unb64(body)
        given = unb64(sig)
    except ValueError as exc:
        raise BadToken("malformed unsubscribe token") from exc
    expected = hmac.new(signing_key(settings, store), payload, hashlib.sha256).digest()[:20]
    if not hmac.compare_digest(given, expected):
        raise BadToken("invalid unsubscribe token signature")
    try:
        data = json.loads(payload)
    except ValueError as exc:
        raise BadToken("malformed unsubscribe token") from exc
    if not isinstance(data, dict) or data.get("s") != store.id:
        raise BadToken("token is for another store")
    return data


def unsubscribe_url(settings: Settings, token: str) -> str:
    return f"{settings.public_base_url.rstrip('/')}/unsubscribe/{token}"
