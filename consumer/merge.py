"""One person per shopper in the rule engine: a guest's state folded into the registered
customer's.

A guest is keyed by email (`g<hash>`), a registered customer by id (`c<id>`); the bridge
keys a guest's later events `c<id>` once it knows the email's account (producers/
identity.py), but what the guest did before stays under `g<hash>`. The first time the
consumer sees `c<id>` with an email (an account email, a billing email) it folds the
guest's `customer_state` (order count, totals, first/last order, points, tier, view
counts; tags and attributes at save) and `rule_firings` (so "once per customer" stays
once) into `c<id>`, on `c<id>`'s partition, in the state transaction of that batch; the
guest row stays behind as a tombstone (`merged_into`), written even when the guest had no
row yet. `engine.g` of the customer lists the guest keys already looked at, so later
events do not look again.

A guest event still in flight on the guest's partition (produced before the link) meets
the tombstone: it is not applied there but re-routed — produced again keyed `c<id>`, with
its customer key rewritten and the same event id, so the same commands keep the same
idempotency keys (consumer/runner.py). A guest batch that loaded the guest before the
merge and saves after it finds the tombstone too (its upsert is conditional) and
re-routes its events instead of saving them; the merge locks the guest row and folds
what changed since it read it (`refold_*`), so nothing is lost either way.

Everything here is arithmetic on the in-memory state, without I/O (tests/test_identity.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Any, Final

from wooflow.consumer.history import History
from wooflow.consumer.state import Aggregates, Customer, Firing
from wooflow.consumer.tiers import Loyalty
from wooflow.consumer.values import Envelope, as_customer_event, as_order_event
from wooflow.producers.keys import email_hash

LINKED: Final = "g"  # Customer.engine key: the guest keys already folded into (or checked for) this customer


@lru_cache(maxsize=65_536)
def guest_key(email: str) -> str:
    return f"g{email_hash(email)}"


def email_of(schema: str, ev: Envelope) -> str | None:
    """The email a registered customer's event vouches for: the account's, or a billing
    email of their order (storefront emails are typed by anyone: never)."""
    oev = as_order_event(schema, ev)
    if oev is not None:
        o = oev["order"]
        return (o["billing"]["email"] or None) if o else None
    cev = as_customer_event(schema, ev)
    if cev is not None:
        c = cev["customer"]
        return (c["email"] or None) if c else None
    return None


@dataclass(slots=True)
class Merge:
    """A guest folded into a customer in this batch, as it was when the batch read it."""

    store_id: str
    guest_key: str
    customer_key: str
    guest: Customer | None  # None: no guest row when loaded
    firings: dict[int, Firing] = field(default_factory=dict)  # rule id → the guest's firing as loaded
    tags_pending: bool = False  # the guest row had tags or attributes to fold at save


def fold_agg(into: Aggregates, other: Aggregates, sign: int = 1) -> Aggregates:
    """`into` with `other`'s orders added (sign=+1) or taken out again (-1). First/last order
    only widen: taking a guest out again (a merge another customer won) keeps them."""
    t = dict(into.totals)
    for cur, v in other.totals.items():
        t[cur] = t.get(cur, Decimal(0)) + sign * v
    f, last = into.first_order_ms, into.last_order_ms
    if sign > 0:
        of, ol = other.first_order_ms, other.last_order_ms
        f = of if f is None else (f if of is None else min(f, of))
        last = ol if last is None else (last if ol is None else max(last, ol))
    history = into.history
    if other.history is not None and (history is not None or sign > 0):
        history = (history or History()).folded(other.history, sign)
    return Aggregates(max(0, into.order_count + sign * other.order_count), t, into.points + sign * other.points,
                      f, last, into.tier, history)


def fold_views(into: dict[str, int], other: dict[str, int], sign: int = 1) -> dict[str, int]:
    out = dict(into)
    for k, n in other.items():
        out[k] = max(0, out.get(k, 0) + sign * n)
    return out


def higher_tier(agg: Aggregates, other_tier: str, lo: Loyalty) -> str:
    """The tier of the merged person: the higher of both, or what the merged totals reach."""
    best = agg.tier
    for t in (other_tier, lo.tier_for(lo.metric_of(agg)) if lo.levels else ""):
        if lo.rank(t) > lo.rank(best):
            best = t
    return best


def fold_customer(c: Customer, g: Customer, lo: Loyalty) -> None:
    """Fold a guest's state into the customer's, in memory (points are moved in the
    database at save, from the guest row as it is then: `points_delta` is not touched)."""
    agg = fold_agg(c.agg, g.agg)
    tier = higher_tier(agg, g.agg.tier, lo)
    if tier != agg.tier:
        agg.tier = tier  # `agg` is new: nobody holds it yet
        c.tier_raised = True
    c.agg = agg
    c.view_counts = fold_views(c.view_counts, g.view_counts)
    if c.email is None:
        c.email = g.email
    c.dirty = True


def fold_firing(c: Firing | None, g: Firing, customer_key: str) -> Firing:
    """A frequency limit of the merged person: the customer's first event id (replays of
    it stay allowed), the later of both last firings, both counts."""
    if c is None:
        return Firing(g.rule_id, customer_key, g.store_id, g.first_event_id, g.last_event_id, g.last_fired_ms,
                      g.fired, dirty=True)
    later = g.last_fired_ms > c.last_fired_ms
    return Firing(c.rule_id, customer_key, c.store_id, c.first_event_id,
                  g.last_event_id if later else c.last_event_id, max(c.last_fired_ms, g.last_fired_ms),
                  c.fired + g.fired, dirty=True)


def refold_customer(c: Customer, then: Customer | None, now: Customer | None) -> None:
    """At save, with the guest row locked: replace what was folded (`then`, as loaded) by
    what the guest row holds now (`now`; None: nothing — no row, or merged elsewhere)."""
    agg, views = c.agg, c.view_counts
    if then is not None:
        agg, views = fold_agg(agg, then.agg, -1), fold_views(views, then.view_counts, -1)
    if now is not None:
        agg, views = fold_agg(agg, now.agg), fold_views(views, now.view_counts)
        c.points_delta += now.agg.points
    c.agg, c.view_counts, c.dirty = agg, views, True


def firing_changes(then: dict[int, Firing], now: dict[int, Firing]) -> list[Firing]:
    """The guest's firings recorded after the merge read them, as increments to fold."""
    out = []
    for rule_id, f in now.items():
        old = then.get(rule_id)
        if old is None:
            out.append(f)
        elif (f.last_event_id, f.last_fired_ms, f.fired) != (old.last_event_id, old.last_fired_ms, old.fired):
            out.append(Firing(f.rule_id, f.customer_key, f.store_id, f.first_event_id, f.last_event_id,
                              f.last_fired_ms, max(0, f.fired - old.fired)))
    return out


# --- at save, in the batch's state transaction (StateBatch.save) -------------------------

# Lock each guest row (or create its tombstone) and mark it merged, unless another
# customer merged it first; returns the guest rows as they are now, under the lock.
_MERGE_GUESTS = ("""
INSERT INTO customer_state AS c (store_id, customer_key, merged_into, updated_at)
SELECT s, k, m, now() FROM unnest(CAST(%(s)b AS text[]), CAST(%(k)b AS text[]), CAST(%(m)b AS text[])) AS u(s, k, m)
ON CONFLICT (store_id, customer_key) DO UPDATE SET merged_into = EXCLUDED.merged_into, updated_at = now()
    WHERE c.merged_into IS NULL
RETURNING store_id, customer_key, xmin::text, xmax::text = '0', order_count, totals,
       (extract(epoch from first_order_at) * 1000)::bigint, (extract(epoch from last_order_at) * 1000)::bigint,
       tier, points, view_counts, tags, attributes <> '{}'::jsonb
""")

# Tags and attributes belong to actions: folded in SQL, after the customer's row exists.
_GUEST_TAGS = ("""
UPDATE customer_state c
SET tags = ARRAY(SELECT DISTINCT x FROM unnest(c.tags || g.tags) x ORDER BY x),
    attributes = g.attributes || c.attributes, updated_at = now()
FROM unnest(CAST(%(s)b AS text[]), CAST(%(c)b AS text[]), CAST(%(g)b AS text[])) AS u(s, ck, gk)
JOIN customer_state g ON g.store_id = u.s AND g.customer_key = u.gk
WHERE c.store_id = u.s AND c.customer_key = u.ck
RETURNING c.store_id, c.customer_key, c.xmin::text, c.tags
""")


def _guest_now(row: Any) -> Customer:
    store, key, _x, _inserted, n, totals, f, last, tier, points, views, _tags, _attrs = row
    return Customer(store, key, Aggregates.from_row(n, totals, points, f, last, tier), view_counts=dict(views or {}))


def save_merges(conn: Any, batch: Any) -> None:
    """Before the customers are written: lock the guests this batch merged (sorted: two
    batches lock shared guests in one order), mark them merged, and fold what changed
    since the batch read them (or take out what another customer won)."""
    from wooflow.db.engine import driver_cursor

    merges = sorted(batch.merges.values(), key=lambda m: (m.store_id, m.guest_key))
    cur = driver_cursor(conn)
    cur.execute(_MERGE_GUESTS, {"s": [m.store_id for m in merges], "k": [m.guest_key for m in merges],
                                "m": [m.customer_key for m in merges]})
    rows = {(r[0], r[1]): r for r in cur.fetchall()}
    existing: dict[tuple[str, str], Merge] = {}
    for m in merges:
        key = (m.store_id, m.guest_key)
        row = rows.get(key)
        now = _guest_now(row) if row is not None and not row[3] else None
        c = batch.customers[(m.store_id, m.customer_key)]
        refold_customer(c, m.guest, now)
        if row is not None:
            g = batch.customers.get(key)
            if g is not None:
                g.merged_into = m.customer_key
            batch.versions.pop(key, None)  # the cache reads the tombstone again if it needs it
            if now is not None:
                existing[key] = m
                m.tags_pending = bool(row[11]) or bool(row[12])
    if existing:
        changed = {key: firing_changes(m.firings, now_f)
                   for key, now_f in batch.firings_of(conn, set(existing)).items()}
        pairs = {(f.rule_id, existing[key].customer_key) for key, fs in changed.items() for f in fs}
        batch.load_firings(conn, pairs)
        for key, fs in changed.items():
            ck = existing[key].customer_key
            for f in fs:
                batch.firings[(f.rule_id, ck)] = fold_firing(batch.firings.get((f.rule_id, ck)), f, ck)


def save_guest_tags(conn: Any, batch: Any) -> None:
    """After the customers are written: their merged guests' tags and attributes."""
    from wooflow.db.engine import driver_cursor

    todo = sorted((m for m in batch.merges.values() if m.tags_pending), key=lambda m: (m.store_id, m.customer_key))
    cur = driver_cursor(conn)
    while todo:
        # one guest per customer and statement: an UPDATE … FROM applies one source row per target
        seen: set[tuple[str, str]] = set()
        now: list[Merge] = []
        later: list[Merge] = []
        for m in todo:
            (later if (m.store_id, m.customer_key) in seen else now).append(m)
            seen.add((m.store_id, m.customer_key))
        todo = later
        cur.execute(_GUEST_TAGS, {"s": [m.store_id for m in now], "c": [m.customer_key for m in now],
                                  "g": [m.guest_key for m in now]})
        for store, key, x, tags in cur.fetchall():
            c = batch.customers.get((store, key))
            if c is not None:
                c.tags = list(tags or [])
                batch.versions[(store, key)] = x
