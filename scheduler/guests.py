"""One person per shopper for the activity tables (carts, storefront activity, calendar,
trigger firings, attributions).

A guest key whose email belongs to a registered customer (the bridge's
`customer_identities`) is applied as that customer's; and the first time a registered
customer's order or customer event carries an email, what its guest key collected before
moves to the customer. (`wooflow/people.py` is the read side of the rule consumer's
merges in `customer_state`; this is the activity reader's own.)
"""

from __future__ import annotations

import re

from sqlalchemy import Connection, text

from wooflow.consumer.merge import email_of, guest_key
from wooflow.consumer.values import Envelope

CUSTOMER_KEY = re.compile(r"^c\d+$")  # a registered customer's key

# A guest's activity becomes the customer's (People.person). The calendar row is folded
# with the customer's own values first — the opposite of scheduler/customer_calendar.py,
# where a newer event's values replace the stored ones.
_LINK_GUEST = [text(q) for q in ("""
UPDATE carts SET customer_key = :ckey, customer_id = COALESCE(customer_id, :cid), updated_at = now()
WHERE store_id = :store AND customer_key = :gkey
""", """
UPDATE storefront_activity SET customer_key = :ckey WHERE store_id = :store AND customer_key = :gkey
""", """
UPDATE attributions SET customer_key = :ckey WHERE store_id = :store AND customer_key = :gkey
""", """
UPDATE trigger_firings t SET customer_key = :ckey
WHERE store_id = :store AND customer_key = :gkey AND NOT EXISTS (
    SELECT 1 FROM trigger_firings x WHERE x.rule_id = t.rule_id AND x.customer_key = :ckey AND x.period = t.period)
""",
# The guest's calendar row folds into the customer's: the same upsert shape as
# customer_calendar.record_customer, with the precedence reversed (the known customer's values win).
"""
INSERT INTO customer_calendar AS k (store_id, customer_key, customer_id, email, first_name, last_name, first_order_at,
                                   last_order_at, last_order_id, birth_month, birth_day, renewal_at, card_expiry)
SELECT store_id, :ckey, :cid, email, first_name, last_name, first_order_at, last_order_at, last_order_id,
       birth_month, birth_day, renewal_at, card_expiry
FROM customer_calendar WHERE store_id = :store AND customer_key = :gkey
ON CONFLICT (store_id, customer_key) DO UPDATE SET
    customer_id = COALESCE(k.customer_id, EXCLUDED.customer_id),
    email = CASE WHEN k.email <> '' THEN k.email ELSE EXCLUDED.email END,
    first_name = CASE WHEN k.first_name <> '' THEN k.first_name ELSE EXCLUDED.first_name END,
    last_name = CASE WHEN k.last_name <> '' THEN k.last_name ELSE EXCLUDED.last_name END,
    first_order_at = LEAST(k.first_order_at, EXCLUDED.first_order_at),
    last_order_id = CASE WHEN k.last_order_at IS NULL OR EXCLUDED.last_order_at > k.last_order_at
                         THEN EXCLUDED.last_order_id ELSE k.last_order_id END,
    last_order_at = GREATEST(k.last_order_at, EXCLUDED.last_order_at),
    birth_month = COALESCE(k.birth_month, EXCLUDED.birth_month),
    birth_day = COALESCE(k.birth_day, EXCLUDED.birth_day),
    renewal_at = COALESCE(k.renewal_at, EXCLUDED.renewal_at),
    card_expiry = COALESCE(k.card_expiry, EXCLUDED.card_expiry),
    updated_at = now()
""", """
DELETE FROM customer_calendar WHERE store_id = :store AND customer_key = :gkey
""")]

_IDENTITIES = text("""
SELECT ci.store_id, ci.email_hash, ci.customer_id FROM customer_identities ci
JOIN unnest(CAST(:stores AS text[]), CAST(:hashes AS text[])) AS u(s, h) ON ci.store_id = u.s AND ci.email_hash = u.h
""")


Link = tuple[str, str, str]  # (store, guest key, customer key) whose past was moved


class People:
    """One person per shopper for the activity tables: guest keys of registered customers,
    and the moves when a customer's guest past shows up. Per process: the customers known
    for guest emails (the bridge's identity map; positive answers only) and the links
    already moved (moving again changes nothing, so a restart only repeats them once)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._owner: dict[tuple[str, str], int] = {}  # (store, email hash) → customer id
        self._linked: set[tuple[str, str, str]] = set()  # (store, guest key, customer key)

    def prepare(self, conn: Connection, events: list[tuple[str, Envelope]]) -> None:
        """One query for the batch: the customers of its guest keys and of its customers' emails."""
        need: set[tuple[str, str]] = set()
        for schema, ev in events:
            store, key = str(ev.get("store_id") or ""), str(ev.get("customer_key") or "")
            gk = key if key[:1] == "g" else self._unlinked(schema, ev, store, key)
            if gk is not None and (store, gk[1:]) not in self._owner:
                need.add((store, gk[1:]))
        if not need:
            return
        if len(self._owner) + len(need) > self.max_entries:
            self._owner.clear()
        pairs = sorted(need)
        for store, h, cid in conn.execute(_IDENTITIES, {"stores": [p[0] for p in pairs],
                                                        "hashes": [p[1] for p in pairs]}):
            self._owner[(store, h)] = int(cid)

    def _unlinked(self, schema: str, ev: Envelope, store: str, key: str) -> str | None:
        """The guest key of a registered customer's email, if its past was not moved yet."""
        if not CUSTOMER_KEY.match(key):
            return None
        email = email_of(schema, ev)
        gk = guest_key(email) if email else None
        return gk if gk is not None and (store, gk, key) not in self._linked else None

    def person(self, conn: Connection, schema: str, ev: Envelope) -> tuple[Envelope, Link | None]:
        """The event as the person's: a guest key of a known customer becomes `c<id>`; a
        customer's first event with an email moves that email's guest past over first.
        Also returns the link to pass to `linked` once the caller's savepoint held."""
        store, key = str(ev.get("store_id") or ""), str(ev.get("customer_key") or "")
        if key[:1] == "g":
            cid = self._owner.get((store, key[1:]))
            return (ev if cid is None else {**ev, "customer_key": f"c{cid}"}), None
        gk = self._unlinked(schema, ev, store, key)
        if gk is None:
            return ev, None
        owner = self._owner.get((store, gk[1:]))
        if owner is None or f"c{owner}" == key:  # an email another account owns stays theirs
            params = {"store": store, "gkey": gk, "ckey": key, "cid": int(key[1:])}
            for q in _LINK_GUEST:
                conn.execute(q, params)
        return ev, (store, gk, key)

    def linked(self, link: Link | None) -> None:
        if link is not None:
            if len(self._linked) > self.max_entries:
                self._linked.clear()
            self._linked.add(link)
