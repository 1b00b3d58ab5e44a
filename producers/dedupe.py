"""The dedupe store and the outbox in PostgreSQL: plain SQL, batched, shared by the
bridge (async, group-committed), backfill and the poller (sync).

A claim inserts the event id; a row that already exists means "seen" — unless it is a
stale `pending` claim (claimed, never acknowledged by Kafka: its claimer died), which
is taken over, so a crash between claim and ack never loses a change for good. A
`pending` claim that is not stale yet is no proof either (its claimer may have failed
and been unable to give it back): callers answer "not now", never "duplicate".

The identity facts a batch teaches (`identity.py`: guest email → customer, order →
customer key) are written with its claim, and looked up (when a batch needs them) with
one query on the same connection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import psycopg
from sqlalchemy import Connection, Engine, text

from wooflow.db.engine import driver_cursor
from wooflow.producers.identity import NO_FACTS, Facts, Found, Lookup

T = TypeVar("T")

# psycopg parameter style: the bridge's async claims run them as they are, the sync
# callers through the driver cursor under their SQLAlchemy connection (same transaction).
# Id arrays go in binary (%b; why: `driver_cursor`).
_CLAIM = """
INSERT INTO bridge_seen (event_id, store_id, state)
SELECT u.event_id, u.store_id, %(state)s
FROM unnest(%(ids)b::text[], %(stores)b::text[]) AS u(event_id, store_id)
ON CONFLICT (event_id) DO UPDATE SET claimed_at = now(), state = EXCLUDED.state
    WHERE bridge_seen.state = 'pending' AND bridge_seen.claimed_at < now() - make_interval(secs => %(stale)s)
RETURNING event_id
"""
# Identities: an account email replaces whatever was there, a billing email only fills a gap.
_REMEMBER_IDENTITIES = """
INSERT INTO customer_identities AS ci (store_id, email_hash, customer_id, source)
SELECT * FROM unnest(%(is)b::text[], %(ih)b::text[], %(ic)b::bigint[], %(isrc)b::text[])
ON CONFLICT (store_id, email_hash) DO UPDATE SET customer_id = EXCLUDED.customer_id, source = EXCLUDED.source,
                                                  updated_at = now()
    WHERE EXCLUDED.source = 'account' AND (ci.customer_id <> EXCLUDED.customer_id OR ci.source <> 'account')
"""
_REMEMBER_OWNERS = """
INSERT INTO order_owners AS oo (store_id, order_id, customer_key)
SELECT * FROM unnest(%(os)b::text[], %(oi)b::bigint[], %(ok)b::text[])
ON CONFLICT (store_id, order_id) DO UPDATE SET customer_key = EXCLUDED.customer_key
    WHERE oo.customer_key <> EXCLUDED.customer_key
"""
# Owners of orders without content, and the customers of guest emails — including the
# emails of guest owners, so an order first seen as a guest's follows its registration.
LOOKUP = """
WITH o AS (
    SELECT oo.store_id, oo.order_id, oo.customer_key FROM order_owners oo
    JOIN unnest(%(os)b::text[], %(oi)b::bigint[]) AS u(s, i) ON oo.store_id = u.s AND oo.order_id = u.i
), h AS (
    SELECT u.s, u.h FROM unnest(%(es)b::text[], %(eh)b::text[]) AS u(s, h)
    UNION SELECT store_id, substr(customer_key, 2) FROM o WHERE left(customer_key, 1) = 'g'
)
SELECT 'o', store_id, order_id::text, customer_key FROM o
UNION ALL
SELECT 'i', ci.store_id, ci.email_hash, ci.customer_id::text
FROM customer_identities ci JOIN h ON ci.store_id = h.s AND ci.email_hash = h.h
"""
_MARK_DONE = "UPDATE bridge_seen SET state = 'done' WHERE event_id = ANY(%(done)b::text[])"
# Claimed, neither acknowledged nor given back: another request is making it durable right
# now — or failed to, and could not release it (PostgreSQL and Kafka both away). Not a duplicate.
_PENDING = "SELECT event_id FROM bridge_seen WHERE event_id = ANY(%(ids)b::text[]) AND state = 'pending'"
_RELEASE = text("DELETE FROM bridge_seen WHERE event_id = ANY(CAST(:ids AS text[])) AND state = 'pending'")
_FORGET_OLD = text("""
DELETE FROM bridge_seen WHERE event_id IN (
    SELECT event_id FROM bridge_seen WHERE claimed_at < now() - make_interval(days => :days) LIMIT 50000)
""")

_OUTBOX_INSERT = text("""
INSERT INTO bridge_outbox (event_id, store_id, topic, key, value)
SELECT u.event_id, u.store_id, u.topic, u.key, u.value
FROM unnest(CAST(:ids AS text[]), CAST(:stores AS text[]), CAST(:topics AS text[]), CAST(:keys AS text[]),
            CAST(:vals AS bytea[])) WITH ORDINALITY AS u(event_id, store_id, topic, key, value, ord)
ORDER BY u.ord
""")
_OUTBOX_READ = text("SELECT seq, topic, key, value, store_id, event_id FROM bridge_outbox ORDER BY seq LIMIT :n")
_OUTBOX_DELETE = text("DELETE FROM bridge_outbox WHERE seq = ANY(CAST(:seqs AS bigint[]))")
_OUTBOX_DEPTH = text("SELECT count(*) FROM bridge_outbox")
# One drainer at a time keeps the outbox in order across bridge processes.
OUTBOX_LOCK_ID = 0x776F6F666C6F77  # "wooflow"
_TRY_LOCK = text("SELECT pg_try_advisory_lock(:id)")
_UNLOCK = text("SELECT pg_advisory_unlock(:id)")


# The bridge's hot path: the previous batch's "done" marks and this batch's claims in one
# statement (one round trip, one transaction in autocommit). One statement must not touch a
# row twice, so an id in both sets (the bridge's recently-seen cache prevents it) is marked
# done by a statement of its own first — the order of the two-statement version.
_CLAIM_AFTER_DONE = (f"WITH done AS ({_MARK_DONE}), identities AS ({_REMEMBER_IDENTITIES}), "
                     f"owners AS ({_REMEMBER_OWNERS}) {_CLAIM}")


# Every claim statement finds its rows by primary key. The prepared claim keeps the generic
# plan PostgreSQL chose once: on a new install, with `bridge_seen` small and just analysed,
# that was a sequential scan for the "done" marks — kept while the table grew by thousands
# of rows a second (20+ ms per claim, PostgreSQL CPU per webhook 20 → 530 µs in bench/bridge
# until autovacuum analysed the table again). Without sequential scans it is the index.
CLAIM_SESSION_OPTIONS = "-c enable_seqscan=off"


class AsyncClaims:
    """The bridge's claim connection: psycopg async on the event loop itself (autocommit,
    prepared statement). Going through SQLAlchemy in a worker thread cost more CPU per
    batch than the batch's requests did, and the thread fought the event loop for the GIL."""

    def __init__(self, engine: Engine) -> None:
        self.conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def claim(self, ids: Sequence[str], stores: Sequence[str], done: Sequence[str], *,
                    stale_s: float, facts: Facts = NO_FACTS) -> set[str]:
        """Mark `done` acknowledged, record `facts` and claim `ids` (same semantics as `claim`)."""
        if not ids and not done and not facts:
            return set()
        fresh = set(ids)
        both = [d for d in done if d in fresh]
        params = {"done": [d for d in done if d not in fresh] if both else list(done), "ids": list(ids),
                  "stores": list(stores), "stale": stale_s, "state": "pending", **facts.params()}

        async def run(conn: psycopg.AsyncConnection[Any]) -> set[str]:
            if both:
                await conn.execute(_MARK_DONE, {"done": list(both)})
                both.clear()
            cur = await conn.execute(_CLAIM_AFTER_DONE, params, prepare=True)
            return {r[0] for r in await cur.fetchall()}

        return await self._retrying(run)

    async def pending(self, ids: Sequence[str]) -> set[str]:
        """Which of `ids` are claimed but not known to be durable (see `_PENDING`)."""
        async def run(conn: psycopg.AsyncConnection[Any]) -> set[str]:
            cur = await conn.execute(_PENDING, {"ids": list(ids)}, prepare=True)
            return {r[0] for r in await cur.fetchall()}

        return await self._retrying(run)

    async def lookup(self, need: Lookup) -> Found:
        """Owners and identities a batch needs (one query)."""
        async def run(conn: psycopg.AsyncConnection[Any]) -> Found:
            cur = await conn.execute(LOOKUP, need.params(), prepare=True)
            return Found.of_rows(await cur.fetchall())

        return await self._retrying(run)

    async def _retrying(self, fn: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        for attempt in (1, 2):
            conn = self._conn
            if conn is None or conn.closed or conn.broken:
                conn = self._conn = await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True, connect_timeout=10, options=CLAIM_SESSION_OPTIONS)
            try:
                return await fn(conn)
            except psycopg.OperationalError:
                # A connection that died while idle (PostgreSQL restarted): reconnect once,
                # like the pooled path's pre-ping.
                if attempt == 2 or not (conn.closed or conn.broken):
                    raise
                self._conn = None
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


def claim(conn: Connection, ids: Sequence[str], stores: Sequence[str], *, stale_s: float,
          state: str = "pending") -> set[str]:
    """Claim event ids; returns the ones that are new (or whose claim was stale)."""
    if not ids:
        return set()
    cur = driver_cursor(conn)
    cur.execute(_CLAIM, {"ids": list(ids), "stores": list(stores), "state": state, "stale": stale_s})
    return {r[0] for r in cur.fetchall()}


def pending(conn: Connection, ids: Sequence[str]) -> set[str]:
    """The sync `AsyncClaims.pending`, in the caller's transaction."""
    if not ids:
        return set()
    cur = driver_cursor(conn)
    cur.execute(_PENDING, {"ids": list(ids)})
    return {r[0] for r in cur.fetchall()}


def lookup(conn: Connection, need: Lookup) -> Found:
    """The sync `AsyncClaims.lookup` (backfill, poller, storefront), in the caller's transaction."""
    cur = driver_cursor(conn)
    cur.execute(LOOKUP, need.params())
    return Found.of_rows(cur.fetchall())


def remember(conn: Connection, facts: Facts) -> None:
    """Write what a batch taught, in the caller's (claim's) transaction."""
    if facts:
        cur = driver_cursor(conn)
        params = facts.params()
        if facts.identities:
            cur.execute(_REMEMBER_IDENTITIES, params)
        if facts.owners:
            cur.execute(_REMEMBER_OWNERS, params)


def mark_done(conn: Connection, ids: Sequence[str]) -> None:
    if ids:
        driver_cursor(conn).execute(_MARK_DONE, {"done": list(ids)})


def release(conn: Connection, ids: Sequence[str]) -> None:
    """Give claims back (the event was not made durable) so a re-send can try again."""
    if ids:
        conn.execute(_RELEASE, {"ids": list(ids)})


def forget_old(conn: Connection, days: int) -> int:
    return int(conn.execute(_FORGET_OLD, {"days": days}).rowcount or 0)


def outbox_insert(conn: Connection, rows: Sequence[tuple[str, str, str, str, bytes]]) -> None:
    """rows: (event_id, store_id, topic, key, value), kept in the given order."""
    if not rows:
        return
    ids, stores, topics, keys, vals = (list(c) for c in zip(*rows, strict=True))
    conn.execute(_OUTBOX_INSERT, {"ids": ids, "stores": stores, "topics": topics, "keys": keys, "vals": vals})


def outbox_read(conn: Connection, n: int) -> list[tuple[int, str, str, bytes, str, str]]:
    """(seq, topic, key, value, store_id, event_id), oldest first."""
    return [(int(r[0]), r[1], r[2], bytes(r[3]), r[4], r[5]) for r in conn.execute(_OUTBOX_READ, {"n": n})]


def outbox_delete(conn: Connection, seqs: Sequence[int]) -> None:
    if seqs:
        conn.execute(_OUTBOX_DELETE, {"seqs": list(seqs)})


def outbox_depth(conn: Connection) -> int:
    return int(conn.execute(_OUTBOX_DEPTH).scalar_one())


def try_lock(conn: Connection) -> bool:
    return bool(conn.execute(_TRY_LOCK, {"id": OUTBOX_LOCK_ID}).scalar_one())


def unlock(conn: Connection) -> Any:
    return conn.execute(_UNLOCK, {"id": OUTBOX_LOCK_ID}).scalar_one()
