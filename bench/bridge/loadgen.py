"""Load generator for the bridge benchmark (run in its own process by run.py).

Every request is built and signed before the clock starts (unique orders, so each one is
a real claim + produce, never an in-memory duplicate), then sent over raw HTTP/1.1
keep-alive connections from uvloop — a Python HTTP client would be the bottleneck.

  closed loop:  --mode max  --connections 64 --duration 5     → 2xx/s
  open loop:    --mode rate --rate 1000 --duration 5          → p50/p99 from the *scheduled*
                send time (no coordinated omission)
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import time
from urllib.parse import urlsplit


def build_requests(url: str, store_secret: str, n: int, seed: str) -> list[bytes]:
    parts = urlsplit(url)
    out = []
    for i in range(n):
        order = {
            "id": 100000 + i, "parent_id": 0, "number": str(100000 + i), "status": "processing", "currency": "PLN",
            "version": "9.4.0", "prices_include_tax": False, "date_created": "2026-11-25T13:00:00",
            "date_created_gmt": "2026-11-25T12:00:00", "date_modified": "2026-11-25T13:00:05",
            "date_modified_gmt": f"2026-11-25T12:{i // 3600 % 60:02d}:{i % 60:02d}", "discount_total": "0.00",
            "shipping_total": "10.00", "total": f"{100 + i % 900}.90", "total_tax": "28.03",
            "customer_id": 1 + i % 5000,
            "order_key": f"wc_order_{seed}{i}",
            "billing": {"first_name": "Zofia", "last_name": "Kowalska", "company": "", "address_1": "ul. Długa 1",
                        "address_2": "", "city": "Kraków", "state": "", "postcode": "30-001", "country": "PL",
                        "email": f"c{i % 5000}@example.com", "phone": "+48 600 000 000"},
            "shipping": {"first_name": "Zofia", "last_name": "Kowalska", "company": "", "address_1": "ul. Długa 1",
                         "address_2": "", "city": "Kraków", "state": "", "postcode": "30-001", "country": "PL",
                         "phone": ""},
            "payment_method": "przelewy24", "payment_method_title": "Przelewy24", "transaction_id": f"tx{seed}{i}",
            "created_via": "checkout", "customer_note": "",
            "line_items": [{"id": 1, "name": "Kubek żółty", "product_id": 42, "variation_id": 0, "quantity": 2,
                            "tax_class": "", "subtotal": "139.90", "subtotal_tax": "0.00", "total": "139.90",
                            "total_tax": "0.00", "taxes": [], "meta_data": [], "sku": "MUG-Y", "price": 69.95},
                           {"id": 2, "name": "Herbata", "product_id": 43, "variation_id": 0, "quantity": 1,
                            "tax_class": "", "subtotal": "19.00", "subtotal_tax": "0.00", "total": "19.00",
                            "total_tax": "0.00", "taxes": [], "meta_data": [], "sku": "TEA", "price": 19}],
            "shipping_lines": [{"id": 3, "method_title": "Flat rate", "method_id": "flat_rate", "total": "10.00"}],
            "coupon_lines": [], "fee_lines": [], "refunds": [],
            "meta_data": [{"id": 10, "key": "_bench_run", "value": seed}],
            "_links": {"self": [{"href": f"https://shop.example/wp-json/wc/v3/orders/{100000 + i}"}]},
        }
        body = json.dumps(order, separators=(",", ":"), ensure_ascii=True).replace("/", "\\/").encode()
        sig = base64.b64encode(hmac.new(store_secret.encode(), body, hashlib.sha256).digest()).decode()
        head = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
                f"User-Agent: WooCommerce/9.4.0 Hookshot (WordPress/6.7)\r\nX-WC-Webhook-Topic: order.updated\r\n"
                f"X-WC-Webhook-Resource: order\r\nX-WC-Webhook-Event: updated\r\nX-WC-Webhook-Signature: {sig}\r\n"
                f"X-WC-Webhook-ID: 7\r\nX-WC-Webhook-Delivery-ID: {i}\r\nContent-Length: {len(body)}\r\n\r\n")
        out.append(head.encode() + body)
    return out


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def run(args: argparse.Namespace, requests: list[bytes]) -> dict:
    parts = urlsplit(args.url)
    conns = [await asyncio.open_connection(parts.hostname, parts.port) for _ in range(args.connections)]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    it = iter(requests)
    start = time.perf_counter()
    cpu_start = time.process_time()
    deadline = start + args.duration

    if args.mode == "max":
        async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while time.perf_counter() < deadline:
                req = next(it, None)
                if req is None:
                    return
                t0 = time.perf_counter()
                writer.write(req)
                status = await _read_response(reader)
                latencies.append(time.perf_counter() - t0)
                statuses[status] = statuses.get(status, 0) + 1

        await asyncio.gather(*(worker(r, w) for r, w in conns))
    else:
        free: asyncio.Queue = asyncio.Queue()
        for c in conns:
            free.put_nowait(c)
        interval = 1.0 / args.rate
        tasks = []

        async def one(req: bytes, scheduled: float) -> None:
            reader, writer = await free.get()
            try:
                writer.write(req)
                status = await _read_response(reader)
            finally:
                free.put_nowait((reader, writer))
            latencies.append(time.perf_counter() - scheduled)
            statuses[status] = statuses.get(status, 0) + 1

        n = int(args.rate * args.duration)
        for k in range(n):
            scheduled = start + k * interval
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            req = next(it, None)
            if req is None:
                break
            tasks.append(asyncio.create_task(one(req, scheduled)))
        await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    for _, w in conns:
        w.close()
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")

    ok = sum(v for k, v in statuses.items() if 200 <= k < 400)  # 3xx: the tracking benchmark's redirects
    return {"mode": args.mode, "rate": args.rate, "connections": args.connections, "elapsed_s": round(elapsed, 3),
            "requests": sum(statuses.values()), "ok": ok, "statuses": statuses, "ok_per_s": round(ok / elapsed, 1),
            "p50_ms": round(pct(0.50), 2), "p99_ms": round(pct(0.99), 2), "max_ms": round(pct(1.0), 2),
            # the load generator's own CPU per request (it shares the cores with the bridge)
            "cpu_us_per_req": round(cpu / max(1, sum(statuses.values())) * 1e6, 1)}


def add_load_options(ap: argparse.ArgumentParser) -> None:
    """The loop's options, shared with the tracking benchmark's load generator."""
    ap.add_argument("--mode", choices=("max", "rate"), default="max")
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--seed", default="r")


def request_count(args: argparse.Namespace, max_per_s: int) -> int:
    """Requests to build: enough for the run at the rate, or at `max_per_s` closed-loop."""
    return int((args.rate if args.mode == "rate" else max_per_s) * args.duration * 1.05) + 100


def drive(args: argparse.Namespace, requests: list[bytes]) -> None:
    """Run the loop on uvloop (when installed) and print its JSON line."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(run(args, requests))), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--secret", required=True)
    add_load_options(ap)
    args = ap.parse_args()
    drive(args, build_requests(args.url, args.secret, request_count(args, 12000), args.seed))


if __name__ == "__main__":
    main()
