"""When a workflow step is due: its delay from the trigger, then "on the next Monday at
10:00" in a timezone, then out of the store's quiet hours.

Local times are turned into instants with `zoneinfo`, day by day, so a send at 10:00 is at
10:00 on the wall clock on both sides of a daylight-saving change (09:00 UTC before the
spring change in Warsaw, 08:00 UTC after it). A local time that does not exist on a given
day (02:30 on the night the clocks go forward) is the instant the same reading would have
been without the change — 03:30 on the new clock; one that exists twice (the night they
go back) is the first of the two.

Quiet hours (store settings `quiet_hours: {"start": "21:00", "end": "08:00"}`, local to the
store) move a message step (email, SMS) due inside them to their end.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from wooflow.consumer.model import SendAt

MESSAGE_ACTIONS = frozenset({"send_email", "send_sms"})


def zone(name: str | None) -> ZoneInfo:
    """The named timezone, UTC for a missing or unknown name (a store's setting is checked
    where it is written; a bad one must not stop its workflows)."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def local_instant(day: date, at: time, tz: ZoneInfo) -> datetime:
    """The instant the wall clock of `tz` reads `at` on `day` (see the module docstring for
    readings a daylight-saving change skips or repeats)."""
    return datetime.combine(day, at, tzinfo=tz).astimezone(timezone.utc)


def next_send(earliest: datetime, at: SendAt, tz: ZoneInfo) -> datetime:
    """The first instant at or after `earliest` that is `at.time` on one of `at.days` in `tz`."""
    first = earliest.astimezone(tz).date()
    for add in range(8):  # a week and a day always holds an allowed weekday at any time
        day = first + timedelta(days=add)
        if day.weekday() in at.weekdays:
            when = local_instant(day, at.local_time, tz)
            if when >= earliest:
                return when
    raise AssertionError("a week always holds an allowed weekday")  # pragma: no cover


def _hhmm(value: Any) -> time | None:
    try:
        h, m = str(value).split(":")
        return time(int(h), int(m))
    except (ValueError, TypeError):
        return None


def quiet_hours(settings: dict[str, Any]) -> tuple[time, time] | None:
    """The store's quiet hours (start, end), or None when it has none (or they are unreadable)."""
    raw = settings.get("quiet_hours")
    if not isinstance(raw, dict):
        return None
    start, end = _hhmm(raw.get("start")), _hhmm(raw.get("end"))
    if start is None or end is None or start == end:
        return None
    return start, end


def out_of_quiet_hours(when: datetime, quiet: tuple[time, time], tz: ZoneInfo) -> datetime:
    """`when`, or the end of the quiet hours it falls in (they may span midnight)."""
    start, end = quiet
    local = when.astimezone(tz)
    t = local.time().replace(tzinfo=None)
    if start < end:
        inside, end_day = start <= t < end, local.date()
    else:  # e.g. 21:00-08:00
        inside = t >= start or t < end
        end_day = local.date() + timedelta(days=1) if t >= start else local.date()
    return max(when, local_instant(end_day, end, tz)) if inside else when


def due_at(trigger_at: datetime, delay_s: int, at: SendAt | None, tz: ZoneInfo, *,
           quiet: tuple[time, time] | None = None, store_tz: ZoneInfo | None = None,
           message: bool = False) -> datetime:
    """A step's due instant: `delay_s` after the trigger, then the next allowed weekday and
    time in `tz`, then (message steps) out of the store's quiet hours."""
    when = trigger_at + timedelta(seconds=delay_s)
    if at is not None:
        when = next_send(when, at, tz)
    if message and quiet is not None:
        when = out_of_quiet_hours(when, quiet, store_tz or tz)
    return when
