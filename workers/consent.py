"""Marketing consent: may this customer receive marketing on this channel?

Consent is a log of answers (`consents` table): every grant and every withdrawal is a row
with its source (checkout checkbox, import, unsubscribe link, API) and time; the newest
row for the customer (matched by email or customer key) and channel wins. No row means
no consent.

The check is pluggable, like seed 002's `has_marketing_consent` filter: set
`WOOFLOW_CONSENT_CHECKER` to `module:Class` or to the name of a `wooflow.consent` entry
point. The class is built with `(settings, engine)` and implements `check(...)`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import entry_points
from typing import Any, Protocol

from sqlalchemy import Engine, insert, text

from wooflow.db.tables import consents
from wooflow.people import PERSON_KEYS
from wooflow.settings import Settings

CHANNELS = ("email", "sms")


@dataclass(frozen=True)
class ConsentDecision:
    granted: bool
    reason: str
    source: str = ""
    recorded_at: datetime | None = None


class ConsentChecker(Protocol):
    def check(self, store_id: str, channel: str, *, email: str | None, customer_key: str | None,
              context: dict[str, Any]) -> ConsentDecision:
        """Blocking (the worker calls it on a thread)."""
        ...


# By email, or by any key of the person (a guest's answers count for the customer the
# guest became, wooflow/people.py).
_LATEST = text(f"""
SELECT granted, source, recorded_at FROM consents
WHERE store_id = :store AND channel = :channel
  AND ((CAST(:email AS text) IS NOT NULL AND email = :email)
       OR (CAST(:ckey AS text) IS NOT NULL AND customer_key IN ({PERSON_KEYS})))
ORDER BY recorded_at DESC, id DESC LIMIT 1
""")


class TableConsentChecker:
    """The default: the newest answer in the consents table."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.engine = engine

    def check(self, store_id: str, channel: str, *, email: str | None, customer_key: str | None,
              context: dict[str, Any]) -> ConsentDecision:
        email = normalise_email(email)
        who = email or customer_key or "?"
        if not email and not customer_key:
            return ConsentDecision(False, "no email or customer to check consent for")
        with self.engine.connect() as conn:
            row = conn.execute(_LATEST, {"store": store_id, "channel": channel, "email": email,
                                         "ckey": customer_key}).first()
        if row is None:
            return ConsentDecision(False, f"no {channel} marketing consent on record for {who}")
        granted, source, at = row
        if not granted:
            return ConsentDecision(False, f"{who} withdrew {channel} marketing consent ({source}, {at:%Y-%m-%d})",
                                   source, at)
        return ConsentDecision(True, f"{channel} consent given ({source}, {at:%Y-%m-%d})", source, at)


def normalise_email(email: str | None) -> str | None:
    return email.strip().lower() if email and email.strip() else None


def record(engine: Engine, store_id: str, *, granted: bool, channel: str = "email", email: str | None = None,
           customer_key: str | None = None, source: str = "", details: dict[str, Any] | None = None) -> int:
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
    return cls(settings, engine)  # type: ignore[no-any-return]
