"""Values as the hot path decodes them, and as everything else sees them.

The consumer decodes events without Avro logical types (decimals stay bytes, times stay
epoch milliseconds) because converting them costs more than the rest of the evaluation;
these helpers accept either form, so facts and state work on both.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

_SCALE = 4  # every decimal in the event schemas has scale 4
ZERO = Decimal(0)


def money(v: Any) -> Decimal:
    if v is None or v == "":
        return ZERO
    if isinstance(v, Decimal):
        return v
    if isinstance(v, bytes):
        return Decimal(int.from_bytes(v, "big", signed=True)).scaleb(-_SCALE)
    return Decimal(str(v))


def ms(v: Any) -> int:
    if v is None:
        return 0
    if isinstance(v, datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=timezone.utc)
        return int(v.timestamp() * 1000)
    return int(v)


def to_datetime(v: Any) -> datetime | None:
    if v is None or v == 0:
        return None
    if isinstance(v, datetime):
        return v
    return datetime.fromtimestamp(int(v) / 1000, timezone.utc)
