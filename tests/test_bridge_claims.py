"""The bridge's one-statement claim (producers/dedupe.py AsyncClaims) keeps the semantics of
the two-statement version: done marks first, then claims; a pending claim is taken over
only once stale; an id already done is never claimed again."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import text

from wooflow.producers import dedupe


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
