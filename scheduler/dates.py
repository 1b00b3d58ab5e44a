"""Dates customers keep in WooCommerce meta: birthdays, subscription renewals, card expiry.

Shop plugins store them under many keys and in many formats (store settings `meta_keys`
may name the keys); the activity reader keeps what these parsers find in
`customer_calendar` for the time triggers. The other date parsers differ on purpose:
`producers/normalise.py: parse_time` reads REST resource dates (site-local or `_gmt`, a bad
one rejects the payload), `consumer/values.py` converts the hot path's epoch milliseconds,
`wooflow/timespec.py` and the clock parse what people type; a meta value that does not
parse here is only ignored (None).
"""

from __future__ import annotations

import calendar
import json
import re
from collections.abc import Mapping
from datetime import date, datetime, timezone
from typing import Any

from wooflow.jsontypes import JSONValue

DEFAULT_META_KEYS = {
    "birthday": ("birthday", "birth_date", "date_of_birth", "billing_birthday", "billing_birth_date", "dob",
                 "_wooflow_birthday"),
    "renewal": ("wooflow_next_renewal", "next_payment_date", "_schedule_next_payment", "subscription_next_payment"),
    "card_expiry": ("wooflow_card_expiry", "card_expiry", "_card_expiry", "payment_card_expiry"),
}


def _meta_value(meta: Mapping[str, str], names: tuple[str, ...] | list[str]) -> JSONValue:
    for name in names:
        if name in meta:
            raw = meta[name]
            try:
                return json.loads(raw)
            except (TypeError, ValueError):
                return raw
    return None


def parse_birthday(v: Any) -> tuple[int, int] | None:
    """(month, day) from '1990-05-17', '05-17', '--05-17', '17.05.1990', '17/05/1990' or a dict."""
    if isinstance(v, dict):
        try:
            return _valid_md(int(v.get("month")), int(v.get("day")))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
    s = str(v or "").strip()
    if not s:
        return None
    m = re.match(r"^(?:\d{4}-|--)?(\d{1,2})-(\d{1,2})(?:[T ].*)?$", s)
    if m:
        return _valid_md(int(m.group(1)), int(m.group(2)))
    m = re.match(r"^(\d{1,2})[./](\d{1,2})(?:[./]\d{2,4})?$", s)
    if m:  # day first, as European stores write it
        return _valid_md(int(m.group(2)), int(m.group(1)))
    return None


def _valid_md(month: int, day: int) -> tuple[int, int] | None:
    if 1 <= month <= 12 and 1 <= day <= calendar.monthrange(2000, month)[1]:  # 2000: Feb 29 is valid
        return month, day
    return None


def parse_meta_instant(v: Any) -> datetime | None:
    """WooCommerce dates: '2026-05-01 10:00:00' (GMT for _schedule_* meta), ISO, or a unix time."""
    if v in (None, "", 0, "0"):
        return None
    if isinstance(v, (int, float)) or (isinstance(v, str) and v.strip().isdigit()):
        return datetime.fromtimestamp(float(v), timezone.utc)
    try:
        d = datetime.fromisoformat(str(v).strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return d if d.tzinfo else d.replace(tzinfo=timezone.utc)


def parse_card_expiry(v: Any) -> date | None:
    """Last day of the expiry month from 'MM/YY', 'MM/YYYY', 'YYYY-MM' or {"month","year"}."""
    month = year = None
    if isinstance(v, dict):
        month, year = v.get("month") or v.get("expiry_month"), v.get("year") or v.get("expiry_year")
    else:
        s = str(v or "").strip()
        m = re.match(r"^(\d{1,2})\s*/\s*(\d{2}|\d{4})$", s)
        if m:
            month, year = m.group(1), m.group(2)
        else:
            m = re.match(r"^(\d{4})-(\d{1,2})(?:-\d{1,2})?$", s)
            if m:
                year, month = m.group(1), m.group(2)
    try:
        mo, yr = int(month), int(year)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if yr < 100:
        yr += 2000
    if not 1 <= mo <= 12:
        return None
    return date(yr, mo, calendar.monthrange(yr, mo)[1])


def meta_dates(meta: Mapping[str, str], keys: dict[str, Any] | None = None) -> dict[str, Any]:
    """Birthday, renewal and card expiry from customer meta (store settings `meta_keys`
    may name the keys, e.g. {"birthday": "my_birthday_field"})."""
    given = keys or {}
    names = {k: ([given[k]] if isinstance(given.get(k), str) else list(given.get(k) or v))
             for k, v in DEFAULT_META_KEYS.items()}
    out: dict[str, Any] = {}
    b = parse_birthday(_meta_value(meta, names["birthday"]))
    if b:
        out["birth_month"], out["birth_day"] = b
    r = parse_meta_instant(_meta_value(meta, names["renewal"]))
    if r:
        out["renewal_at"] = r
    c = parse_card_expiry(_meta_value(meta, names["card_expiry"]))
    if c:
        out["card_expiry"] = c
    return out
