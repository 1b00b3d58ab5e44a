"""Which consumed commands are finished, per partition — and so which offsets may be committed.

Workers execute commands concurrently and out of order (a slow webhook must not hold the
others), while Kafka offsets are a per-partition prefix. A message is finished when its
processing is done (effects recorded in PostgreSQL, deferrals written) AND every output
it produced (execution log, dead letter) has been acknowledged by Kafka. The committable
position of a partition is the first unfinished offset: a crash re-delivers from there,
and the idempotency claims make the re-delivery harmless.

Delivery reports arrive on the producer's polling thread, so everything here is locked.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

TP = tuple[str, int]


class _Entry:
    __slots__ = ("offset", "remaining")

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.remaining = 1  # the processing itself; outputs add to it


@dataclass
class _Partition:
    entries: deque[_Entry] = field(default_factory=deque)
    next_offset: int | None = None  # first offset not finished (None: nothing seen yet)
    committed: int | None = None


class Handle:
    """One consumed message's place in the tracker (a plain slotted class: made per message)."""

    __slots__ = ("entry", "part", "tp")

    def __init__(self, tp: TP, part: _Partition, entry: _Entry) -> None:
        self.tp, self.part, self.entry = tp, part, entry


class OffsetTracker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: dict[TP, _Partition] = {}
        self._unfinished = 0
        self.failed: str | None = None  # a delivery that failed for good: the worker must stop

    def add(self, topic: str, partition: int, offset: int) -> Handle:
        tp = (topic, partition)
        with self._lock:
            part = self._parts.get(tp)
            if part is None:
                part = self._parts[tp] = _Partition()
            entry = _Entry(offset)
            part.entries.append(entry)
            self._unfinished += 1
            return Handle(tp, part, entry)

    def add_outputs(self, handle: Handle, n: int) -> None:
        if n:
            with self._lock:
                handle.entry.remaining += n

    def done(self, handle: Handle) -> None:
        with self._lock:
            entry = handle.entry
            entry.remaining -= 1
            if entry.remaining == 0 and self._parts.get(handle.tp) is handle.part:
                self._unfinished -= 1

    def delivery_failed(self, error: str) -> None:
        with self._lock:
            self.failed = self.failed or error

    @property
    def unfinished(self) -> int:
        return self._unfinished

    def unfinished_in(self, tps: set[TP]) -> int:
        with self._lock:
            return sum(1 for tp in tps if tp in self._parts for e in self._parts[tp].entries if e.remaining > 0)

    def committable(self, only: set[TP] | None = None) -> dict[TP, int]:
        """Partitions whose finished prefix moved since the last call: tp → next offset to consume."""
        out: dict[TP, int] = {}
        with self._lock:
            for tp, part in self._parts.items():
                if only is not None and tp not in only:
                    continue
                entries = part.entries
                while entries and entries[0].remaining <= 0:
                    part.next_offset = entries.popleft().offset + 1
                if part.next_offset is not None and part.next_offset != part.committed:
                    out[tp] = part.next_offset
        return out

    def mark_committed(self, positions: dict[TP, int]) -> None:
        with self._lock:
            for tp, offset in positions.items():
                part = self._parts.get(tp)
                if part is not None:
                    part.committed = offset

    def forget(self, tps: set[TP]) -> int:
        """Partitions revoked or lost: their unfinished messages will be consumed again elsewhere."""
        with self._lock:
            dropped = 0
            for tp in tps:
                part = self._parts.pop(tp, None)
                if part is not None:
                    dropped += sum(1 for e in part.entries if e.remaining > 0)
            self._unfinished -= dropped
            return dropped
