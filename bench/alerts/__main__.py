"""`python -m bench.alerts [--json FILE] [--workdir DIR]`: run the alert drill (see drill.py).

Needs `prometheus` (Debian package), Java for the drill's own Kafka broker, and a
PostgreSQL: DATABASE_URL (or `wooflow dev up`)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from bench.alerts.drill import run_drill


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--workdir", type=Path, help="logs, Prometheus data, the broker (default: a temp dir)")
    args = parser.parse_args()
    database_url = os.environ.get("WOOFLOW_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if not database_url:
        print("set DATABASE_URL (e.g. eval \"$(wooflow dev up --no-kafka)\")", file=sys.stderr)
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="wooflow-alerts-"))
    report = run_drill(database_url, workdir)
    print(report.markdown())
    print(f"{sum(p.has_data for p in report.panels)} of {len(report.panels)} panel queries returned data; "
          f"the drill took {report.duration_s:.0f} s")
    for problem in report.problems():
        print(f"PROBLEM: {problem}")
    if args.json:
        args.json.write_text(report.to_json())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
