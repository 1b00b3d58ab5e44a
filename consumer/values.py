"""Values as the hot path decodes them, and as everything else sees them.

The consumer decodes events without Avro logical types (decimals stay bytes, times stay
epoch milliseconds) because converting them costs more than the rest of the evaluation;
these helpers accept either form, so facts and state work on both.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from decimal import Decimal
from typing import TypeAlias, TypeGuard, cast

from typing_extensions import ReadOnly, TypedDict

from wooflow.schemas.types import (
    CouponEventOf,
    CustomerEventOf,
    CustomerOf,
    OrderEventOf,
    OrderOf,
    ProductEventOf,
    ProductOf,
    StorefrontEventOf,
    SubscriptionEventOf,
    SubscriptionOf,
)

_SCALE = 4  # every decimal in the event schemas has scale 4
ZERO = Decimal(0)

# A timestamp-millis as decoded by the hot path (epoch ms) or with logical types (datetime).
Moment: TypeAlias = datetime | int
# A decimal as decoded by the hot path (unscaled bytes) or with logical types (Decimal).
Amount: TypeAlias = Decimal | bytes

# Events as the rule engine reads them: from the hot path, or decoded in full (dry runs).
OrderEventIn: TypeAlias = OrderEventOf[Moment, Amount]
OrderIn: TypeAlias = OrderOf[Moment, Amount]
CustomerEventIn: TypeAlias = CustomerEventOf[Moment]
CustomerIn: TypeAlias = CustomerOf[Moment]
ProductEventIn: TypeAlias = ProductEventOf[Moment, Amount]
ProductIn: TypeAlias = ProductOf[Moment, Amount]
StorefrontEventIn: TypeAlias = StorefrontEventOf[Moment, Amount]
CouponEventIn: TypeAlias = CouponEventOf[Moment, Amount]
SubscriptionEventIn: TypeAlias = SubscriptionEventOf[Moment, Amount]
SubscriptionIn: TypeAlias = SubscriptionOf[Moment, Amount]
EventIn: TypeAlias = (OrderEventIn | CustomerEventIn | ProductEventIn | StorefrontEventIn | CouponEventIn
                      | SubscriptionEventIn)


class Envelope(TypedDict):
    """What every event has, whatever its schema (and the scheduler's synthetic events)."""

    event_id: ReadOnly[str]
    store_id: ReadOnly[str]
    customer_key: ReadOnly[str]
    occurred_at: ReadOnly[Moment]
    received_at: ReadOnly[Moment | None]
    topic: ReadOnly[str]


def as_order_event(schema: str, ev: Envelope) -> OrderEventIn | None:
    """`ev` as the order event it is when `schema` says so: a record is decoded with the
    schema its bytes name, and schemas/types.py describes what that schema decodes to."""
    return cast(OrderEventIn, ev) if schema == "OrderEvent" else None


def as_customer_event(schema: str, ev: Envelope) -> CustomerEventIn | None:
    """`ev` as the customer event it is when `schema` says so (see `as_order_event`)."""
    return cast(CustomerEventIn, ev) if schema == "CustomerEvent" else None


def is_event(record: Mapping[str, object]) -> TypeGuard[Envelope]:
    """A decoded record with an event's envelope (every event schema has one)."""
    return "store_id" in record and "event_id" in record and "customer_key" in record


def money(v: Amount | str | int | float | None) -> Decimal:
    if v is None or v == "":
        return ZERO
    if isinstance(v, Decimal):
        return v
    if isinstance(v, bytes):
        return Decimal(int.from_bytes(v, "big", signed=True)).scaleb(-_SCALE)
    return Decimal(str(v))


def ms(v: Moment | float | str | None) -> int:
    if v is None:
        return 0
    if isinstance(v, datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=timezone.utc)
        return int(v.timestamp() * 1000)
    return int(v)


def to_datetime(v: Moment | float | None) -> datetime | None:
    if v is None or v == 0:
        return None
    if isinstance(v, datetime):
        return v
    return datetime.fromtimestamp(int(v) / 1000, timezone.utc)
