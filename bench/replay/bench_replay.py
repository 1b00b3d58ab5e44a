"""Replay benchmark: dry-run replay events/s through the rule engine (`wooflow replay --dry-run`).

    eval "$(.venv/bin/wooflow dev up)"        # or export KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL
    .venv/bin/python bench/replay/bench_replay.py --events 200000 --runs 3 [--workers 1 2]

Workload: the rule benchmark's (bench/rules/bench_rules.py: 100 stores × 10 rules, mixed
events), produced once per run; the live rule consumer first processes it (so customer
and order state exist, as in a real backfill), then the replay reads the whole topic
range in dry-run mode, once per `--workers` count (1 and 2 processes by default), and
checks that every count plans the same matches and commands. Throughput = events /
replay wall time (rule compilation included). Then, what an operator usually runs after
adding a rule — one store, one rule (`--store S --rule R`) — over the same topics:
events scanned per second (other stores' events are skipped from their headers).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rules"))

from bench_rules import Workload, cleanup, run_consumer, setup

from wooflow.kafka import topics
from wooflow.ops.replay import Replayer, ReplaySpec
from wooflow.settings import Settings


def first_rule(s: Settings, store_id: str) -> int:
    from sqlalchemy import select

    from wooflow.db.engine import get_engine
    from wooflow.db.tables import rules

    with get_engine(s.database_url).connect() as conn:
        return int(conn.execute(select(rules.c.id).where(rules.c.store_id == store_id).order_by(rules.c.id)
                                .limit(1)).scalar_one())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=5000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                    help="replay processes; each count is measured on the same data, side by side")
    args = ap.parse_args()
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or not os.environ.get("DATABASE_URL"):
        sys.exit('set KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL (e.g. eval "$(.venv/bin/wooflow dev up)")')
    from wooflow.db.migrate import upgrade

    upgrade(os.environ["DATABASE_URL"])
    cleanup(Settings())  # leftovers of interrupted runs
    rates: dict[int, list[float]] = {w: [] for w in args.workers}
    targeted: list[float] = []
    for r in range(args.runs):
        tag = uuid.uuid4().hex[:8]
        s = Settings(topic_prefix=f"bench-{tag}.", rules_group=f"bench-{tag}", batch_size=2000,
                     batch_timeout_s=0.05, log_level="WARNING")
        w = Workload(tag, args.events, seed=r)
        events = setup(s, w)
        run_consumer(s, len(events), False)
        plans = {}
        for workers in args.workers:
            replayer = Replayer(s)
            started = time.perf_counter()
            n = matched = commands = 0
            for t in topics.EVENT_TOPICS:
                summary = replayer.run(ReplaySpec(topic=t, batch_size=args.batch_size), workers=workers)
                n += summary.events
                matched += sum(x.matched for x in summary.rules.values())
                commands += sum(x.commands for x in summary.rules.values())
            elapsed = time.perf_counter() - started
            rates[workers].append(n / elapsed)
            plans[workers] = (n, matched, commands)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"run {r + 1}, {workers} process(es): {n} events replayed (dry run) in {elapsed:.1f}s = "
                  f"{n / elapsed:,.0f} events/s; {matched} matches, {commands} commands planned; RSS {rss:.0f} MB",
                  flush=True)
        assert len(set(plans.values())) == 1, f"the replays disagree: {plans}"
        # what an operator usually runs after adding a rule: one store, that rule
        rule_id = first_rule(s, w.stores[0])
        replayer = Replayer(s)
        started = time.perf_counter()
        n = matched = 0
        for t in topics.EVENT_TOPICS:
            summary = replayer.run(ReplaySpec(topic=t, batch_size=args.batch_size, store=w.stores[0],
                                              rules=frozenset({rule_id})))
            n += summary.events
            matched += sum(x.matched for x in summary.rules.values())
        elapsed = time.perf_counter() - started
        targeted.append(n / elapsed)
        print(f"run {r + 1}, one store and one rule: {n} events scanned in {elapsed:.1f}s = {n / elapsed:,.0f} "
              f"events/s; {matched} matches", flush=True)
        cleanup(s, w.stores)
    print(f"\nmedian of {args.runs} runs, {args.events} events, load average now {os.getloadavg()[0]:.1f}:")
    for workers, rs in rates.items():
        print(f"  {workers} process(es): {statistics.median(rs):,.0f} events/s dry-run replay "
              f"({' · '.join(f'{x:,.0f}' for x in rs)})")
    print(f"  one store, one rule (1 process): {statistics.median(targeted):,.0f} events/s scanned "
          f"({' · '.join(f'{x:,.0f}' for x in targeted)})")

if __name__ == "__main__":
    main()
