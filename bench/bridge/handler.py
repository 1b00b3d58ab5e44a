"""CPU of the bridge's request pipeline alone, in-process: raw signed delivery → headers →
signature → JSON → normalise → Avro encode → 2xx body. No HTTP server, Kafka or
PostgreSQL (the ingestor is a stub that only encodes), so the number does not depend on
what else the machine runs as much as run.py's does: min over repeats of µs/request.

    .venv/bin/python bench/bridge/handler.py [--n 3000] [--repeats 7] [--compare-plain]

--compare-plain also times the plain fastavro write path (logical types and union
resolution done by fastavro per value), alternating with the fast one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import build_requests  # noqa: E402

from wooflow.producers.normalise import StoreInfo  # noqa: E402
from wooflow.producers.webhooks import WebhookReceiver  # noqa: E402
from wooflow.schemas import codec  # noqa: E402
from wooflow.settings import Settings  # noqa: E402
from wooflow.stores import Store  # noqa: E402

SECRET = "bench & <secret> 50 chars long.........."


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--compare-plain", action="store_true")
    args = ap.parse_args()
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

    fast = codec._fast
    variants = {"fast": fast} | ({"plain": lambda _v: None} if args.compare_plain else {})
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.repeats):
        for name, impl in variants.items():
            codec._fast = impl  # type: ignore[assignment]
            times[name].append(asyncio.run(once()))
    codec._fast = fast  # type: ignore[assignment]
    print(json.dumps({f"{k}_us_per_request_min": round(min(v), 1) for k, v in times.items()}
                     | {"load_average_1m": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
