"""Chaos runs: the whole pipeline on its own broker and PostgreSQL under seeded faults,
every effect checked against the ledger (wooflow/ops/chaos; `wooflow chaos` is the same
code for operators). Runs one profile once per seed and prints a summary line per run;
each run's JSON report is in its run directory.

    .venv/bin/python -m bench.chaos.run                              # short profile, a random seed
    .venv/bin/python -m bench.chaos.run --profile long --seed 7      # the documented long run
    .venv/bin/python -m bench.chaos.run --seeds 1,2,3 --rate 100     # several short runs

With `--prometheus` (the default when Debian's `prometheus` is installed) a real Prometheus
scrapes every role instance of the run through the run's `prometheus-targets.json`, loaded
with deploy/prometheus/rules scaled as the alert drill scales them (bench/alerts); the
summary then says which alerts its faults raised and resolved, and how many dashboard
panels returned data. (`python -m bench.alerts` is the drill that raises every alert on
purpose; a chaos run raises those its faults happen to cause.)

Needs Java ≥ 17 (the broker) and the dev extras (aiosmtpd); never uses
KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL: a chaos run stops and restarts its own services.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.alerts.panels import check_panels, dashboard_queries
from bench.alerts.rules import Scale, write_scaled_rules
from wooflow.devinfra.kafka import LauncherError
from wooflow.devinfra.prometheus import AlertWatch, PrometheusClient, PrometheusServer, find_prometheus
from wooflow.ops.chaos.plan import PROFILES
from wooflow.ops.chaos.run import Options, run
from wooflow.settings import Settings


@contextmanager
def scraped(run_dir: Path) -> Iterator[tuple[PrometheusServer, AlertWatch]]:
    """A Prometheus over the run's own file_sd targets (rewritten as instances come and go)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    rules = write_scaled_rules(run_dir / "prometheus" / "rules", Scale())
    with PrometheusServer(run_dir / "prometheus", [], [rules], targets_file=run_dir / "prometheus-targets.json") \
            as prom, AlertWatch(prom.client) as watch:
        yield prom, watch


def observations(client: PrometheusClient, watch: AlertWatch, start: float, end: float) -> dict[str, Any]:
    """Which alerts went pending, fired and resolved during the run; which panels had data."""
    alerts: dict[str, dict[str, int]] = {}
    for e in watch.snapshot():
        a = alerts.setdefault(e.name, {"pending": 0, "fired": 0, "resolved": 0})
        a["pending"] += 1
        a["fired"] += e.firing_at is not None
        a["resolved"] += e.firing_at is not None and e.resolved_at is not None
    _, variables = dashboard_queries()
    values = {v.name: next(iter(sorted(client.label_values(v.label, v.metric))), "") for v in variables}
    panels = check_panels(client, start, end, values=values)
    shipped = sorted(r.name for r in client.rules() if r.kind == "alerting")
    return {"alerts": alerts, "alerts_not_raised": [n for n in shipped if n not in alerts],
            "panels": len(panels), "panels_with_data": sum(p.has_data for p in panels),
            "empty_panels": [f"{p.query.dashboard}: {p.query.panel}" for p in panels if not p.has_data]}


def one_run(opts: Options, prometheus: bool) -> dict[str, Any]:
    if not prometheus:
        return run(opts, say=lambda m: print(m, flush=True))
    with scraped(opts.run_dir) as (prom, watch):
        print(f"Prometheus at {prom.url}", flush=True)
        start = time.time()
        report = run(opts, say=lambda m: print(m, flush=True))
        report["prometheus"] = observations(prom.client, watch, start, time.time())
    opts.run_dir.joinpath("prometheus.json").write_text(json.dumps(report["prometheus"], indent=2) + "\n")
    return report


def prometheus_installed() -> bool:
    try:
        find_prometheus()
    except LauncherError:
        return False
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=sorted(PROFILES), default="short")
    ap.add_argument("--seed", type=int, help="one run with this seed")
    ap.add_argument("--seeds", help="comma-separated seeds, one run each")
    ap.add_argument("--rate", type=float, help="events per second (default: the profile's, 200)")
    ap.add_argument("--prometheus", action=argparse.BooleanOptionalAction, default=None,
                    help="scrape the run with a real Prometheus (default: when one is installed)")
    ap.add_argument("--out", type=Path, default=Path("chaos-runs"), help="where the run directories go")
    args = ap.parse_args()
    seeds = ([int(x) for x in args.seeds.split(",")] if args.seeds else
             [args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)])
    s = Settings()
    prometheus = prometheus_installed() if args.prometheus is None else args.prometheus
    failed = 0
    for seed in seeds:
        run_dir = args.out.resolve() / f"{args.profile}-{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        print(f"== chaos {args.profile} seed {seed} → {run_dir}", flush=True)
        report = one_run(Options(PROFILES[args.profile], seed, run_dir, s.cache_dir, rate=args.rate), prometheus)
        failed += not report["passed"]
        summary = {k: report[k] for k in ("passed", "seed", "wall_s", "rounds", "lost", "duplicated", "repeated",
                                          "unexpected", "faults", "recovery_s")}
        summary["events"] = report["events"]["total"]
        summary["effects"] = report["effects"]["expected"]
        print(json.dumps(summary), flush=True)
        if "prometheus" in report:
            print("prometheus:", json.dumps(report["prometheus"]), flush=True)
        if report["problems"]:
            print("problems:", *report["problems"], sep="\n  ", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
