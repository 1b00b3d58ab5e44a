"""Garbage-collector settings for the long-running, allocation-heavy roles (rules,
replay, bridge).

CPython's default thresholds (700, 10, 10) run a collection every 700 net container
allocations and a full one every ~70,000 — and a full collection walks every live
container. The rule consumer keeps up to 200,000 customers and orders cached between
batches and decodes thousands of events (each a few dozen dicts and lists) per batch, so
full collections came round every couple of batches and each walked the whole cache:
6 of 15 seconds of a 100,000-event benchmark run were spent in them. Our events and
state rows are trees (freed by reference counting the moment they are dropped); the
cycle collector has little to find, so it runs rarely here, and objects alive at
start-up (imports, compiled rules, schemas) are moved out of its sight with `gc.freeze`.
"""

from __future__ import annotations

import gc

# A batch of 2,000 order events holds ~120,000 live containers until it is done: a young
# collection every 50,000 allocations walked them twice or three times per batch (11-15 µs
# of GC per event in bench/peers job B); every 200,000, at most once (6-7 µs).
THRESHOLDS = (200_000, 20, 100)
# The bridge's requests are small and its live set is too: young collections every 5,000
# allocations keep its memory flat (bench/bridge: GC ~16 → ~5 µs per webhook).
BRIDGE_THRESHOLDS = (5_000, 20, 20)


def tune_gc(thresholds: tuple[int, int, int] = THRESHOLDS) -> None:
    """Call once a role has started up (imports done, configuration loaded)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)
