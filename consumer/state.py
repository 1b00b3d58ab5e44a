"""Per-customer and per-order state, loaded and saved once per consumer batch.

`StateBatch.load` reads every customer and order a batch touches in two queries
(`= ANY`-style joins on unnest), the batch is applied in memory (`consumer/apply.py`),
and `save` writes only what changed with one upsert per table, inside the caller's
transaction. The caller commits that transaction after the batch's commands are
acknowledged and before the Kafka offsets are committed.

Columns owned by actions (tags, `attributes`) are read but never written here; points
are written as increments and tiers only when raised, so worker updates are not lost.
"""

from __future__ import annotations

import orjson
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from wooflow.consumer.values import to_datetime

Agg = dict[str, Any]  # {"n": order count, "t": {currency: Decimal}, "p": points, "f": first ms, "l": last ms, "tier": str}


def empty_agg() -> Agg:
    return {"n": 0, "t": {}, "p": 0, "f": None, "l": None, "tier": ""}


def agg_to_json(a: Agg) -> dict[str, Any]:
    return {**a, "t": {k: str(v) for k, v in a["t"].items()}}


def agg_from_json(d: dict[str, Any] | None) -> Agg:
    if not d:
        return empty_agg()
    return {"n": int(d.get("n") or 0), "t": {k: Decimal(str(v)) for k, v in (d.get("t") or {}).items()},
            "p": int(d.get("p") or 0), "f": d.get("f"), "l": d.get("l"), "tier": d.get("tier") or ""}


@dataclass(slots=True)
class Customer:
    store_id: str
    customer_key: str
    agg: Agg = field(default_factory=empty_agg)
    customer_id: int | None = None
    email: str | None = None
    tags: list[str] = field(default_factory=list)
    view_counts: dict[str, int] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)
    points_delta: int = 0
    tier_raised: bool = False
    dirty: bool = False

    def public(self) -> dict[str, Any]:
        """What templates and dry runs see."""
        a = self.agg
        return {"customer_key": self.customer_key, "customer_id": self.customer_id, "email": self.email,
                "order_count": a["n"], "totals": {k: str(v) for k, v in a["t"].items()}, "points": a["p"],
                "tier": a["tier"], "tags": list(self.tags), "first_order_at": to_datetime(a["f"]),
                "last_order_at": to_datetime(a["l"])}


@dataclass(slots=True)
class Order:
    store_id: str
    order_id: int
    customer_key: str
    first_event_id: str
    status: str = ""
    modified_ms: int = 0
    transitions: list[list[str]] = field(default_factory=list)
    total: Decimal = Decimal(0)
    currency: str = ""
    created_ms: int = 0
    counted: bool = False
    count_event_id: str | None = None
    before: dict[str, Any] | None = None
    dirty: bool = False


@dataclass(slots=True)
class Firing:
    rule_id: int
    customer_key: str
    store_id: str
    first_event_id: str
    last_event_id: str
    last_fired_ms: int
    fired: int = 1
    dirty: bool = False


_LOAD_CUSTOMERS = ("""
SELECT c.store_id, c.customer_key, c.customer_id, c.email, c.order_count, c.totals,
       (extract(epoch from c.first_order_at) * 1000)::bigint AS f, (extract(epoch from c.last_order_at) * 1000)::bigint AS l,
       c.tier, c.points, c.tags, c.view_counts, c.engine
FROM customer_state c
JOIN unnest(CAST(%(stores)s AS text[]), CAST(%(keys)s AS text[])) AS u(s, k) ON c.store_id = u.s AND c.customer_key = u.k
""")

_LOAD_ORDERS = ("""
SELECT o.store_id, o.order_id, o.customer_key, o.first_event_id, o.status, o.modified_ms, o.transitions, o.total,
       o.currency, o.created_ms, o.counted, o.count_event_id, o.before
FROM order_state o
JOIN unnest(CAST(%(stores)s AS text[]), CAST(%(ids)s AS bigint[])) AS u(s, i) ON o.store_id = u.s AND o.order_id = u.i
""")

_LOAD_FIRINGS = ("""
SELECT f.rule_id, f.customer_key, f.store_id, f.first_event_id, f.last_event_id,
       (extract(epoch from f.last_fired_at) * 1000)::bigint, f.fired
FROM rule_firings f
JOIN unnest(CAST(%(rules)s AS bigint[]), CAST(%(keys)s AS text[])) AS u(r, k) ON f.rule_id = u.r AND f.customer_key = u.k
""")

_SAVE_CUSTOMERS = ("""
INSERT INTO customer_state AS c (store_id, customer_key, customer_id, email, order_count, totals, first_order_at,
                                 last_order_at, tier, points, view_counts, engine, updated_at)
SELECT s, k, ci, em, n, CAST(t AS jsonb), to_timestamp(f / 1000.0), to_timestamp(l / 1000.0), tier, pd,
       CAST(vc AS jsonb), CAST(en AS jsonb), now()
FROM unnest(CAST(%(s)s AS text[]), CAST(%(k)s AS text[]), CAST(%(ci)s AS bigint[]), CAST(%(em)s AS text[]), CAST(%(n)s AS int[]),
            CAST(%(t)s AS text[]), CAST(%(f)s AS bigint[]), CAST(%(l)s AS bigint[]), CAST(%(tier)s AS text[]),
            CAST(%(pd)s AS bigint[]), CAST(%(vc)s AS text[]), CAST(%(en)s AS text[]))
     AS u(s, k, ci, em, n, t, f, l, tier, pd, vc, en)
ON CONFLICT (store_id, customer_key) DO UPDATE SET
    customer_id = COALESCE(EXCLUDED.customer_id, c.customer_id),
    email = COALESCE(EXCLUDED.email, c.email),
    order_count = EXCLUDED.order_count, totals = EXCLUDED.totals,
    first_order_at = EXCLUDED.first_order_at, last_order_at = EXCLUDED.last_order_at,
    tier = CASE WHEN EXCLUDED.tier <> '' THEN EXCLUDED.tier ELSE c.tier END,
    points = c.points + EXCLUDED.points,
    view_counts = EXCLUDED.view_counts, engine = EXCLUDED.engine, updated_at = now()
""")

_SAVE_ORDERS = ("""
INSERT INTO order_state AS o (store_id, order_id, customer_key, first_event_id, status, modified_ms, transitions,
                              total, currency, created_ms, counted, count_event_id, before, updated_at)
SELECT s, i, k, fe, st, m, CAST(tr AS jsonb), tot, cur, cr, cnt, ce, CAST(bf AS jsonb), now()
FROM unnest(CAST(%(s)s AS text[]), CAST(%(i)s AS bigint[]), CAST(%(k)s AS text[]), CAST(%(fe)s AS text[]), CAST(%(st)s AS text[]),
            CAST(%(m)s AS bigint[]), CAST(%(tr)s AS text[]), CAST(%(tot)s AS numeric[]), CAST(%(cur)s AS text[]),
            CAST(%(cr)s AS bigint[]), CAST(%(cnt)s AS boolean[]), CAST(%(ce)s AS text[]), CAST(%(bf)s AS text[]))
     AS u(s, i, k, fe, st, m, tr, tot, cur, cr, cnt, ce, bf)
ON CONFLICT (store_id, order_id) DO UPDATE SET
    customer_key = EXCLUDED.customer_key, status = EXCLUDED.status, modified_ms = EXCLUDED.modified_ms,
    transitions = EXCLUDED.transitions, total = EXCLUDED.total, currency = EXCLUDED.currency,
    counted = EXCLUDED.counted, count_event_id = EXCLUDED.count_event_id, before = EXCLUDED.before, updated_at = now()
""")

_SAVE_FIRINGS = ("""
INSERT INTO rule_firings AS f (rule_id, customer_key, store_id, first_event_id, last_event_id, last_fired_at, fired)
SELECT r, k, s, fe, le, to_timestamp(t / 1000.0), n
FROM unnest(CAST(%(r)s AS bigint[]), CAST(%(k)s AS text[]), CAST(%(s)s AS text[]), CAST(%(fe)s AS text[]), CAST(%(le)s AS text[]),
            CAST(%(t)s AS bigint[]), CAST(%(n)s AS int[])) AS u(r, k, s, fe, le, t, n)
WHERE EXISTS (SELECT 1 FROM rules WHERE rules.id = u.r)
ON CONFLICT (rule_id, customer_key) DO UPDATE SET
    last_event_id = EXCLUDED.last_event_id, last_fired_at = EXCLUDED.last_fired_at, fired = EXCLUDED.fired
""")


def _dumps(v: Any) -> str:
    return orjson.dumps(v).decode()


def _cursor(conn: Connection) -> Any:
    """The psycopg cursor under a SQLAlchemy connection: these statements run once per batch
    with thousands of array elements, where SQLAlchemy's parameter processing would cost
    more than the database does."""
    return conn.connection.driver_connection.cursor()  # type: ignore[union-attr]


class StateBatch:
    """The state one batch reads and writes."""

    def __init__(self) -> None:
        self.customers: dict[tuple[str, str], Customer] = {}
        self.orders: dict[tuple[str, int], Order] = {}
        self.firings: dict[tuple[int, str], Firing] = {}

    # --- reading ---------------------------------------------------------------------
    def load(self, conn: Connection, customers: set[tuple[str, str]], orders: set[tuple[str, int]]) -> None:
        cur = _cursor(conn)
        if customers:
            ss, ks = zip(*customers)
            cur.execute(_LOAD_CUSTOMERS, {"stores": list(ss), "keys": list(ks)})
            for (store, key, cid, email, n, totals, f, last, tier, points, tags, views, engine) in cur.fetchall():
                agg = {"n": n, "t": {k: Decimal(str(v)) for k, v in (totals or {}).items()}, "p": int(points),
                       "f": f, "l": last, "tier": tier}
                self.customers[(store, key)] = Customer(store, key, agg, cid, email, list(tags or []),
                                                        dict(views or {}), dict(engine or {}))
            for key in customers:
                if key not in self.customers:
                    self.customers[key] = Customer(key[0], key[1])
        if orders:
            ss, ids = zip(*orders)
            cur.execute(_LOAD_ORDERS, {"stores": list(ss), "ids": list(ids)})
            for r in cur.fetchall():
                self.orders[(r[0], r[1])] = Order(r[0], r[1], r[2], r[3], r[4], r[5], list(r[6] or []), Decimal(r[7]),
                                                  r[8], r[9], r[10], r[11], r[12])

    def load_firings(self, conn: Connection, pairs: set[tuple[int, str]]) -> None:
        pairs = {p for p in pairs if p not in self.firings}
        if not pairs:
            return
        rs, ks = zip(*pairs)
        cur = _cursor(conn)
        cur.execute(_LOAD_FIRINGS, {"rules": list(rs), "keys": list(ks)})
        for r in cur.fetchall():
            self.firings[(r[0], r[1])] = Firing(r[0], r[1], r[2], r[3], r[4], int(r[5]), r[6])

    def customer(self, store_id: str, key: str) -> Customer:
        c = self.customers.get((store_id, key))
        if c is None:  # not announced to load(): a fresh customer
            c = self.customers[(store_id, key)] = Customer(store_id, key)
        return c

    # --- writing ---------------------------------------------------------------------
    def dirty_counts(self) -> tuple[int, int, int]:
        return (sum(1 for c in self.customers.values() if c.dirty), sum(1 for o in self.orders.values() if o.dirty),
                sum(1 for f in self.firings.values() if f.dirty))

    def save(self, conn: Connection) -> None:
        cur = _cursor(conn)
        cs = [c for c in self.customers.values() if c.dirty]
        if cs:
            cur.execute(_SAVE_CUSTOMERS, {
                "s": [c.store_id for c in cs], "k": [c.customer_key for c in cs],
                "ci": [c.customer_id for c in cs], "em": [c.email for c in cs],
                "n": [c.agg["n"] for c in cs],
                "t": [_dumps({k: str(v) for k, v in c.agg["t"].items()}) for c in cs],
                "f": [c.agg["f"] for c in cs], "l": [c.agg["l"] for c in cs],
                "tier": [c.agg["tier"] if c.tier_raised else "" for c in cs],
                "pd": [c.points_delta for c in cs],
                "vc": [_dumps(c.view_counts) for c in cs], "en": [_dumps(c.engine) for c in cs],
            })
        os_ = [o for o in self.orders.values() if o.dirty]
        if os_:
            cur.execute(_SAVE_ORDERS, {
                "s": [o.store_id for o in os_], "i": [o.order_id for o in os_], "k": [o.customer_key for o in os_],
                "fe": [o.first_event_id for o in os_], "st": [o.status for o in os_],
                "m": [o.modified_ms for o in os_], "tr": [_dumps(o.transitions) for o in os_],
                "tot": [o.total for o in os_], "cur": [o.currency for o in os_], "cr": [o.created_ms for o in os_],
                "cnt": [o.counted for o in os_], "ce": [o.count_event_id for o in os_],
                "bf": [_dumps(o.before) if o.before is not None else None for o in os_],
            })
        fs = [f for f in self.firings.values() if f.dirty]
        if fs:
            cur.execute(_SAVE_FIRINGS, {
                "r": [f.rule_id for f in fs], "k": [f.customer_key for f in fs], "s": [f.store_id for f in fs],
                "fe": [f.first_event_id for f in fs], "le": [f.last_event_id for f in fs],
                "t": [f.last_fired_ms for f in fs], "n": [f.fired for f in fs],
            })
