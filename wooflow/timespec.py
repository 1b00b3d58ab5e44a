"""Times operators type on the command line, parsed the same way by every command.

A time is either an ISO 8601 date or date-time (`2026-01-31`, `2026-01-31T08:00`,
`2026-01-31T08:00:00+01:00`; no offset means UTC, a date alone means its midnight UTC) or
a duration before now (`90s`, `15m`, `2h`, `30d`, `1w`, or combined like `1h30m`). Every
time option (`dlq list --since/--until`, `replay --from/--to`, `offsets reset
--to-datetime`, `backfill --since`) is declared with `option(...)`, so a bad value is
answered the same way everywhere: typer's "Invalid value for '--since': ..." and exit
code 2, never a traceback.

The parsed value keeps what was typed next to the instant it means (`TimeSpec`): a
relative time names a different instant on every run, and a command that resumes work
(backfill) must recognise "the same request" by what the operator asked, not by when.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import typer

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"(\d+)([smhdw])")
_DURATION = re.compile(r"(?:\d+[smhdw])+")
# Further back than any topic or store history; keeps `now - duration` representable.
MAX_AGO = timedelta(days=100 * 366)

HELP = ("ISO 8601 date or date-time (UTC when no offset is given, e.g. 2026-01-31T08:00:00Z), "
        "'now', or a duration before now: 90s, 15m, 2h, 30d, 1w, 1h30m")
EXAMPLES = "2026-01-31, 2026-01-31T08:00:00Z, 2h, 30d, now"


@dataclass(frozen=True)
class TimeSpec:
    """A time as typed (`text`), the instant it named when parsed (`at`, UTC) and, for a
    relative time, how long before then (`ago`)."""

    text: str
    at: datetime
    ago: timedelta | None = None

    @property
    def relative(self) -> bool:
        return self.ago is not None

    @property
    def key(self) -> str:
        """The same string for the same request, whenever it is made and however it is
        spelled: `6h` and `360m` → `6h ago`; equal instants → one UTC ISO 8601 form."""
        if self.ago is not None:
            return f"{format_duration(self.ago)} ago"
        return self.at.isoformat()


def format_duration(delta: timedelta) -> str:
    """The canonical spelling in days, hours, minutes, seconds: 1w → `7d`, 90m → `1h30m`."""
    seconds = int(delta.total_seconds())
    parts = []
    for unit in "dhms":
        n, seconds = divmod(seconds, UNITS[unit])
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts) or "0s"


def parse_duration(text: str) -> timedelta:
    """`90s`, `15m`, `2h`, `30d`, `1w`, `1h30m` → a timedelta (ValueError otherwise)."""
    value = text.strip().lower()
    if not _DURATION.fullmatch(value):
        raise ValueError(f"not a duration: {text!r} (e.g. 90s, 15m, 2h, 30d, 1w, 1h30m)")
    seconds = sum(int(n) * UNITS[unit] for n, unit in _PART.findall(value))
    if seconds > MAX_AGO.total_seconds():
        raise ValueError(f"{text!r} is too far back (at most {MAX_AGO.days} days)")
    return timedelta(seconds=seconds)


def parse_time(text: str, now: datetime | None = None) -> TimeSpec:
    """An ISO 8601 date/date-time (UTC unless an offset is given), `now`, or a duration
    before `now` → a TimeSpec in UTC. ValueError with a sentence for anything else."""
    value = text.strip()
    now = now or datetime.now(timezone.utc)
    if not value:
        raise ValueError(f"empty time; give one like {EXAMPLES}")
    if value.lower() == "now":
        return TimeSpec(text, now.astimezone(timezone.utc), timedelta(0))
    if value[0].isdigit() and value[-1].lower() in UNITS:
        try:
            ago = parse_duration(value)
        except ValueError as exc:
            raise ValueError(f"{exc}; or give an ISO 8601 date/time like 2026-01-31T08:00:00Z") from None
        return TimeSpec(text, now.astimezone(timezone.utc) - ago, ago)
    try:
        parsed = datetime.fromisoformat(value)
        at = (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
    except (ValueError, OverflowError):  # OverflowError: an offset pushing year 1 or 9999 out of range
        raise ValueError(f"not a time: {text!r}; give an ISO 8601 date/time (UTC when no offset is given) "
                         f"or a duration before now, e.g. {EXAMPLES}") from None
    return TimeSpec(text, at)


def time_option(value: object) -> TimeSpec:
    """typer `parser=` for every time option: bad input → BadParameter (exit code 2)."""
    if isinstance(value, TimeSpec):
        return value
    try:
        return parse_time(str(value))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def option(*names: str, help: str) -> Any:
    """A typer option taking a time; `help` says what the time means, the formats follow."""
    return typer.Option(*names, parser=time_option, metavar="TIME", help=f"{help}. {HELP}")


def instant(spec: TimeSpec | None) -> datetime | None:
    return None if spec is None else spec.at
