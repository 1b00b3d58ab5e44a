"""Chaos runs: the whole pipeline on its own broker and PostgreSQL under seeded faults,
every effect checked against the ledger (wooflow/ops/chaos; `wooflow chaos` is the same
code for operators). Runs one profile once per seed and prints a summary line per run;
each run's JSON report is in its run directory.

    .venv/bin/python bench/chaos/run.py                              # short profile, a random seed
    .venv/bin/python bench/chaos/run.py --profile long --seed 7      # the documented long run
    .venv/bin/python bench/chaos/run.py --seeds 1,2,3 --rate 100     # several short runs

Needs Java ≥ 17 (the broker) and the dev extras (aiosmtpd); never uses
KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL: a chaos run stops and restarts its own services.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from wooflow.ops.chaos.plan import PROFILES
from wooflow.ops.chaos.run import Options, run
from wooflow.settings import Settings


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=sorted(PROFILES), default="short")
    ap.add_argument("--seed", type=int, help="one run with this seed")
    ap.add_argument("--seeds", help="comma-separated seeds, one run each")
    ap.add_argument("--rate", type=float, help="events per second (default: the profile's, 200)")
    ap.add_argument("--out", type=Path, default=Path("chaos-runs"), help="where the run directories go")
    args = ap.parse_args()
    seeds = ([int(x) for x in args.seeds.split(",")] if args.seeds else
             [args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)])
    s = Settings()
    failed = 0
    for seed in seeds:
        run_dir = args.out.resolve() / f"{args.profile}-{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        print(f"== chaos {args.profile} seed {seed} → {run_dir}", flush=True)
        report = run(Options(PROFILES[args.profile], seed, run_dir, s.cache_dir, rate=args.rate),
                     say=lambda m: print(m, flush=True))
        failed += not report["passed"]
        summary = {k: report[k] for k in ("passed", "seed", "wall_s", "rounds", "lost", "duplicated", "repeated",
                                          "unexpected", "faults", "recovery_s")}
        summary["events"] = report["events"]["total"]
        summary["effects"] = report["effects"]["expected"]
        print(json.dumps(summary), flush=True)
        if report["problems"]:
            print("problems:", *report["problems"], sep="\n  ", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
