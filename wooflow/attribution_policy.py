"""How a store credits orders to its automations: the attribution window, what starts it,
which messages are tracked. Kept in the store's settings (`stores.settings.analytics`, set
with `PUT /v1/analytics/settings`); read by the email action (which messages get tracking
links), the scheduler's activity reader (which orders are credited to which message, which
orders count for a holdout comparison) and the analytics API (what it reports).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Engine

from wooflow.stores import set_setting

log = logging.getLogger(__name__)

# Steps whose success is a message sent (the funnel's "sends").
MESSAGE_ACTIONS = ("send_email", "send_sms")
DEFAULT_WINDOW_DAYS = 5


class AttributionPolicy(BaseModel):
    """One store's attribution settings."""

    model_config = ConfigDict(extra="forbid")
    window_days: int = Field(DEFAULT_WINDOW_DAYS, ge=1, le=90,
                             description="An order up to this many days after the touch is credited to the message "
                                         "(and counts for holdout groups this long after a customer entered the rule)")
    touch: Literal["engagement", "send"] = Field(
        "engagement", description="engagement: the window starts at a person's open or click of the message; "
                                  "send: it starts when the message is sent (opens and clicks still move it)")
    track_transactional: bool = Field(False, description="Track opens and clicks of emails that are not "
                                                         "marketing (`marketing: false`) too")
    count_machine: bool = Field(False, description="Count opens and clicks by link scanners and mail proxies "
                                                   "(Apple Mail Privacy Protection) as a person's")


def policy_of(store: Any) -> AttributionPolicy:
    """The store's settings; the defaults when unset or invalid (never crash a role)."""
    return policy_in(getattr(store, "settings", None), str(getattr(store, "id", "?")))


def policy_in(settings: Mapping[str, Any] | None, store_id: str) -> AttributionPolicy:
    """The same, from a store's `settings` column."""
    raw = (settings or {}).get("analytics")
    if not raw:
        return AttributionPolicy()
    try:
        return AttributionPolicy.model_validate(raw)
    except ValidationError as exc:
        log.warning("store %s: invalid analytics settings, using the defaults: %s", store_id, exc)
        return AttributionPolicy()


def set_policy(engine: Engine, store_id: str, policy: AttributionPolicy) -> bool:
    """Save the policy into the store's settings (other settings untouched); False: no such store."""
    return set_setting(engine, store_id, "analytics", policy.model_dump_json())
