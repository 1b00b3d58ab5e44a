"""Injectable time: every "now" of the rule consumer and the scheduler comes from a Clock.

`WOOFLOW_CLOCK` picks the source:
- `system` (default): the machine's clock;
- `file:PATH`: simulated time shared by every process on the machine. The file holds one
  ISO-8601 instant (e.g. `2026-03-01T09:00:00+00:00`); time stands still until someone
  rewrites the file (`FileClock.set/advance`, or `wooflow scheduler clock set|advance`).
  Tests and dry runs move it forward by days instead of waiting days; because every
  process reads the same file, the consumer that computes `not_before = now + 3 days`
  and the scheduler that later decides "due" agree on what "now" is;
- `fixed:ISO`: a frozen instant, for one-process tools.

Leases and timeouts (who owns a claimed row, when a worker is presumed dead) stay on
real time — a simulated clock moves business time, not liveness.
"""

from __future__ import annotations

import os
import tempfile
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware (UTC)."""
        ...


def parse_instant(text: str) -> datetime:
    value = text.strip()
    try:
        parsed = datetime.fromtimestamp(float(value), timezone.utc)
    except ValueError:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def __repr__(self) -> str:
        return "SystemClock()"


class FrozenClock:
    """In-process simulated time (unit tests, benchmarks)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = (start or datetime.now(timezone.utc)).astimezone(timezone.utc)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = when.astimezone(timezone.utc)

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self._now += delta
            return self._now


class FileClock:
    """Simulated time in a file, shared by processes. Reads are cached on the file's
    identity (inode, mtime, size), so calling `now()` per event costs one stat()."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._cache: tuple[tuple[int, int, int], datetime] | None = None
        self._lock = threading.Lock()

    def now(self) -> datetime:
        try:
            st = os.stat(self.path)
        except FileNotFoundError as exc:
            raise RuntimeError(f"simulated clock file {self.path} does not exist (WOOFLOW_CLOCK=file:...)") from exc
        ident = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            if self._cache is not None and self._cache[0] == ident:
                return self._cache[1]
        value = parse_instant(self.path.read_text())
        with self._lock:
            self._cache = (ident, value)
        return value

    def set(self, when: datetime) -> datetime:
        """Atomically replace the time (readers never see a half-written file)."""
        when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
        when = when.astimezone(timezone.utc)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".clock-")
        with os.fdopen(fd, "w") as f:
            f.write(when.isoformat())
        os.replace(tmp, self.path)
        return when

    def advance(self, delta: timedelta) -> datetime:
        return self.set(self.now() + delta)

    def epoch(self) -> float:
        """Seconds since the epoch: the shape the store simulator's clock takes."""
        return self.now().timestamp()

    def __repr__(self) -> str:
        return f"FileClock({str(self.path)!r})"


def clock_from_setting(value: str | None) -> Clock:
    spec = (value or "system").strip()
    if spec in ("", "system"):
        return SystemClock()
    kind, _, arg = spec.partition(":")
    if kind == "file" and arg:
        return FileClock(arg)
    if kind == "fixed" and arg:
        return FrozenClock(parse_instant(arg))
    raise ValueError(f"WOOFLOW_CLOCK={spec!r}: expected 'system', 'file:PATH' or 'fixed:ISO-8601'")


_clocks: dict[str, Clock] = {}
_clocks_lock = threading.Lock()


def get_clock(settings: object | None = None) -> Clock:
    """The process's clock for `settings.clock` (one instance per setting value)."""
    if settings is None:
        from wooflow.settings import get_settings

        settings = get_settings()
    spec = str(getattr(settings, "clock", "system") or "system")
    with _clocks_lock:
        clock = _clocks.get(spec)
        if clock is None:
            clock = _clocks[spec] = clock_from_setting(spec)
        return clock
