"""One person per shopper, decided in the bridge before events enter Kafka.

Keys keep one customer's events on one partition: a registered customer is `c<id>`, a
guest `g<hash of the email>`. Two tables let one person keep one key:

- `customer_identities` (store, email hash → customer id), learned from customer
  resources (the account's email: source `account`, authoritative) and from orders of
  registered customers that carry a billing email (source `order`, recorded only where no
  account claims the email). A guest order whose billing email belongs to a registered
  customer is keyed `c<id>`: a registered customer who checks out as a guest stays
  themselves.
- `order_owners` (store, order id → customer key): the key each order's events were
  produced with. An `order.deleted` delivery (`{"id": N}` only) and an action whose REST
  read-back failed carry no customer: they take the owner's key, so they land on the
  partition of that customer's earlier events. Only an order the bridge never saw falls
  back: to the key of its REST state when there is one (a trashed order is still
  readable), else `anon-o<N>`.

Cost on the webhook path: events that need no lookup (orders of registered customers,
everything but orders) are keyed as normalised; guest orders and orders without content
are looked up for a whole ingest batch in one query, and answers are cached in process —
positive ones only, since any guest email may be registered at any moment through another
bridge process. What a batch teaches (`Facts`) is written in the same statement as its
dedupe claim (`dedupe.py`), so it is durable before the 2xx, like the claim. Its
identities and owners are cached once written; a process therefore learns a changed
account email from its own traffic at once and from other processes' when its entry turns
over (the cache is cleared when full).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from wooflow.producers.keys import email_hash, kafka_key
from wooflow.producers.normalise import Event, EventRecord

ACCOUNT, ORDER = "account", "order"


@dataclass(slots=True)
class Lookup:
    """What one batch asks the database: guest emails and orders without content."""

    emails: set[tuple[str, str]] = field(default_factory=set)  # (store, email hash)
    orders: set[tuple[str, int]] = field(default_factory=set)  # (store, order id)

    def __bool__(self) -> bool:
        return bool(self.emails or self.orders)

    def params(self) -> dict[str, list[Any]]:
        emails, orders = sorted(self.emails), sorted(self.orders)
        return {"es": [s for s, _ in emails], "eh": [h for _, h in emails],
                "os": [s for s, _ in orders], "oi": [i for _, i in orders]}


@dataclass(slots=True)
class Found:
    """The database's answers: (store, email hash) → customer id, (store, order id) → key."""

    identities: dict[tuple[str, str], int] = field(default_factory=dict)
    owners: dict[tuple[str, int], str] = field(default_factory=dict)

    @classmethod
    def of_rows(cls, rows: Iterable[Sequence[Any]]) -> Found:
        """Rows of `dedupe.LOOKUP`: ('i', store, email hash, id) or ('o', store, order id, key)."""
        found = cls()
        for kind, store, a, b in rows:
            if kind == "i":
                found.identities[(store, a)] = int(b)
            else:
                found.owners[(store, int(a))] = b
        return found


@dataclass(slots=True)
class Facts:
    """What one batch teaches, written with its claim (each key once: one statement must
    not upsert a row twice)."""

    identities: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)  # → (customer id, source)
    owners: dict[tuple[str, int], str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.identities or self.owners)

    def params(self) -> dict[str, list[Any]]:
        ids = list(self.identities.items())
        owners = list(self.owners.items())
        return {"is": [s for (s, _), _ in ids], "ih": [h for (_, h), _ in ids],
                "ic": [c for _, (c, _) in ids], "isrc": [src for _, (_, src) in ids],
                "os": [s for (s, _), _ in owners], "oi": [i for (_, i), _ in owners],
                "ok": [k for _, k in owners]}


NO_FACTS = Facts()


def rekeyed(ev: Event, key: str) -> Event:
    """The same event under another customer key (value and Kafka key)."""
    record = {**ev.record, "customer_key": key}
    # the same record of the same schema, its customer key replaced
    return Event(ev.topic, kafka_key(ev.record["store_id"], key), ev.schema, cast(EventRecord, record))


class Identities:
    """The bridge's identity rules and their in-process cache (one per process; used from
    the event loop's ingest pipeline, the storefront handler and the CLI roles' batches)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._ids: dict[tuple[str, str], int] = {}       # email → customer, as the database has it
        self._taught: dict[tuple[str, str], int] = {}    # billing emails this process wrote
        self._owners: dict[tuple[str, int], str] = {}

    # --- what a batch needs --------------------------------------------------------------
    def lookup(self, events: Iterable[Event]) -> Lookup:
        need = Lookup()
        for ev in events:
            rec = ev.order_event()
            if rec is None:
                continue
            store = rec["store_id"]
            if rec["order"] is None and (store, rec["order_id"]) not in self._owners:
                need.orders.add((store, rec["order_id"]))
            key = rec["customer_key"]
            if key[0] == "g" and (store, key[1:]) not in self._ids:
                need.emails.add((store, key[1:]))
        return need

    def found(self, found: Found) -> None:
        self._fit(self._ids, len(found.identities))
        self._ids.update(found.identities)
        self._fit(self._owners, len(found.owners))
        self._owners.update(found.owners)

    # --- keying --------------------------------------------------------------------------
    def settle(self, events: Sequence[Event]) -> tuple[list[Event], Facts]:
        """The events keyed by person, in order (an event may use what an earlier one of
        the batch taught), and the facts to write with their claim. Call after `found`
        answered `lookup(events)`; call `committed(facts)` once they are written."""
        facts = Facts()
        out: list[Event] = []
        for ev in events:
            if ev.schema == "OrderEvent":
                ev = self._order(ev, facts)
            elif ev.schema == "CustomerEvent":
                self._customer(ev, facts)
            out.append(ev)
        return out, facts

    def _customer(self, ev: Event, facts: Facts) -> None:
        rec = ev.customer_event()
        c = rec["customer"] if rec is not None else None
        if rec is not None and c and c["id"] and c["email"]:
            self._teach(facts, rec["store_id"], email_hash(c["email"]), c["id"], ACCOUNT)

    def _order(self, ev: Event, facts: Facts) -> Event:
        rec = ev.order_event()
        if rec is None:
            return ev
        store, oid, key = rec["store_id"], rec["order_id"], rec["customer_key"]
        o = rec["order"]
        if o is None:
            owner = facts.owners.get((store, oid)) or self._owners.get((store, oid))
            if owner is not None:
                key = owner
        elif o["customer_id"] > 0 and o["billing"]["email"]:
            self._teach(facts, store, email_hash(o["billing"]["email"]), int(o["customer_id"]), ORDER)
        if key[0] == "g":
            cid = self._customer_of(facts, store, key[1:])
            if cid is not None:
                key = f"c{cid}"
        if self._owners.get((store, oid)) != key:
            facts.owners[(store, oid)] = key
        return ev if key == rec["customer_key"] else rekeyed(ev, key)

    def _customer_of(self, facts: Facts, store: str, h: str) -> int | None:
        taught = facts.identities.get((store, h))
        if taught is not None and taught[1] == ACCOUNT:
            return taught[0]
        known = self._ids.get((store, h))
        if known is not None:
            return known
        return taught[0] if taught is not None else None

    def _teach(self, facts: Facts, store: str, h: str, cid: int, source: str) -> None:
        k = (store, h)
        if source == ACCOUNT:
            if self._ids.get(k) != cid or self._taught.get(k) is not None:
                facts.identities[k] = (cid, ACCOUNT)
        elif k not in self._ids and k not in self._taught and k not in facts.identities:
            facts.identities[k] = (cid, ORDER)

    def committed(self, facts: Facts) -> None:
        """The facts are in the database: remember them. A billing email is not taken as
        the truth (an account elsewhere may own it): only that it need not be written again."""
        if not facts:
            return
        self._fit(self._owners, len(facts.owners))
        self._owners.update(facts.owners)
        self._fit(self._ids, len(facts.identities))
        self._fit(self._taught, len(facts.identities))
        for k, (cid, source) in facts.identities.items():
            if source == ACCOUNT:
                self._ids[k] = cid
                self._taught.pop(k, None)
            else:
                self._taught[k] = cid

    def customer_key(self, store: str, guest_key: str) -> str | None:
        """`c<id>` for a guest key whose email is known to belong to a customer (cache only)."""
        cid = self._ids.get((store, guest_key[1:])) if guest_key[:1] == "g" else None
        return None if cid is None else f"c{cid}"

    def _fit(self, cache: dict[Any, Any], incoming: int) -> None:
        if len(cache) + incoming > self.max_entries:
            cache.clear()
