"""The bridge's one-statement claim (producers/dedupe.py AsyncClaims) keeps the semantics of
the two-statement version: done marks first, then claims; a pending claim is taken over
only once stale; an id already done is never claimed again."""

from __future__ import annotations

import asyncio
import re
import uuid

import psycopg
import pytest
from sqlalchemy import text

from wooflow.producers import dedupe

pytestmark = pytest.mark.integration


def test_async_claims_mark_done_then_claim(engine) -> None:  # type: ignore[no-untyped-def]
    a, b, c = (uuid.uuid4().hex for _ in range(3))

    async def go() -> list[set[str]]:
        claims = dedupe.AsyncClaims(engine)
        try:
            return [
                await claims.claim([a, b], ["s1", "s1"], [], stale_s=30),
                # b is still pending and not stale: not claimable; a becomes done
                await claims.claim([b, c], ["s1", "s2"], [a], stale_s=30),
                # a done and offered again in the same statement (stale_s=0 would take a pending one)
                await claims.claim([a], ["s1"], [a, c], stale_s=0),
                # a stale pending claim (its claimer died before the ack) is taken over
                await claims.claim([b], ["s1"], [], stale_s=0),
            ]
        finally:
            await claims.close()

    assert asyncio.run(go()) == [{a, b}, {c}, set(), {b}]
    with engine.connect() as conn:
        rows = dict(conn.execute(text("SELECT event_id, state FROM bridge_seen WHERE event_id = ANY(:ids)"),
                                 {"ids": [a, b, c]}).all())
    assert rows == {a: "done", b: "pending", c: "done"}


def test_claim_plan_stays_on_the_index_when_planned_on_a_small_table(engine) -> None:  # type: ignore[no-untyped-def]
    """The prepared claim is planned once; planned on a small, freshly analysed table its
    generic plan must still use the primary key (a sequential scan there made every claim
    read the whole table while it grew)."""
    names: list[str] = []

    def placeholder(m: re.Match[str]) -> str:
        if m.group(1) not in names:
            names.append(m.group(1))
        return f"${names.index(m.group(1)) + 1}"

    query = re.sub(r"%\((\w+)\)[sb]", placeholder, dedupe._CLAIM_AFTER_DONE)
    conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

    def generic_plan(options: str) -> str:
        with psycopg.connect(conninfo, options=options) as conn:
            # A session-local table of the same shape shadows the real one: small, analysed.
            conn.execute("CREATE TEMP TABLE bridge_seen (LIKE public.bridge_seen INCLUDING ALL)")
            conn.execute("INSERT INTO bridge_seen (event_id, store_id, state) "
                         "SELECT md5(i::text), 's', 'done' FROM generate_series(1, 20) i")
            conn.execute("ANALYZE bridge_seen")
            return "\n".join(r[0] for r in conn.execute(f"EXPLAIN (GENERIC_PLAN) {query}").fetchall())

    # The trap is real on this server (so the assertion below checks something) ...
    assert "Seq Scan on bridge_seen" in generic_plan("")
    # ... and the claims' session settings keep the statement out of it.
    plan = generic_plan(dedupe.CLAIM_SESSION_OPTIONS)
    assert "Seq Scan" not in plan and "bridge_seen_pkey" in plan, plan
