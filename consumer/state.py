"""Per-customer and per-order state, loaded and saved once per consumer batch.

`StateBatch.load` reads every customer and order a batch touches in two queries
(`= ANY`-style joins on unnest), the batch is applied in memory (`consumer/apply.py`),
and `save` writes only what changed with one upsert per table, inside the caller's
transaction. The caller commits that transaction after the batch's commands are
acknowledged and before the Kafka offsets are committed.

Columns owned by actions (tags, `attributes`) are read but never written here; points
are written as increments and tiers only when raised, so worker updates are not lost.

A guest row folded into a registered customer's (consumer/merge.py) carries `merged_into`:
loading it tells the batch to re-route the guest's events, and saving never writes over
it — a batch whose guest was merged meanwhile gets those keys back from `save` instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

import orjson
from sqlalchemy import Connection

from wooflow import holdout
from wooflow.consumer.history import History
from wooflow.consumer.values import to_datetime
from wooflow.db.engine import driver_cursor
from wooflow.holdout import Exposure
from wooflow.jsontypes import JSONObject, JSONValue, as_object

if TYPE_CHECKING:
    from wooflow.consumer.merge import Merge


@dataclass(slots=True)
class Aggregates:
    """A customer's paid orders in sum: what tiers, triggers and conditions read. Treated as
    a value: changing it means a new one (`apply.combine`), so a `TriggerContext`'s
    before/after stay what they were."""

    order_count: int = 0
    totals: dict[str, Decimal] = field(default_factory=dict)  # currency → spent
    points: int = 0
    first_order_ms: int | None = None  # creation of the first / last counted order (epoch ms)
    last_order_ms: int | None = None
    tier: str = ""
    history: History | None = None  # the counted orders themselves, for stores that keep them (history.py)

    def to_json(self) -> JSONObject:
        """The stored form (`order_state.before`): short keys, decimals as text."""
        out: JSONObject = {"n": self.order_count, "t": {k: str(v) for k, v in self.totals.items()},
                           "p": self.points, "f": self.first_order_ms, "l": self.last_order_ms, "tier": self.tier}
        if self.history is not None:
            out["h"] = self.history.to_json()
        return out

    @classmethod
    def from_json(cls, d: JSONObject | None) -> Aggregates:
        if not d:
            return cls()
        return cls.from_row(_int(d.get("n")), as_object(d.get("t")), _int(d.get("p")), _opt_int(d.get("f")),
                            _opt_int(d.get("l")), str(d.get("tier") or ""), History.from_json(d.get("h")))

    @classmethod
    def from_row(cls, n: int, totals: Mapping[str, object] | None, points: int, first_ms: int | None,
                 last_ms: int | None, tier: str, history: History | None = None) -> Aggregates:
        """From `customer_state`'s columns (totals: JSONB numbers or text)."""
        return cls(n, {k: Decimal(str(v)) for k, v in (totals or {}).items()}, int(points), first_ms, last_ms, tier,
                   history)



def _int(v: JSONValue) -> int:
    return int(v) if isinstance(v, (int, float, str)) and v != "" else 0


def _opt_int(v: JSONValue) -> int | None:
    return int(v) if isinstance(v, (int, float)) else None


class Bookkeeping(TypedDict, total=False):
    """`customer_state.engine`: what the rule consumer remembers to stay replay-safe."""

    created_event: str  # the customer.created event that first saw the customer
    views: list[int | list[str]]  # [event time ms, storefront event ids]: view counting, no longer written
    g: list[str]  # guest keys already folded into (or checked for) this customer (merge.py)


@dataclass(slots=True)
class Customer:
    store_id: str
    customer_key: str
    agg: Aggregates = field(default_factory=Aggregates)
    customer_id: int | None = None
    email: str | None = None
    tags: list[str] = field(default_factory=list)
    view_counts: dict[str, int] = field(default_factory=dict)
    engine: Bookkeeping = field(default_factory=Bookkeeping)
    points_delta: int = 0
    tier_raised: bool = False
    dirty: bool = False
    merged_into: str | None = None  # a guest folded into this registered customer
    role: str | None = None  # the account's role (customer events); None: not known

    def public(self) -> PublicCustomer:
        """What templates and dry runs see."""
        a = self.agg
        return {"customer_key": self.customer_key, "customer_id": self.customer_id, "email": self.email,
                "role": self.role,
                "order_count": a.order_count, "totals": {k: str(v) for k, v in a.totals.items()},
                "points": a.points, "tier": a.tier, "tags": list(self.tags),
                "first_order_at": to_datetime(a.first_order_ms), "last_order_at": to_datetime(a.last_order_ms)}


class PublicCustomer(TypedDict):
    """A customer's state as templates (`customer_state`) and dry runs see it."""

    customer_key: str
    customer_id: int | None
    email: str | None
    role: str | None
    order_count: int
    totals: dict[str, str]  # currency → spent, as text
    points: int
    tier: str
    tags: list[str]
    first_order_at: datetime | None
    last_order_at: datetime | None


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
    before: JSONObject | None = None  # the customer's aggregates before (un)counting it (Aggregates.to_json)
    dirty: bool = False
    first_sight_only: bool = False  # a new row of a store keeping first sights only: inserted narrow
    # decided once per order (apply.py): "paid" → the event that first saw date_paid ("": paid before
    # wooflow kept marks); "rf" → total refunded as text; "rt" → [event id, refunded before, after]
    marks: dict[str, JSONValue] = field(default_factory=dict)


@dataclass(slots=True)
class Sub:
    """A subscription as the rule consumer last applied it (`subscription_state`)."""

    store_id: str
    subscription_id: int
    customer_key: str
    first_event_id: str
    status: str = ""
    modified_ms: int = 0
    transitions: list[list[str]] = field(default_factory=list)  # [event id, from, to], the last few
    email: str = ""
    product_ids: list[int] = field(default_factory=list)
    billing_period: str = ""
    billing_interval: int = 1
    total: Decimal = Decimal(0)
    currency: str = ""
    next_payment_ms: int | None = None
    trial_end_ms: int | None = None
    end_ms: int | None = None
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


# `x` is the row version (xmin) a cached copy was read or written at, NULL if none: rows
# whose version is still x are not sent again; rows that vanished come back as NULLs.
# Each key is looked up through a LATERAL subquery with LIMIT 1, which the planner cannot
# flatten into a join: as a plain join of ~2,000 keys it chose a hash join over a sequential
# scan of the whole table (150-190 ms per batch at 100,000 orders, growing with the table)
# where the primary-key probes take ~20 ms whatever its size (EXPLAIN ANALYZE, docs/benchmarks.md).
_LOAD_CUSTOMERS = ("""
SELECT u.s, u.k, c.xmin::text, c.customer_id, c.email, c.order_count, c.totals,
       (extract(epoch from c.first_order_at) * 1000)::bigint AS f,
       (extract(epoch from c.last_order_at) * 1000)::bigint AS l,
       c.tier, c.points, c.tags, c.view_counts, c.engine, c.merged_into, c.role, c.history
FROM unnest(CAST(%(stores)b AS text[]), CAST(%(keys)b AS text[]), CAST(%(xs)b AS text[])) AS u(s, k, x)
LEFT JOIN LATERAL (SELECT *, xmin FROM customer_state c WHERE c.store_id = u.s AND c.customer_key = u.k LIMIT 1) c
  ON true
WHERE u.x IS NULL OR c.xmin IS NULL OR c.xmin::text <> u.x
""")

_LOAD_ORDERS = ("""
SELECT u.s, u.i, o.xmin::text, o.customer_key, o.first_event_id, o.status, o.modified_ms, o.transitions, o.total,
       o.currency, o.created_ms, o.counted, o.count_event_id, o.before, o.marks
FROM unnest(CAST(%(stores)b AS text[]), CAST(%(ids)b AS bigint[]), CAST(%(xs)b AS text[])) AS u(s, i, x)
LEFT JOIN LATERAL (SELECT *, xmin FROM order_state o WHERE o.store_id = u.s AND o.order_id = u.i LIMIT 1) o ON true
WHERE u.x IS NULL OR o.xmin IS NULL OR o.xmin::text <> u.x
""")

_FIRING_COLUMNS = """f.rule_id, f.customer_key, f.store_id, f.first_event_id, f.last_event_id,
       (extract(epoch from f.last_fired_at) * 1000)::bigint, f.fired"""

_LOAD_FIRINGS = (f"""
SELECT {_FIRING_COLUMNS}
FROM unnest(CAST(%(rules)b AS bigint[]), CAST(%(keys)b AS text[])) AS u(r, k)
JOIN LATERAL (SELECT * FROM rule_firings f WHERE f.rule_id = u.r AND f.customer_key = u.k LIMIT 1) f ON true
""")

# Every firing of some customers (guests being merged), whatever the rule.
_LOAD_FIRINGS_OF = (f"""
SELECT {_FIRING_COLUMNS}
FROM rule_firings f
JOIN unnest(CAST(%(stores)b AS text[]), CAST(%(keys)b AS text[])) AS u(s, k)
  ON f.customer_key = u.k AND f.store_id = u.s
""")

_SAVE_CUSTOMERS = ("""
INSERT INTO customer_state AS c (store_id, customer_key, customer_id, email, order_count, totals, first_order_at,
                                 last_order_at, tier, points, view_counts, engine, role, history, updated_at)
SELECT s, k, ci, em, n, CAST(t AS jsonb), to_timestamp(f / 1000.0), to_timestamp(l / 1000.0), tier, pd,
       CAST(vc AS jsonb), CAST(en AS jsonb), ro, CAST(h AS jsonb), now()
FROM unnest(CAST(%(s)b AS text[]), CAST(%(k)b AS text[]), CAST(%(ci)b AS bigint[]), CAST(%(em)b AS text[]),
            CAST(%(n)b AS int[]),
            CAST(%(t)b AS text[]), CAST(%(f)b AS bigint[]), CAST(%(l)b AS bigint[]), CAST(%(tier)b AS text[]),
            CAST(%(pd)b AS bigint[]), CAST(%(vc)b AS text[]), CAST(%(en)b AS text[]), CAST(%(ro)b AS text[]),
            CAST(%(h)b AS text[]))
     AS u(s, k, ci, em, n, t, f, l, tier, pd, vc, en, ro, h)
ON CONFLICT (store_id, customer_key) DO UPDATE SET
    customer_id = COALESCE(EXCLUDED.customer_id, c.customer_id),
    email = COALESCE(EXCLUDED.email, c.email),
    role = COALESCE(EXCLUDED.role, c.role), history = COALESCE(EXCLUDED.history, c.history),
    order_count = EXCLUDED.order_count, totals = EXCLUDED.totals,
    first_order_at = EXCLUDED.first_order_at, last_order_at = EXCLUDED.last_order_at,
    tier = CASE WHEN EXCLUDED.tier <> '' THEN EXCLUDED.tier ELSE c.tier END,
    points = c.points + EXCLUDED.points,
    view_counts = EXCLUDED.view_counts, engine = EXCLUDED.engine, updated_at = now()
    WHERE c.merged_into IS NULL
RETURNING store_id, customer_key, xmin::text, customer_id, email, tier, points, tags
""")

# Keys a batch could not save because their guest was merged after the batch read it.
_MERGED_INTO = ("""
SELECT c.store_id, c.customer_key, c.merged_into FROM customer_state c
JOIN unnest(CAST(%(s)b AS text[]), CAST(%(k)b AS text[])) AS u(s, k) ON c.store_id = u.s AND c.customer_key = u.k
WHERE c.merged_into IS NOT NULL
""")

_SAVE_ORDERS = ("""
INSERT INTO order_state AS o (store_id, order_id, customer_key, first_event_id, status, modified_ms, transitions,
                              total, currency, created_ms, counted, count_event_id, before, marks, updated_at)
SELECT s, i, k, fe, st, m, CAST(tr AS jsonb), tot, cur, cr, cnt, ce, CAST(bf AS jsonb), CAST(mk AS jsonb), now()
FROM unnest(CAST(%(s)b AS text[]), CAST(%(i)b AS bigint[]), CAST(%(k)b AS text[]), CAST(%(fe)b AS text[]),
            CAST(%(st)b AS text[]),
            CAST(%(m)b AS bigint[]), CAST(%(tr)b AS text[]), CAST(%(tot)b AS numeric[]), CAST(%(cur)b AS text[]),
            CAST(%(cr)b AS bigint[]), CAST(%(cnt)b AS boolean[]), CAST(%(ce)b AS text[]), CAST(%(bf)b AS text[]),
            CAST(%(mk)b AS text[]))
     AS u(s, i, k, fe, st, m, tr, tot, cur, cr, cnt, ce, bf, mk)
ON CONFLICT (store_id, order_id) DO UPDATE SET
    customer_key = EXCLUDED.customer_key, status = EXCLUDED.status, modified_ms = EXCLUDED.modified_ms,
    transitions = EXCLUDED.transitions, total = EXCLUDED.total, currency = EXCLUDED.currency,
    counted = EXCLUDED.counted, count_event_id = EXCLUDED.count_event_id, before = EXCLUDED.before,
    marks = EXCLUDED.marks, updated_at = now()
RETURNING store_id, order_id, xmin::text, first_event_id, created_ms, total
""")

# First sights of a store that keeps nothing more (consumer/needs.py: Keep.SEEN): the
# columns that say so, the rest left to their defaults (no status, nothing counted), and a
# row another consumer inserted meanwhile wins (it saw the order first).
_SAVE_FIRST_SIGHTS = ("""
INSERT INTO order_state AS o (store_id, order_id, customer_key, first_event_id, total, currency, created_ms)
SELECT * FROM unnest(CAST(%(s)b AS text[]), CAST(%(i)b AS bigint[]), CAST(%(k)b AS text[]), CAST(%(fe)b AS text[]),
                     CAST(%(tot)b AS numeric[]), CAST(%(cur)b AS text[]), CAST(%(cr)b AS bigint[]))
ON CONFLICT (store_id, order_id) DO NOTHING
RETURNING store_id, order_id, xmin::text
""")

_SAVE_FIRINGS = ("""
INSERT INTO rule_firings AS f (rule_id, customer_key, store_id, first_event_id, last_event_id, last_fired_at, fired)
SELECT r, k, s, fe, le, to_timestamp(t / 1000.0), n
FROM unnest(CAST(%(r)b AS bigint[]), CAST(%(k)b AS text[]), CAST(%(s)b AS text[]), CAST(%(fe)b AS text[]),
            CAST(%(le)b AS text[]),
            CAST(%(t)b AS bigint[]), CAST(%(n)b AS int[])) AS u(r, k, s, fe, le, t, n)
WHERE EXISTS (SELECT 1 FROM rules WHERE rules.id = u.r)
ON CONFLICT (rule_id, customer_key) DO UPDATE SET
    last_event_id = EXCLUDED.last_event_id, last_fired_at = EXCLUDED.last_fired_at, fired = EXCLUDED.fired
""")


_SUB_COLUMNS = """s.store_id, s.subscription_id, s.customer_key, s.first_event_id, s.status, s.modified_ms,
       s.transitions, s.email, s.product_ids, s.billing_period, s.billing_interval, s.total, s.currency,
       (extract(epoch from s.next_payment_at) * 1000)::bigint, (extract(epoch from s.trial_end_at) * 1000)::bigint,
       (extract(epoch from s.end_at) * 1000)::bigint"""

# The subscriptions a batch's subscription events name, and every subscription of the
# customers whose subscriptions a condition reads (`has_active_subscription`).
_LOAD_SUBSCRIPTIONS = (f"""
SELECT {_SUB_COLUMNS} FROM subscription_state s
JOIN unnest(CAST(%(ss)b AS text[]), CAST(%(ids)b AS bigint[])) AS u(s, i)
  ON s.store_id = u.s AND s.subscription_id = u.i
UNION
SELECT {_SUB_COLUMNS} FROM subscription_state s
JOIN unnest(CAST(%(cs)b AS text[]), CAST(%(ks)b AS text[])) AS u(s, k) ON s.store_id = u.s AND s.customer_key = u.k
""")

_SAVE_SUBSCRIPTIONS = ("""
INSERT INTO subscription_state AS x (store_id, subscription_id, customer_key, email, first_event_id, status,
                                     modified_ms, transitions, product_ids, billing_period, billing_interval, total,
                                     currency, next_payment_at, trial_end_at, end_at, updated_at)
SELECT s, i, k, em, fe, st, m, CAST(tr AS jsonb), CAST(p AS bigint[]), bp, bi, tot, cur,
       to_timestamp(np / 1000.0), to_timestamp(te / 1000.0), to_timestamp(en / 1000.0), now()
FROM unnest(CAST(%(s)b AS text[]), CAST(%(i)b AS bigint[]), CAST(%(k)b AS text[]), CAST(%(em)b AS text[]),
            CAST(%(fe)b AS text[]),
            CAST(%(st)b AS text[]), CAST(%(m)b AS bigint[]), CAST(%(tr)b AS text[]), CAST(%(p)b AS text[]),
            CAST(%(bp)b AS text[]), CAST(%(bi)b AS int[]), CAST(%(tot)b AS numeric[]), CAST(%(cur)b AS text[]),
            CAST(%(np)b AS bigint[]), CAST(%(te)b AS bigint[]), CAST(%(en)b AS bigint[]))
     AS u(s, i, k, em, fe, st, m, tr, p, bp, bi, tot, cur, np, te, en)
ON CONFLICT (store_id, subscription_id) DO UPDATE SET
    customer_key = EXCLUDED.customer_key, email = EXCLUDED.email, status = EXCLUDED.status,
    modified_ms = EXCLUDED.modified_ms,
    transitions = EXCLUDED.transitions, product_ids = EXCLUDED.product_ids, billing_period = EXCLUDED.billing_period,
    billing_interval = EXCLUDED.billing_interval, total = EXCLUDED.total, currency = EXCLUDED.currency,
    next_payment_at = EXCLUDED.next_payment_at, trial_end_at = EXCLUDED.trial_end_at, end_at = EXCLUDED.end_at,
    updated_at = now()
    WHERE x.modified_ms <= EXCLUDED.modified_ms
""")


def _dumps(v: Any) -> str:
    return orjson.dumps(v).decode()


_K = TypeVar("_K", tuple[str, str], tuple[str, int])
_Row = TypeVar("_Row", Customer, Order)


def _changed(cur: Any, query: str, ids: str, keys: list[_K], cached: dict[_K, tuple[_Row, str]]) -> list[Any]:
    """The rows of `keys` that changed since the cached copy: the query compares each
    row's `xmin` with `xs` (the cached version, or None to read it anyway)."""
    xs = [cached[k][1] if k in cached else None for k in keys]
    ss, rest = zip(*keys, strict=True)
    cur.execute(query, {"stores": list(ss), ids: list(rest), "xs": xs})
    rows: list[Any] = cur.fetchall()
    return rows


def _from_cache(keys: list[_K], rows: dict[_K, _Row], versions: dict[_K, str], cached: dict[_K, tuple[_Row, str]],
                cache: StateCache | None) -> list[_K]:
    """Fill in the rows the query did not return because they are unchanged since this
    process last read or wrote them; → the keys with no row anywhere."""
    missing = []
    for key in keys:
        if key not in rows:
            hit = cached.pop(key, None)
            if hit is not None:  # unchanged since we last read or wrote it
                rows[key], versions[key] = hit
                if cache is not None:
                    cache.hits += 1
            else:
                missing.append(key)
    return missing


class StateCache:
    """Customers and orders of earlier batches, each with the row version (PostgreSQL
    `xmin`) it had when this process last read or wrote it.

    Only a hint: every batch still asks the database, in the same one query per table,
    which of its rows changed since (a worker adding points or tags, another consumer
    process owning another topic's partition of the same customer, a replay, a
    deletion) and gets only those rows back. Entries are taken out while a batch uses
    them and put back only after its state transaction committed, so an aborted batch
    leaves nothing half-applied here. Dropped on every rebalance, and when full."""

    def __init__(self, max_rows: int = 200_000) -> None:
        self.max_rows = max_rows
        self.customers: dict[tuple[str, str], tuple[Customer, str]] = {}
        self.orders: dict[tuple[str, int], tuple[Order, str]] = {}
        self.hits = 0
        self.levels: dict[str, int] = {}  # as last recorded in `state_levels` by this process (kept on clear)

    def clear(self) -> None:
        self.customers.clear()
        self.orders.clear()

    def keep(self, batch: StateBatch) -> None:
        """After `batch.save` committed: its rows as they are now in the database."""
        if len(self.customers) + len(batch.customers) > self.max_rows or \
                len(self.orders) + len(batch.orders) > self.max_rows:
            self.clear()
        for key, c in batch.customers.items():
            x = batch.versions.get(key)
            if x is not None:
                c.dirty, c.points_delta, c.tier_raised = False, 0, False
                self.customers[key] = (c, x)
        for okey, o in batch.orders.items():
            x = batch.order_versions.get(okey)
            if x is not None:
                o.dirty = False
                self.orders[okey] = (o, x)


_RECORD_LEVELS = ("""
INSERT INTO state_levels AS l (store_id, keeps, since, updated_at)
SELECT u.s, u.k, now(), now() FROM unnest(CAST(%(s)b AS text[]), CAST(%(k)b AS smallint[])) AS u(s, k)
WHERE EXISTS (SELECT 1 FROM stores WHERE stores.id = u.s)
ON CONFLICT (store_id) DO UPDATE SET
    keeps = EXCLUDED.keeps, updated_at = now(),
    since = CASE WHEN EXCLUDED.keeps > l.keeps THEN now() ELSE l.since END
    WHERE l.keeps <> EXCLUDED.keeps
""")


def record_levels(conn: Connection, levels: Mapping[str, int]) -> None:
    """The level each store's state is kept at, in `state_levels`: raised → kept since now
    (the state transaction of the first batch kept at it); lowered → the same row, so the
    next rise starts a new `since`."""
    if levels:
        stores_, keeps = zip(*sorted(levels.items()), strict=True)
        driver_cursor(conn).execute(_RECORD_LEVELS, {"s": list(stores_), "k": [int(k) for k in keeps]})


class StateBatch:
    """The state one batch reads and writes."""

    def __init__(self) -> None:
        self.customers: dict[tuple[str, str], Customer] = {}
        self.orders: dict[tuple[str, int], Order] = {}
        self.firings: dict[tuple[int, str], Firing] = {}
        # row → xmin as read or written (for StateCache)
        self.versions: dict[tuple[str, str], str] = {}
        self.order_versions: dict[tuple[str, int], str] = {}
        # guests folded into customers by this batch (consumer/merge.py), by (store, guest key)
        self.merges: dict[tuple[str, str], Merge] = {}
        # customers entering holdout rules (wooflow/holdout.py), written with the firings
        self.exposures: list[Exposure] = []
        # the state kept for each store of the batch (consumer/needs.py), for `record_levels`
        self.levels: dict[str, int] = {}
        # subscriptions (WooCommerce Subscriptions), by id, and by customer for the customers loaded so
        self.subscriptions: dict[tuple[str, int], Sub] = {}
        self.subs_of: dict[tuple[str, str], dict[int, Sub]] = {}

    # --- reading ---------------------------------------------------------------------
    def load(self, conn: Connection, customers: set[tuple[str, str]], orders: set[tuple[str, int]],
             cache: StateCache | None = None) -> None:
        cur = driver_cursor(conn)
        versions, oversions = self.versions, self.order_versions
        if customers:
            ckeys = list(customers)
            cached = cache.customers if cache is not None else {}
            for (store, key, x, cid, email, n, totals, f, last, tier, points, tags, views, engine,
                 merged_into, role, history) in _changed(cur, _LOAD_CUSTOMERS, "keys", ckeys, cached):
                if x is None:  # no row (yet, or any more)
                    cached.pop((store, key), None)
                    continue
                agg = Aggregates.from_row(n, totals, points, f, last, tier, History.from_json(history))
                self.customers[(store, key)] = Customer(store, key, agg, cid, email, list(tags or []),
                                                        dict(views or {}), Bookkeeping(**(engine or {})),
                                                        merged_into=merged_into, role=role)
                versions[(store, key)] = x
                cached.pop((store, key), None)
            for key in _from_cache(ckeys, self.customers, versions, cached, cache):
                self.customers[key] = Customer(key[0], key[1])
        if orders:
            okeys = list(orders)
            ocached = cache.orders if cache is not None else {}
            for r in _changed(cur, _LOAD_ORDERS, "ids", okeys, ocached):
                okey = (r[0], r[1])
                ocached.pop(okey, None)
                if r[2] is None:
                    continue
                self.orders[okey] = Order(r[0], r[1], r[3], r[4], r[5], r[6], list(r[7] or []), Decimal(r[8]),
                                          r[9], r[10], r[11], r[12], r[13], marks=dict(r[14] or {}))
                oversions[okey] = r[2]
            _from_cache(okeys, self.orders, oversions, ocached, cache)

    def load_subscriptions(self, conn: Connection, ids: set[tuple[str, int]],
                           customers: set[tuple[str, str]]) -> None:
        """The subscriptions named (`ids`) and every subscription of `customers` (who then
        have an entry in `subs_of`, empty if they have none), those not in memory yet."""
        ids = {k for k in ids if k not in self.subscriptions}
        customers = {k for k in customers if k not in self.subs_of}
        if not ids and not customers:
            return
        for key in customers:
            self.subs_of[key] = {}
        ss, iis = (list(c) for c in zip(*sorted(ids), strict=True)) if ids else ([], [])
        cs, ks = (list(c) for c in zip(*sorted(customers), strict=True)) if customers else ([], [])
        cur = driver_cursor(conn)
        cur.execute(_LOAD_SUBSCRIPTIONS, {"ss": ss, "ids": iis, "cs": cs, "ks": ks})
        for r in cur.fetchall():
            skey = (r[0], int(r[1]))
            sub = self.subscriptions.get(skey)
            if sub is None:
                sub = self.subscriptions[skey] = Sub(r[0], int(r[1]), r[2], r[3], r[4], int(r[5]), list(r[6] or []),
                                                    r[7], [int(x) for x in r[8] or ()], r[9], int(r[10]),
                                                    Decimal(r[11]), r[12], r[13], r[14], r[15])
            self.index_subscription(sub)

    def index_subscription(self, sub: Sub) -> None:
        """Keep `subs_of` of a customer whose subscriptions are loaded up to date."""
        mine = self.subs_of.get((sub.store_id, sub.customer_key))
        if mine is not None:
            mine[sub.subscription_id] = sub

    def load_firings(self, conn: Connection, pairs: set[tuple[int, str]]) -> None:
        pairs = {p for p in pairs if p not in self.firings}
        if not pairs:
            return
        rs, ks = zip(*pairs, strict=True)
        cur = driver_cursor(conn)
        cur.execute(_LOAD_FIRINGS, {"rules": list(rs), "keys": list(ks)})
        for r in cur.fetchall():
            self.firings[(r[0], r[1])] = Firing(r[0], r[1], r[2], r[3], r[4], int(r[5]), r[6])

    @staticmethod
    def firings_of(conn: Connection, keys: set[tuple[str, str]]) -> dict[tuple[str, str], dict[int, Firing]]:
        """Every firing of these customers: (store, key) → rule id → firing."""
        out: dict[tuple[str, str], dict[int, Firing]] = {}
        if not keys:
            return out
        ss, ks = zip(*sorted(keys), strict=True)
        cur = driver_cursor(conn)
        cur.execute(_LOAD_FIRINGS_OF, {"stores": list(ss), "keys": list(ks)})
        for r in cur.fetchall():
            out.setdefault((r[2], r[1]), {})[r[0]] = Firing(r[0], r[1], r[2], r[3], r[4], int(r[5]), r[6])
        return out

    def customer(self, store_id: str, key: str) -> Customer:
        c = self.customers.get((store_id, key))
        if c is None:  # not announced to load(): a fresh customer
            c = self.customers[(store_id, key)] = Customer(store_id, key)
        return c

    # --- writing ---------------------------------------------------------------------
    def dirty_counts(self) -> tuple[int, int, int, int]:
        return (sum(1 for c in self.customers.values() if c.dirty), sum(1 for o in self.orders.values() if o.dirty),
                sum(1 for f in self.firings.values() if f.dirty),
                sum(1 for x in self.subscriptions.values() if x.dirty))

    def save(self, conn: Connection) -> dict[tuple[str, str], str]:
        """Write what changed; returns the keys whose guest row was merged into a customer
        after this batch read it ((store, key) → the customer's key): their changes are
        not saved, and their events must be re-routed to that customer."""
        cur = driver_cursor(conn)
        if self.merges:
            from wooflow.consumer.merge import save_merges

            save_merges(conn, self)
        cs = [c for c in self.customers.values() if c.dirty]
        lost: dict[tuple[str, str], str] = {}
        if cs:
            cur.execute(_SAVE_CUSTOMERS, {
                "s": [c.store_id for c in cs], "k": [c.customer_key for c in cs],
                "ci": [c.customer_id for c in cs], "em": [c.email for c in cs],
                "n": [c.agg.order_count for c in cs],
                "t": [_dumps({k: str(v) for k, v in c.agg.totals.items()}) for c in cs],
                "f": [c.agg.first_order_ms for c in cs], "l": [c.agg.last_order_ms for c in cs],
                "tier": [c.agg.tier if c.tier_raised else "" for c in cs],
                "pd": [c.points_delta for c in cs],
                "vc": [_dumps(c.view_counts) for c in cs], "en": [_dumps(c.engine) for c in cs],
                "ro": [c.role for c in cs],
                "h": [_dumps(c.agg.history.to_json()) if c.agg.history is not None else None for c in cs],
            })
            # what the upsert kept of the row's other writers (workers' points/tier/tags, ids)
            saved = set()
            for store, key, x, cid, email, tier, points, tags in cur.fetchall():
                c = self.customers[(store, key)]
                c.customer_id, c.email, c.tags = cid, email, list(tags or [])
                a = c.agg
                c.agg = Aggregates(a.order_count, a.totals, int(points), a.first_order_ms, a.last_order_ms, tier,
                                   a.history)
                self.versions[(store, key)] = x
                saved.add((store, key))
            if len(saved) < len(cs):
                lost = self._merged_meanwhile(cur, [(c.store_id, c.customer_key) for c in cs
                                                    if (c.store_id, c.customer_key) not in saved])
        if self.merges:
            from wooflow.consumer.merge import save_guest_tags

            save_guest_tags(conn, self)
        os_ = [o for o in self.orders.values() if o.dirty and (o.store_id, o.customer_key) not in lost]
        seen = [o for o in os_ if o.first_sight_only]
        if seen:
            os_ = [o for o in os_ if not o.first_sight_only]
            cur.execute(_SAVE_FIRST_SIGHTS, {
                "s": [o.store_id for o in seen], "i": [o.order_id for o in seen], "k": [o.customer_key for o in seen],
                "fe": [o.first_event_id for o in seen], "tot": [o.total for o in seen],
                "cur": [o.currency for o in seen], "cr": [o.created_ms for o in seen]})
            for store, oid, x in cur.fetchall():
                self.order_versions[(store, oid)] = x
            for o in seen:
                o.first_sight_only = False  # written (or someone else's row is): an ordinary row from now on
        if os_:
            cur.execute(_SAVE_ORDERS, {
                "s": [o.store_id for o in os_], "i": [o.order_id for o in os_], "k": [o.customer_key for o in os_],
                "fe": [o.first_event_id for o in os_], "st": [o.status for o in os_],
                "m": [o.modified_ms for o in os_], "tr": [_dumps(o.transitions) for o in os_],
                "tot": [o.total for o in os_], "cur": [o.currency for o in os_], "cr": [o.created_ms for o in os_],
                "cnt": [o.counted for o in os_], "ce": [o.count_event_id for o in os_],
                "bf": [_dumps(o.before) if o.before is not None else None for o in os_],
                "mk": [_dumps(o.marks) for o in os_],
            })
            for store, oid, x, first_event_id, created_ms, total in cur.fetchall():
                o = self.orders[(store, oid)]
                o.first_event_id, o.created_ms, o.total = first_event_id, created_ms, Decimal(total)
                self.order_versions[(store, oid)] = x
        subs = sorted((x for x in self.subscriptions.values() if x.dirty),
                      key=lambda x: (x.store_id, x.subscription_id))  # rows locked in one order
        if subs:
            cur.execute(_SAVE_SUBSCRIPTIONS, {
                "s": [x.store_id for x in subs], "i": [x.subscription_id for x in subs],
                "k": [x.customer_key for x in subs], "em": [x.email for x in subs],
                "fe": [x.first_event_id for x in subs],
                "st": [x.status for x in subs], "m": [x.modified_ms for x in subs],
                "tr": [_dumps(x.transitions) for x in subs],
                "p": ["{" + ",".join(str(i) for i in x.product_ids) + "}" for x in subs],
                "bp": [x.billing_period for x in subs], "bi": [x.billing_interval for x in subs],
                "tot": [x.total for x in subs], "cur": [x.currency for x in subs],
                "np": [x.next_payment_ms for x in subs], "te": [x.trial_end_ms for x in subs],
                "en": [x.end_ms for x in subs]})
            for x in subs:
                x.dirty = False
        holdout.save(conn, [x for x in self.exposures if (x.store_id, x.customer_key) not in lost])
        fs = [f for f in self.firings.values() if f.dirty and (f.store_id, f.customer_key) not in lost]
        if fs:
            cur.execute(_SAVE_FIRINGS, {
                "r": [f.rule_id for f in fs], "k": [f.customer_key for f in fs], "s": [f.store_id for f in fs],
                "fe": [f.first_event_id for f in fs], "le": [f.last_event_id for f in fs],
                "t": [f.last_fired_ms for f in fs], "n": [f.fired for f in fs],
            })
        return lost

    def _merged_meanwhile(self, cur: Any, keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """Dirty rows the upsert refused (merged into a customer since this batch read
        them): forgotten here (their orders too), so the cache never keeps them."""
        cur.execute(_MERGED_INTO, {"s": [k[0] for k in keys], "k": [k[1] for k in keys]})
        lost = {(store, key): target for store, key, target in cur.fetchall()}
        for key in lost:
            self.customers.pop(key, None)
            self.versions.pop(key, None)
        for okey in [k for k, o in self.orders.items() if (o.store_id, o.customer_key) in lost]:
            self.orders.pop(okey)
            self.order_versions.pop(okey, None)
        return lost
