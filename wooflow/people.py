"""One person per shopper, for code that reads per-customer tables by key.

A guest (`g<email hash>`) folded into a registered customer (`c<id>`) by the rule consumer
keeps a tombstone row in `customer_state` with `merged_into` (consumer/merge.py). Readers
outside the consumer go through here: a key reads as the person it belongs to now
(`canonical`), and "everything about this person" covers the keys folded into it
(`PERSON_KEYS`: consents given as a guest still count for the customer), and a worker's
change to a merged guest lands on the customer (`person_rows`).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, text

# The keys of the person `:ckey` (of store `:store`) belongs to: that person's key and
# every guest key folded into it.
PERSON_KEYS = """
SELECT p.k FROM (SELECT COALESCE((SELECT merged_into FROM customer_state
                                  WHERE store_id = :store AND customer_key = :ckey), :ckey) AS k) p
UNION ALL
SELECT cs.customer_key FROM customer_state cs
WHERE cs.store_id = :store AND cs.merged_into = COALESCE(
    (SELECT merged_into FROM customer_state WHERE store_id = :store AND customer_key = :ckey), :ckey)
"""

_CANONICAL = text("""
SELECT cs.store_id, cs.customer_key, cs.merged_into FROM customer_state cs
JOIN unnest(CAST(:stores AS text[]), CAST(:keys AS text[])) AS t(s, k) ON cs.store_id = t.s AND cs.customer_key = t.k
WHERE cs.merged_into IS NOT NULL
""")


def canonical(conn: Connection, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """(store, key) → the key of the person it belongs to now, for the guest keys that were
    folded into a customer (other keys are absent: they are their own person)."""
    guests = sorted({k for k in keys if k[1][:1] == "g"})
    if not guests:
        return {}
    rows = conn.execute(_CANONICAL, {"stores": [s for s, _ in guests], "keys": [k for _, k in guests]})
    return {(s, k): m for s, k, m in rows}


def person_rows(vals_type: str) -> str:
    """The rows of a local-state action batch (`:stores`, `:keys`, `:cids`, `:vals` of
    `vals_type`) as `t(s, k, cid, v, pk)`, `pk` the key of the person each belongs to now:
    a command still addressed to a merged guest changes the customer's row."""
    return f"""
SELECT t.*, COALESCE(m.merged_into, t.k) AS pk FROM unnest(
    CAST(:stores AS text[]), CAST(:keys AS text[]), CAST(:cids AS bigint[]), CAST(:vals AS {vals_type}[]))
    AS t(s, k, cid, v)
LEFT JOIN customer_state m ON m.store_id = t.s AND m.customer_key = t.k AND m.merged_into IS NOT NULL
"""
