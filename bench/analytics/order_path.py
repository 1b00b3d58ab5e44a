"""What crediting orders adds to the scheduler's activity reader: wall time per order event of
`record_order` (calendar, carts, workflow attributions and the credit) and of the credit
alone (`record_order_credit`: one statement, plus one when the customer has holdout
exposures), on 2,000 order events of 500 customers in one transaction (rolled back), in a
throw-away database on the server of DATABASE_URL.

    DATABASE_URL=... .venv/bin/python bench/analytics/order_path.py [--events 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.analytics.tracking import scratch_database
from tests.rules_kit import order_event


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    db_url = os.environ.get("DATABASE_URL")
    if not db_url:
        raise SystemExit("set DATABASE_URL (a PostgreSQL server this benchmark may create a database on)")
    from wooflow.attribution_policy import AttributionPolicy
    from wooflow.db.engine import get_engine
    from wooflow.scheduler.activity import record_order
    from wooflow.scheduler.attribution import person_keys
    from wooflow.scheduler.conversions import record_order_credit
    from wooflow.stores import Store, upsert_store

    with scratch_database(db_url, "bench_orders") as db:
        engine = get_engine(db)
        upsert_store(engine, Store(id="bench", url="https://shop.example", webhook_secret="x"))
        t0 = datetime(2026, 1, 5, tzinfo=timezone.utc)
        events = [order_event("bench", i, customer_id=1 + i % 500, total="50", created=t0 + timedelta(minutes=i))
                  for i in range(1, args.events + 1)]
        policy = AttributionPolicy()

        def credit(conn: Any, ev: Any) -> None:
            record_order_credit(conn, "bench", person_keys(ev["customer_key"], ev["order"]), ev["order"], policy)

        paths: dict[str, Callable[[Any, Any], None]] = {"credit": credit, "record_order": record_order}
        times: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(args.repeats):
            for name, fn in paths.items():  # alternating: the box's load moves both
                with engine.begin() as conn:
                    started = time.perf_counter()
                    for ev in events:
                        fn(conn, ev)
                    times[name].append((time.perf_counter() - started) / len(events) * 1e6)
                    conn.rollback()
    print(json.dumps({f"{name}_us_per_order_event": round(statistics.median(ts)) for name, ts in times.items()}
                     | {"runs": {name: [round(t) for t in ts] for name, ts in times.items()},
                        "load_average_1m": round(os.getloadavg()[0], 1)}))


if __name__ == "__main__":
    main()
