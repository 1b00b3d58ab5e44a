"""CPU of the bridge's request pipeline alone, in-process: raw signed delivery → headers →
signature → JSON → normalise → Avro encode → 2xx body. No HTTP server, Kafka or
PostgreSQL (the ingestor is a stub that only encodes), so the number does not depend on
what else the machine runs as much as run.py's does: min over repeats of µs/request.

    .venv/bin/python bench/bridge/handler.py [--n 3000] [--repeats 7] [--compare-plain]

--compare-plain also times the plain fastavro write path (fastavro walking the schema per
record) instead of the codec's generated writers, alternating with them.

--ingest swaps the stub for the real Ingestor (PostgreSQL claims + acks=all produce; needs
KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL, e.g. from `wooflow dev up`) and drives it with
--concurrency callers, still without HTTP: CPU per delivery of the whole process (all
threads, librdkafka's included) and of the event-loop thread, and deliveries/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import build_requests

from wooflow.producers.normalise import StoreInfo
from wooflow.producers.webhooks import WebhookReceiver
from wooflow.schemas import codec
from wooflow.settings import Settings
from wooflow.stores import Store

SECRET = "bench & <secret> 50 chars long.........."


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--compare-plain", action="store_true")
    ap.add_argument("--ingest", action="store_true")
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args()
    if args.ingest:
        return ingest_main(args)
    store = Store(id="s", url="https://shop.example", webhook_secret=SECRET, timezone="Europe/Warsaw",
                  currency="PLN", public_key="pk")

    class Tenants:
        async def get(self, _: str) -> Store:
            return store

        def info(self, _: Store) -> StoreInfo:
            return StoreInfo("s", "Europe/Warsaw", "PLN")

    class Ingestor:
        c = codec.get_codec(None)

        async def submit(self, events: list[Any], _: str) -> list[str]:
            for ev in events:
                self.c.encode(ev.schema, ev.record, ev.topic)
            return ["produced"] * len(events)

    receiver = WebhookReceiver(Settings(), Tenants(), Ingestor(), None, None)  # type: ignore[arg-type]
    deliveries = []
    for raw in build_requests("http://h:1/webhooks/woocommerce/s", SECRET, args.n, "h"):
        head, body = raw.split(b"\r\n\r\n", 1)
        headers = [tuple(line.split(b": ", 1)) for line in head.split(b"\r\n")[1:]]
        deliveries.append(({"type": "http", "headers": [(k.lower(), v) for k, v in headers]}, body))

    async def once() -> float:
        statuses = []

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        started = time.process_time()
        for scope, body in deliveries:
            async def receive(body: bytes = body) -> dict[str, Any]:
                return {"type": "http.request", "body": body, "more_body": False}
            await receiver.asgi(scope, receive, send, "s")
        elapsed = time.process_time() - started
        assert statuses == [200] * len(deliveries), set(statuses)
        return elapsed / len(deliveries) * 1e6

    generated = codec._writer
    variants = {"generated": generated} | ({"plain": lambda _v: None} if args.compare_plain else {})
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.repeats):
        for name, impl in variants.items():
            codec._writer = impl  # type: ignore[assignment]
            times[name].append(asyncio.run(once()))
    codec._writer = generated  # type: ignore[assignment]
    print(json.dumps({f"{k}_us_per_request_min": round(min(v), 1) for k, v in times.items()}
                     | {"load_average_1m": round(os.getloadavg()[0], 2)}))


def ingest_main(args: argparse.Namespace) -> None:
    import uuid

    import uvloop

    from wooflow.db.engine import get_engine
    from wooflow.db.migrate import upgrade
    from wooflow.kafka.admin import create_topics, delete_topics_with_prefix
    from wooflow.producers.ingest import Ingestor
    from wooflow.producers.tenants import Tenants
    from wooflow.stores import StoreCache, upsert_store

    tag = f"hbench{uuid.uuid4().hex[:6]}"
    s = Settings(kafka_bootstrap_servers=os.environ["KAFKA_BOOTSTRAP_SERVERS"], database_url=os.environ["DATABASE_URL"],
                 topic_prefix=f"{tag}.", topic_partitions=12)
    upgrade(s.database_url)
    create_topics(s)
    engine = get_engine(s.database_url)
    store = Store(id=tag, url="https://shop.example", webhook_secret=SECRET, timezone="Europe/Warsaw",
                  currency="PLN", public_key="pk")
    upsert_store(engine, store)

    def deliveries(seed: str) -> list[tuple[dict[str, Any], bytes]]:
        out = []
        for raw in build_requests(f"http://h:1/webhooks/woocommerce/{tag}", SECRET, args.n, seed):
            head, body = raw.split(b"\r\n\r\n", 1)
            headers = [tuple(line.split(b": ", 1)) for line in head.split(b"\r\n")[1:]]
            out.append(({"type": "http", "headers": [(k.lower(), v) for k, v in headers]}, body))
        return out

    async def run() -> list[dict[str, float]]:
        ingestor = Ingestor(s, engine, codec.get_codec(None))
        receiver = WebhookReceiver(s, Tenants(StoreCache(engine)), ingestor, engine, None)  # type: ignore[arg-type]
        await ingestor.start()
        results = []
        try:
            for rep in range(args.repeats):
                todo = iter(deliveries(f"{tag}{rep}"))
                statuses: list[int] = []

                async def send(message: dict[str, Any], statuses: list[int] = statuses) -> None:
                    if message["type"] == "http.response.start":
                        statuses.append(message["status"])

                async def caller(todo: Iterator[tuple[dict[str, Any], bytes]] = todo) -> None:
                    for scope, body in todo:
                        async def receive(body: bytes = body) -> dict[str, Any]:
                            return {"type": "http.request", "body": body, "more_body": False}
                        await receiver.asgi(scope, receive, send, tag)

                wall, cpu, main = time.perf_counter(), time.process_time(), time.thread_time()
                await asyncio.gather(*(caller() for _ in range(args.concurrency)))
                wall, cpu, main = time.perf_counter() - wall, time.process_time() - cpu, time.thread_time() - main
                assert statuses == [200] * args.n, set(statuses)
                results.append({"per_s": args.n / wall, "cpu_us": cpu / args.n * 1e6, "main_us": main / args.n * 1e6})
        finally:
            await ingestor.stop()
        return results

    try:
        results = uvloop.run(run())[1:]  # the first repeat warms caches and connections
    finally:
        delete_topics_with_prefix(s, s.topic_prefix)  # a shared broker: leave it no partitions behind
    print(json.dumps({"deliveries_per_s_median": round(sorted(r["per_s"] for r in results)[len(results) // 2]),
                      "process_cpu_us_per_delivery_min": round(min(r["cpu_us"] for r in results), 1),
                      "event_loop_cpu_us_per_delivery_min": round(min(r["main_us"] for r in results), 1),
                      "load_average_1m": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
