"""Triggers the scheduler evaluates: abandoned carts, storefront behaviour and the calendar.

Importing this module registers them in the rule engine's trigger registry
(consumer/triggers.py), so rules name them like any other trigger and the rule engine
matches them. Every process that compiles rules imports it: the scheduler, the API
(validation, schema, dry run), and the wiring of `wooflow rules` and `wooflow replay`. No
Kafka event carries them: the scheduler's periodic scan (scheduler/scan.py) finds who
qualifies, synthesises one event per (customer, period) with a deterministic id —
sha256(store | customer | trigger | period) — and runs it through `RuleEngine.matches`.
Replays and concurrent scans therefore produce the same idempotency keys, and
`trigger_firings` makes each fire once per period.

Each trigger's options are a small pydantic model; `validate_options` is what an API
or the scan uses to check a rule's `trigger_options`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from wooflow.consumer.triggers import Check, TriggerSpec, register

SCHEMA = "ScheduledTrigger"  # the synthesised events' "schema" name (never on a Kafka topic)


def _duration(v: str | None) -> str | None:
    from wooflow.consumer.model import delay_seconds

    if v is not None and delay_seconds(v) <= 0:
        raise ValueError(f"{v!r} must be a positive duration like 'hour 24' or 'day 7'")
    return v


def seconds(v: str) -> int:
    from wooflow.consumer.model import delay_seconds

    return delay_seconds(v)


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("within", "wait", "cooldown", check_fields=False)  # the options that are durations
    @classmethod
    def _durations(cls, v: str | None) -> str | None:
        return _duration(v)


class CartOptions(_Options):
    min_total: Decimal | None = Field(None, description="Only carts worth at least this much")


class ViewedOptions(_Options):
    times: int = Field(3, ge=1, le=1000, description="Views of the same product needed")
    within: str = Field("day 7", description="...within this window")
    product_id: int | None = Field(None, description="Only this product (default: any product)")
    cooldown: str | None = Field(None, description="Fire again for the same product after this (default: the window)")


class CategoryOptions(_Options):
    times: int = Field(3, ge=1, le=1000, description="Views of the same category (or its products) needed")
    within: str = Field("day 7", description="...within this window")
    category_id: int | None = Field(None, description="Only this category (default: any category)")
    cooldown: str | None = Field(None, description="Fire again for the same category after this (default: the window)")


class SearchOptions(_Options):
    wait: str = Field("hour 24", description="Fires when no order followed a search for this long")
    cooldown: str = Field("day 7", description="At most once per customer per this period")


class InactiveOptions(_Options):
    days: int = Field(90, ge=1, le=3650, description="Days since the last order (store's calendar days)")


class AnniversaryOptions(_Options):
    grace_days: int = Field(1, ge=0, le=30, description="Still fire this many days late (scheduler was down)")


class BirthdayOptions(_Options):
    days_before: int = Field(0, ge=0, le=60, description="Fire this many days before the birthday")
    grace_days: int = Field(1, ge=0, le=30, description="Still fire this many days late (scheduler was down)")


class RenewalOptions(_Options):
    days_before: int = Field(3, ge=0, le=365, description="Fire this many days before the renewal date")


class TrialOptions(_Options):
    days_before: int = Field(3, ge=0, le=365, description="Fire this many days before the trial ends")


class CardOptions(_Options):
    days_before: int = Field(30, ge=0, le=365, description="Fire this many days before the card's expiry month ends")


OPTIONS: dict[str, type[_Options]] = {
    "abandoned_cart": CartOptions,
    "product_viewed": ViewedOptions,
    "category_browsing": CategoryOptions,
    "search_without_purchase": SearchOptions,
    "customer_inactive": InactiveOptions,
    "first_purchase_anniversary": AnniversaryOptions,
    "birthday": BirthdayOptions,
    "subscription_renewal": RenewalOptions,
    "subscription_trial_ending": TrialOptions,
    "card_expiring": CardOptions,
}

DESCRIPTIONS = {
    "abandoned_cart": "A registered or guest cart was left without checkout for the store's 'abandoned after' time "
                      "(store settings: abandoned_cart_after, default 15 minutes)",
    "product_viewed": "A customer viewed the same product N times within a window",
    "category_browsing": "A customer browsed the same category N times within a window",
    "search_without_purchase": "A customer searched and did not order within the wait",
    "customer_inactive": "No order for N days (store's timezone)",
    "first_purchase_anniversary": "Yearly on the date of the customer's first order (store's timezone)",
    "birthday": "On (or N days before) the customer's birthday, from customer meta (store's timezone)",
    "subscription_renewal": "N days before an active subscription's next payment (WooCommerce Subscriptions' "
                            "next_payment_date, store's timezone); once per subscription and payment date",
    "subscription_trial_ending": "N days before an active subscription's free trial ends (trial_end_date, store's "
                                 "timezone); once per subscription",
    "card_expiring": "N days before the customer's saved card expires (customer meta)",
}

TIME_TRIGGERS = ("customer_inactive", "first_purchase_anniversary", "birthday", "subscription_renewal",
                 "subscription_trial_ending", "card_expiring")
BEHAVIOUR_TRIGGERS = ("product_viewed", "category_browsing", "search_without_purchase")
CART_TRIGGERS = ("abandoned_cart",)
ALL = CART_TRIGGERS + BEHAVIOUR_TRIGGERS + TIME_TRIGGERS


def validate_options(trigger: str, options: dict[str, Any] | None) -> _Options:
    """The parsed options of a scheduler trigger; ValueError naming the field if invalid."""
    model = OPTIONS[trigger]
    try:
        return model.model_validate(options or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "trigger_options"
        raise ValueError(f"trigger_options.{where}: {first.get('msg')}") from exc


def _fires(name: str) -> Check:
    return lambda ctx: ctx.event.get("trigger") == name


for _name in ALL:
    # Options narrow nothing at match time: the scan already applied them when it chose
    # whom to fire for (compile → None); the model still validates rules' trigger_options.
    register(TriggerSpec(_name, SCHEMA, DESCRIPTIONS[_name], _fires(_name), options_model=OPTIONS[_name],
                         compile=lambda _opts: None, group="scheduler"))
