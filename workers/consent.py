"""Marketing consent: may this customer receive marketing on this channel?

Consent is a log of answers (`consents` table): every grant and every withdrawal is a row
with its source (API, import, unsubscribe link, or an order/customer/storefront event the
scheduler's activity reader recorded) and the time it was given; the customer is matched
by email or customer key. The store's policy (wooflow/consent_policy.py) decides:
the newest answer wins (a withdrawal wins a tie; grants count only from the sources the
store trusts); with no answer, `opt_in` says no and `opt_out` says yes. The triggering
event's own answer (the command context: the order's checkout checkbox) counts as well,
so the welcome email right after a first order does not wait for anyone to record it.

The check is pluggable, like the `has_marketing_consent` filter of WordPress plugins: set
`WOOFLOW_CONSENT_CHECKER` to `module:Class` or to the name of a `wooflow.consent` entry
point. The class is built with `(settings, engine)` and implements `check(...)`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import entry_points
from typing import Protocol

from sqlalchemy import Engine, insert, text

from wooflow.consent_policy import EVENT_SOURCES, Answer, ConsentPolicy, context_answers, is_new, policy_of
from wooflow.db.tables import consents
from wooflow.jsontypes import JSONObject
from wooflow.people import PERSON_KEYS
from wooflow.settings import Settings
from wooflow.stores import StoreCache

CHANNELS = ("email", "sms")


@dataclass(frozen=True)
class ConsentDecision:
    granted: bool
    reason: str
    source: str = ""
    recorded_at: datetime | None = None
    policy: str = "opt_in"


class ConsentChecker(Protocol):
    def check(self, store_id: str, channel: str, *, email: str | None, customer_key: str | None,
              context: Mapping[str, object]) -> ConsentDecision:
        """Blocking (the worker calls it on a thread)."""
        ...


# The newest answer that counts: withdrawals from anywhere, grants from trusted sources;
# by email, or by any key of the person (a guest's answers count for the customer the
# guest became, wooflow/people.py).
_LATEST = text(f"""
SELECT granted, source, recorded_at FROM consents
WHERE store_id = :store AND channel = :channel
  AND ((CAST(:email AS text) IS NOT NULL AND email = :email)
       OR (CAST(:ckey AS text) IS NOT NULL AND customer_key IN ({PERSON_KEYS})))
  AND (NOT granted
       OR (CASE WHEN source = ANY(CAST(:event_sources AS text[])) THEN source ELSE 'api' END)
          = ANY(CAST(:trusted AS text[])))
ORDER BY recorded_at DESC, granted ASC, id DESC LIMIT 1
""")


def newest(answers: list[tuple[bool, str, datetime]]) -> tuple[bool, str, datetime] | None:
    """The answer given last; a withdrawal wins a tie."""
    return max(answers, key=lambda a: (a[2], not a[0]), default=None)


def decide(policy: ConsentPolicy, channel: str, who: str, answer: tuple[bool, str, datetime] | None) -> ConsentDecision:
    if answer is None:
        if policy.policy == "opt_out":
            return ConsentDecision(True, f"opt-out policy: {who} has not withdrawn {channel} marketing consent",
                                   "policy", None, policy.policy)
        return ConsentDecision(False, f"no {channel} marketing consent on record for {who}", "", None, policy.policy)
    granted, source, at = answer
    if not granted:
        return ConsentDecision(False, f"{who} withdrew {channel} marketing consent ({source}, {at:%Y-%m-%d})",
                               source, at, policy.policy)
    return ConsentDecision(True, f"{channel} consent given ({source}, {at:%Y-%m-%d})", source, at, policy.policy)


class TableConsentChecker:
    """The default: the store's policy over the consents table and the triggering event."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.engine = engine
        self.stores = StoreCache(engine, settings.store_cache_ttl_s)

    def check(self, store_id: str, channel: str, *, email: str | None, customer_key: str | None,
              context: Mapping[str, object]) -> ConsentDecision:
        policy = policy_of(self.stores.get(store_id))
        email = normalise_email(email)
        who = email or customer_key or "?"
        if not email and not customer_key:
            return ConsentDecision(False, "no email or customer to check consent for", policy=policy.policy)
        with self.engine.connect() as conn:
            row = conn.execute(_LATEST, {"store": store_id, "channel": channel, "email": email, "ckey": customer_key,
                                         "event_sources": list(EVENT_SOURCES),
                                         "trusted": list(policy.grants_from)}).first()
            answers = [(bool(row[0]), str(row[1]), row[2])] if row is not None else []
            if channel == "email":
                answers += [(a.granted, a.source, a.at) for a in _from_context(policy, context, email, customer_key)
                            if is_new(conn, store_id, a)]
        return decide(policy, channel, who, newest(answers))


def _from_context(policy: ConsentPolicy, context: Mapping[str, object], email: str | None,
                  customer_key: str | None) -> list[Answer]:
    """The triggering event's answers about this recipient (not about someone a `to` names)."""
    ckey = context.get("customer_key")
    return [a for a in context_answers(policy, context, str(ckey) if ckey else None)
            if (not a.granted or policy.trusts(a.source))
            and ((email is not None and a.email == email)
                 or (customer_key is not None and a.customer_key == customer_key))]


def normalise_email(email: str | None) -> str | None:
    return email.strip().lower() if email and email.strip() else None


def record(engine: Engine, store_id: str, *, granted: bool, channel: str = "email", email: str | None = None,
           customer_key: str | None = None, source: str = "", details: JSONObject | None = None) -> int:
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {', '.join(CHANNELS)}")
    email = normalise_email(email)
    if not email and not customer_key:
        raise ValueError("a consent record needs an email or a customer key")
    with engine.begin() as conn:
        return int(conn.execute(insert(consents).values(
            store_id=store_id, email=email, customer_key=customer_key, channel=channel, granted=granted,
            source=source, details=details or {}).returning(consents.c.id)).scalar_one())


def load_checker(settings: Settings, engine: Engine) -> ConsentChecker:
    spec = settings.consent_checker.strip()
    if not spec:
        return TableConsentChecker(settings, engine)
    if ":" in spec:
        module, _, attr = spec.partition(":")
        cls = getattr(importlib.import_module(module), attr)
    else:
        found = [ep for ep in entry_points(group="wooflow.consent") if ep.name == spec]
        if not found:
            raise ValueError(f"no consent checker {spec!r} (neither module:Class nor a wooflow.consent entry point)")
        cls = found[0].load()
    return cls(settings, engine)
