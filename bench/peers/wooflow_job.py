"""wooflow's side of the peer benchmark (run by run.py in its own process):

- `rules`: the rule consumer (`RuleConsumer`, the code `wooflow rules` runs, with its
  production settings) reads the backlog in its own group until every event is handled
  and its state saved; the commands go to the prefix's `automation.commands`;
- `replay`: `wooflow replay --dry-run` over the same topic (`Replayer`, plan only).

Prints one JSON line: events, commands (planned, for the replay), first/last wall time
(first: the first batch handed over by Kafka) and process CPU between them.

    .venv/bin/python wooflow_job.py rules|replay --prefix P --group G --events N
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from wooflow.kafka import topics
from wooflow.settings import Settings

MARKS: dict[str, float] = {"gc_s": 0.0}


def _gc_timer(phase: str, _info: dict[str, int]) -> None:
    if phase == "start":
        MARKS["gc_at"] = time.process_time()
    else:
        MARKS["gc_s"] += time.process_time() - MARKS.get("gc_at", time.process_time())


def mark_first() -> None:
    if "first" not in MARKS:
        MARKS["first"], MARKS["cpu_first"] = time.time(), time.process_time()


def run_rules(s: Settings, n: int) -> dict[str, Any]:
    from wooflow.consumer.runner import RuleConsumer
    from wooflow.scheduler import triggers as _scheduled  # noqa: F401 - wired like `wooflow rules`
    from wooflow.scheduler.steps import store_delayed

    rc = RuleConsumer(s, store_delayed=store_delayed)
    stop = threading.Event()
    handle, save = rc.handle, rc.save_state

    def handled(batch: Any) -> None:
        mark_first()
        handle(batch)

    def saved() -> None:
        save()
        if rc.stats["events"] >= n:
            stop.set()

    rc.handle = handled  # type: ignore[method-assign]
    rc.save_state = saved  # type: ignore[method-assign]
    rc.run(stop)  # returns once the last batch's state is saved and its offsets committed
    return {"events": rc.stats["events"], "commands": rc.stats["commands"], "delayed": rc.stats["delayed"],
            "skipped": rc.stats["skipped"]}


class _Marking:
    """A reader whose first non-empty consume() marks the start (the Replayer builds its own)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def consume(self, *a: Any, **kw: Any) -> Any:
        msgs = self._inner.consume(*a, **kw)
        if msgs:
            mark_first()
        return msgs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def run_replay(s: Settings) -> dict[str, Any]:
    from wooflow.ops import replay

    make_reader = replay.make_reader
    replay.make_reader = lambda *a, **kw: _Marking(make_reader(*a, **kw))  # type: ignore[assignment]
    summary = replay.Replayer(s).run(replay.ReplaySpec(topic=topics.ORDERS))
    return {"events": summary.events, "commands": sum(t.commands for t in summary.rules.values()),
            "matched": sum(t.matched for t in summary.rules.values()), "skipped": summary.skipped_unwatched}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["rules", "replay"])
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--events", type=int, required=True)
    a = ap.parse_args()
    s = Settings(topic_prefix=a.prefix, rules_group=a.group, log_level="WARNING")
    import gc

    gc.callbacks.append(_gc_timer)
    out = run_rules(s, a.events) if a.mode == "rules" else run_replay(s)
    done, cpu = time.time(), time.process_time()
    import psutil

    names = {t.native_id: t.name for t in threading.enumerate()}
    by_thread: dict[str, float] = {}
    for t in psutil.Process().threads():
        name = names.get(t.id, "native")
        by_thread[name] = by_thread.get(name, 0.0) + t.user_time + t.system_time
    out["threads"] = {k: round(v, 2) for k, v in sorted(by_thread.items(), key=lambda kv: -kv[1])}
    print(json.dumps({**out, "first": MARKS.get("first", done), "done": done,
                      "cpu_s": cpu - MARKS.get("cpu_first", cpu), "gc_s": MARKS["gc_s"]}))


if __name__ == "__main__":
    main()
