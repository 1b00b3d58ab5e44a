"""Benchmark: storefront events per second through the scheduler's activity reader (ONE
`wooflow scheduler --no-scan` process), on the real broker and database.

A backlog of N `product_viewed` events (2,000 sessions, 30 products; Avro, 12 partitions)
is produced first; then the scheduler starts and the clock runs until its group's lag on
woo.storefront is 0 — start-up and group join included, so short backlogs understate it.
Each run uses fresh topics and a fresh store, deleted afterwards.

Needs Kafka and PostgreSQL: `eval "$(.venv/bin/wooflow dev up)"` (or export
KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL), then

    .venv/bin/python bench/scheduler/bench_activity.py --events 20000 --runs 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from wooflow.db.engine import get_engine
from wooflow.db.migrate import upgrade
from wooflow.kafka.admin import create_topics, delete_topics_with_prefix
from wooflow.kafka.groups import lag
from wooflow.kafka.headers import event_headers
from wooflow.kafka.producer import Producer
from wooflow.schemas.codec import get_codec
from wooflow.settings import Settings
from wooflow.stores import Store, upsert_store


def backlog(s: Settings, store_id: str, n: int) -> None:
    topic, codec, producer = s.topic("woo.storefront"), get_codec(None), Producer(s)
    now = datetime.now(timezone.utc)
    for i in range(n):
        session = f"sess{i % 2000:06d}"
        ev = {"event_id": uuid.uuid4().hex, "store_id": store_id, "customer_key": "s" + session, "occurred_at": now,
              "received_at": now, "source": "storefront", "schema_version": 1, "topic": "storefront.product_viewed",
              "store_timezone": "UTC", "session_id": session, "event_type": "product_viewed", "product_id": i % 30,
              "category_id": None, "query": None, "cart": [], "cart_total": None, "currency": None, "email": None,
              "customer_id": None, "url": None, "properties": {}}
        producer.produce(topic, codec.encode("StorefrontEvent", ev, topic), key=f"{store_id}:s{session}",
                         headers=event_headers(store_id, "StorefrontEvent"))
    producer.flush(60)
    producer.close()


def one_run(n: int) -> float:
    tag = f"b{uuid.uuid4().hex[:8]}"
    s = Settings(topic_prefix=f"{tag}.", topic_partitions=12, scheduler_group=f"{tag}-scheduler")
    create_topics(s)
    store = Store(id=tag, url="http://127.0.0.1:1", webhook_secret="x")
    upsert_store(get_engine(s.database_url), store)
    try:
        backlog(s, store.id, n)
        env = {**os.environ, "WOOFLOW_TOPIC_PREFIX": s.topic_prefix, "WOOFLOW_SCHEDULER_GROUP": s.scheduler_group,
               "WOOFLOW_SCHEDULER_STORES": store.id, "WOOFLOW_LOG_LEVEL": "WARNING"}
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "wooflow.cli", "scheduler", "--no-scan"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while True:
                time.sleep(0.5)
                try:
                    if sum(p.lag for p in lag(s, s.scheduler_group, [s.topic("woo.storefront")], timeout=10)) == 0:
                        return n / (time.monotonic() - started)
                except Exception:  # the group has not committed yet
                    pass
        finally:
            proc.terminate()
            proc.wait(30)
    finally:
        delete_topics_with_prefix(s, s.topic_prefix)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    upgrade(Settings().database_url)
    rates = []
    for i in range(args.runs):
        rates.append(one_run(args.events))
        print(f"run {i + 1}: {rates[-1]:,.0f} events/s (load {Path('/proc/loadavg').read_text().split()[0]})",
              flush=True)
    print(f"median {statistics.median(rates):,.0f} events/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
