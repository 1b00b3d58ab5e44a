"""A store's marketing-consent policy, and the consent answers WooCommerce events carry.

Stock WooCommerce records no marketing consent, so a store that wants wooflow's marketing
emails must say where consent comes from. The policy lives in the store's settings
(`stores.settings.consent`, set with `wooflow stores consent` or `PUT /v1/consent-policy`):

    {"policy": "opt_in",                       # or "opt_out"
     "grants_from": ["api", "order_meta", "customer_meta"],
     "meta_key": "_wooflow_marketing_consent", # written by the checkout checkbox
     "meta_yes": ["yes", "1", "true", "on"], "meta_no": []}

- `opt_in` (default): marketing needs a grant from a source in `grants_from`;
- `opt_out`: marketing goes out unless the customer withdrew.

Answers are ordered by the time they were given; the newest wins, a withdrawal wins a
tie, and withdrawals count whatever their source (`grants_from` filters grants only).

Answers come from the `consents` table (the API, the unsubscribe link, and what the
scheduler's activity reader recorded from events: `record_event_answers`) and from the
event that triggered the message (`context_answers`): the welcome email goes out right
after the first order, before any other process may have recorded that order's checkbox.
An answer read from an event is timed by the event (an order's answer by its creation;
a storefront capture by when it happened; customer meta — a state, not an act — by the
first customer update that showed the new value), so reading it again changes nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import Connection, Engine, text

from wooflow.jsontypes import JSONObject
from wooflow.schemas.codec import Record
from wooflow.stores import set_setting

log = logging.getLogger(__name__)

Source = Literal["api", "order_meta", "customer_meta", "storefront"]
# `consents.source` values reserved for answers read from events; any other source (the
# API's free text: "checkout", "import", ...; the unsubscribe link) is of kind "api".
EVENT_SOURCES: tuple[str, ...] = ("order_meta", "customer_meta", "storefront")
# storefront grants are off by default: anyone holding the public key can send one
DEFAULT_GRANTS_FROM: tuple[Source, ...] = ("api", "order_meta", "customer_meta")
STOREFRONT_FLAG = "marketing_consent"  # storefront event property: "yes" | "no"


class ConsentPolicy(BaseModel):
    """What counts as marketing consent in one store."""

    model_config = ConfigDict(extra="forbid")
    policy: Literal["opt_in", "opt_out"] = Field(
        "opt_in", description="opt_in: marketing needs a recorded grant; opt_out: it goes out unless withdrawn")
    grants_from: list[Source] = Field(
        default_factory=lambda: list(DEFAULT_GRANTS_FROM),
        description="Sources whose grants count (withdrawals always count): api (consents API and imports), "
                    "order_meta / customer_meta (meta_key), storefront (email_captured with marketing_consent)")
    meta_key: str | None = Field(None, max_length=255,
                                 description="Order/customer meta key the checkout checkbox writes")
    meta_yes: list[str] = Field(default_factory=lambda: ["yes", "1", "true", "on"], max_length=20,
                                description="meta_key values that mean consent given")
    meta_no: list[str] = Field(default_factory=list, max_length=20,
                               description="meta_key values that mean consent withdrawn (default: none - an "
                                           "unticked box is no answer)")

    @field_validator("meta_yes", "meta_no")
    @classmethod
    def _values(cls, v: list[str]) -> list[str]:
        return [x.strip().lower() for x in v if x.strip()]

    @field_validator("meta_key")
    @classmethod
    def _key(cls, v: str | None) -> str | None:
        return v.strip() if v and v.strip() else None

    def trusts(self, source: str) -> bool:
        return source_kind(source) in self.grants_from

    def meta_answer(self, meta: Any) -> bool | None:
        """True/False if `meta` holds the key with a yes/no value, else None."""
        if not self.meta_key or not isinstance(meta, dict) or self.meta_key not in meta:
            return None
        value = _plain(meta[self.meta_key])
        if value in self.meta_yes:
            return True
        if value in self.meta_no:
            return False
        return None


def source_kind(source: str) -> str:
    return source if source in EVENT_SOURCES else "api"


def policy_of(store: Any) -> ConsentPolicy:
    """The store's policy; the default (opt-in, the strictest) when unset or invalid."""
    raw = (getattr(store, "settings", None) or {}).get("consent")
    if not raw:
        return ConsentPolicy()
    try:
        return ConsentPolicy.model_validate(raw)
    except ValidationError as exc:  # written around the CLI/API: never crash a role, never loosen
        log.warning("store %s: invalid consent settings, using opt_in: %s", getattr(store, "id", "?"), exc)
        return ConsentPolicy()


def set_policy(engine: Engine, store_id: str, policy: ConsentPolicy) -> bool:
    """Save the policy into the store's settings (other settings untouched); False: no such store."""
    return set_setting(engine, store_id, "consent", policy.model_dump_json())


@dataclass(frozen=True)
class Answer:
    """One consent answer read from an event, for one customer and the email channel."""

    granted: bool
    source: str
    at: datetime
    ref: str
    email: str | None
    customer_key: str | None


def _plain(raw: Any) -> str:
    try:
        v = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        v = raw
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v).strip().lower() if v is not None else ""


def _time(v: Any) -> datetime | None:
    if isinstance(v, datetime):
        return v if v.tzinfo else v.replace(tzinfo=timezone.utc)
    try:
        d = datetime.fromisoformat(str(v).replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return None
    return d if d.tzinfo else d.replace(tzinfo=timezone.utc)


def _email(v: Any) -> str | None:
    s = str(v or "").strip().lower()
    return s if "@" in s else None


def order_answer(policy: ConsentPolicy, order: Any, customer_key: str | None) -> Answer | None:
    if not isinstance(order, dict):
        return None
    granted = policy.meta_answer(order.get("meta"))
    at = _time(order.get("date_created"))
    if granted is None or at is None or not order.get("id"):
        return None
    return Answer(granted, "order_meta", at, f"order:{order['id']}", _email((order.get("billing") or {}).get("email")),
                  customer_key)


def customer_answer(policy: ConsentPolicy, customer: Any, customer_key: str | None) -> Answer | None:
    if not isinstance(customer, dict):
        return None
    granted = policy.meta_answer(customer.get("meta"))
    at = _time(customer.get("date_modified") or customer.get("date_created"))
    if granted is None or at is None or not customer.get("id"):
        return None
    return Answer(granted, "customer_meta", at, f"customer:{customer['id']}@{at.isoformat()}",
                  _email(customer.get("email")), customer_key)


def storefront_answer(ev: Record) -> Answer | None:
    """A grant from `email_captured` with `marketing_consent: true` (a "no" is no answer:
    the form's box was not ticked; withdrawing goes through the unsubscribe link)."""
    properties = ev.get("properties")
    if ev.get("event_type") != "email_captured" or not isinstance(properties, Mapping) or \
            _plain(properties.get(STOREFRONT_FLAG)) != "yes":
        return None
    email, at = _email(ev.get("email")), _time(ev.get("occurred_at"))
    if email is None or at is None:
        return None
    return Answer(True, "storefront", at, f"storefront:{ev['event_id']}", email, _key(ev.get("customer_key")))


def _key(v: object) -> str | None:
    return str(v) if v else None


def context_answers(policy: ConsentPolicy, context: Record, customer_key: str | None) -> list[Answer]:
    """What the triggering event itself says (the command's context)."""
    found = [order_answer(policy, context.get("order"), customer_key),
             customer_answer(policy, context.get("customer"), customer_key)]
    return [a for a in found if a is not None]


# Customer meta is a state: an answer is new only when it differs from the newest one
# recorded from customer meta at or before it (so a profile edit after an unsubscribe,
# still carrying the old "yes", grants nothing).
_SAME_AS_LAST_CUSTOMER_META = """
    SELECT 1 FROM (SELECT granted FROM consents
                   WHERE store_id = CAST(:store AS text) AND channel = 'email' AND source = 'customer_meta'
                     AND customer_key = CAST(:ckey AS text) AND recorded_at <= CAST(:at AS timestamptz)
                   ORDER BY recorded_at DESC, id DESC LIMIT 1) last
    WHERE last.granted = CAST(:granted AS boolean)
"""
_RECORD = text(f"""
INSERT INTO consents (store_id, customer_key, email, channel, granted, source, source_ref, recorded_at, details)
SELECT CAST(:store AS text), CAST(:ckey AS text), CAST(:email AS text), 'email', CAST(:granted AS boolean),
       CAST(:source AS text), CAST(:ref AS text), CAST(:at AS timestamptz), CAST(:details AS jsonb)
WHERE CAST(:source AS text) <> 'customer_meta' OR NOT EXISTS ({_SAME_AS_LAST_CUSTOMER_META})
ON CONFLICT (store_id, channel, source, source_ref) WHERE source_ref IS NOT NULL DO NOTHING
""")
_SAME = text(_SAME_AS_LAST_CUSTOMER_META)


def is_new(conn: Connection, store_id: str, a: Answer) -> bool:
    """False for a customer-meta answer that only repeats the recorded one."""
    if a.source != "customer_meta":
        return True
    return conn.execute(_SAME, {"store": store_id, "ckey": a.customer_key, "at": a.at,
                                "granted": a.granted}).first() is None


def record_answer(conn: Connection, store_id: str, a: Answer, details: JSONObject | None = None) -> bool:
    """Record an answer read from an event, once (True if it was new)."""
    if not a.email and not a.customer_key:
        return False
    res = conn.execute(_RECORD, {"store": store_id, "ckey": a.customer_key, "email": a.email, "granted": a.granted,
                                 "source": a.source, "ref": a.ref, "at": a.at,
                                 "details": json.dumps(details or {})})
    return bool(res.rowcount)


def event_answers(policy: ConsentPolicy, schema: str, ev: Record) -> list[Answer]:
    if ev.get("action") == "deleted":
        return []
    if schema == "OrderEvent":
        a = order_answer(policy, ev.get("order"), _key(ev.get("customer_key")))
    elif schema == "CustomerEvent":
        a = customer_answer(policy, ev.get("customer"), _key(ev.get("customer_key")))
    elif schema == "StorefrontEvent":
        a = storefront_answer(ev)
    else:
        a = None
    return [a] if a is not None else []


def record_event_answers(conn: Connection, policy: ConsentPolicy, schema: str, ev: Record) -> int:
    """Record the consent answers an event carries (the scheduler's activity reader calls
    this for woo.orders / woo.customers / woo.storefront). Answers are facts and are
    recorded whatever `grants_from` says; the check decides which count."""
    return sum(record_answer(conn, str(ev["store_id"]), a, {"event_id": _key(ev.get("event_id"))})
               for a in event_answers(policy, schema, ev))
