"""Holdout groups: a rule's `holdout_percent` of its audience is held out as a control group.

Membership is a pure function of (rule id, customer key) — the first 64 bits of
sha256("holdout|<rule>|<customer>") below percent/100 of 2^64 — so it is the same in every
process, on every replay and across the rule's versions (its id stays; a new percentage
moves only the customers between the old and the new threshold). Held-out customers go
through the rule like everyone else — conditions, frequency limits — and then get no
effect: no command, no delayed step; the rule consumer logs `held_out` for them.

Who entered a holdout rule, and on which side, is recorded the first time it happens
(`holdout_exposures`, primary key (rule, customer)), by whoever decided it: the rule
consumer in its state transaction, the scheduler's scan in the transaction of its trigger
firings. Their orders in the window after that are counted by the activity reader
(scheduler/conversions.py); the analytics API compares the two sides (wooflow/lift.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from wooflow.db.engine import driver_cursor
from wooflow.schemas.types import ExecutionLog

_SCALE = 2 ** 64


def held_out(rule_id: int, customer_key: str, percent: float) -> bool:
    """Whether the customer is in the rule's control group."""
    if percent <= 0:
        return False
    digest = hashlib.sha256(f"holdout|{rule_id}|{customer_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < percent / 100 * _SCALE


@dataclass(frozen=True, slots=True)
class Exposure:
    """A customer entering a holdout rule: treated (held_out False) or control."""

    store_id: str
    rule_id: int
    customer_key: str
    held_out: bool
    event_id: str
    at: datetime


_SAVE = """
INSERT INTO holdout_exposures (store_id, rule_id, customer_key, held_out, event_id, exposed_at)
SELECT * FROM unnest(%(s)b::text[], %(r)b::bigint[], %(k)b::text[], %(h)b::bool[], %(e)b::text[],
                     %(a)b::timestamptz[])
ON CONFLICT (rule_id, customer_key) DO NOTHING
"""


def save(conn: Connection, exposures: Sequence[Exposure]) -> None:
    """Record first exposures in the caller's transaction (later ones change nothing)."""
    if not exposures:
        return
    driver_cursor(conn).execute(_SAVE, {
        "s": [x.store_id for x in exposures], "r": [x.rule_id for x in exposures],
        "k": [x.customer_key for x in exposures], "h": [x.held_out for x in exposures],
        "e": [x.event_id for x in exposures], "a": [x.at for x in exposures]})


def held_out_log(x: Exposure, idempotency_key: str, action_type: str, percent: float,
                 now: datetime) -> ExecutionLog:
    """The execution log of a held-out run (status `held_out`, step 0, no effect)."""
    return {
        "log_id": f"{idempotency_key}:held_out",
        "idempotency_key": idempotency_key,
        "store_id": x.store_id,
        "customer_key": x.customer_key,
        "rule_id": x.rule_id,
        "event_id": x.event_id,
        "step": 0,
        "action_type": action_type,
        "status": "held_out",
        "message": f"held out: in the rule's {percent:g}% control group",
        "attempt": 1,
        "duration_ms": 0.0,
        "executed_at": now,
        "received_at": None,
        "details_json": json.dumps({"holdout_percent": percent}),
        "dry_run": False,
    }
