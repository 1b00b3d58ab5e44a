"""Replay benchmark: dry-run replay events/s through the rule engine (`wooflow replay --dry-run`).

    eval "$(.venv/bin/wooflow dev up)"        # or export KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL
    .venv/bin/python bench/replay/bench_replay.py --events 200000 --runs 3

Workload: the rule benchmark's (bench/rules/bench_rules.py: 100 stores × 10 rules, mixed
events), produced once per run; the live rule consumer first processes it (so customer
and order state exist, as in a real backfill), then the replay reads the whole topic
range in dry-run mode. Throughput = events / replay wall time.
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

from bench_rules import Workload, run_consumer, setup  # noqa: E402

from wooflow.kafka import topics  # noqa: E402
from wooflow.ops.replay import Replayer, ReplaySpec  # noqa: E402
from wooflow.settings import Settings  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=5000)
    args = ap.parse_args()
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or not os.environ.get("DATABASE_URL"):
        sys.exit('set KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL (e.g. eval "$(.venv/bin/wooflow dev up)")')
    from wooflow.db.migrate import upgrade

    upgrade(os.environ["DATABASE_URL"])
    rates = []
    for r in range(args.runs):
        tag = uuid.uuid4().hex[:8]
        s = Settings(topic_prefix=f"bench-{tag}.", rules_group=f"bench-{tag}", batch_size=2000,
                     batch_timeout_s=0.05, log_level="WARNING")
        events = setup(s, Workload(tag, args.events, seed=r))
        run_consumer(s, len(events), False)
        replayer = Replayer(s)
        totals = {t: 0 for t in topics.EVENT_TOPICS}
        started = time.perf_counter()
        matched = commands = 0
        for t in topics.EVENT_TOPICS:
            summary = replayer.run(ReplaySpec(topic=t, batch_size=args.batch_size))
            totals[t] = summary.events
            matched += sum(x.matched for x in summary.rules.values())
            commands += sum(x.commands for x in summary.rules.values())
        elapsed = time.perf_counter() - started
        n = sum(totals.values())
        rate = n / elapsed
        rates.append(rate)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"run {r + 1}: {n} events replayed (dry run) in {elapsed:.1f}s = {rate:,.0f} events/s; "
              f"{matched} matches, {commands} commands planned; RSS {rss:.0f} MB", flush=True)
    print(f"\nmedian of {len(rates)} runs: {statistics.median(rates):,.0f} events/s dry-run replay")


if __name__ == "__main__":
    main()
