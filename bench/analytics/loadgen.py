"""Load generator for the tracking benchmark (run in its own process by tracking.py).

Every request is a distinct, validly signed tracking hit built before the clock starts — 70%
open pixels, 30% clicks, each of another message, so each one is a real row written — sent
over raw HTTP/1.1 keep-alive connections from uvloop (a Python HTTP client would be the
bottleneck). Hits come "through a proxy": X-Forwarded-For cycles over 4,096 client
addresses, so the per-address rate limit does not refuse them (the API trusts 127.0.0.1).

  closed loop:  --mode max  --connections 64 --duration 5     → hits/s
  open loop:    --mode rate --rate 1000 --duration 5          → p50/p99 from the *scheduled*
                send time (no coordinated omission)
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.bridge.loadgen import add_load_options, drive, request_count
from wooflow import engagement

AGENT = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"


def build_requests(url: str, store: str, key: bytes, n: int, seed: str) -> list[bytes]:
    host = urlsplit(url).netloc
    now = int(time.time())
    out = []
    for i in range(n):
        m = engagement.Message(store, f"{seed}-{i:09d}", f"c{i % 50_000}", 1 + i % 50, i % 3, now, now + 86_400)
        if i % 10 < 7:
            path = f"/t/o/{engagement.sign(key, m)}.gif"
        else:
            target = f"https://shop.example/product/{i % 997}?utm_source=wooflow&utm_campaign=r{1 + i % 50}"
            path = f"/t/c/{engagement.sign(key, m, i % 4, target)}?u={quote(target, safe='')}"
        out.append((f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {AGENT}\r\n"
                    f"X-Forwarded-For: 10.{i % 16}.{i // 16 % 256}.{i % 251}\r\n\r\n").encode())
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--key-hex", required=True, help="the tracking key the hits are signed with")
    add_load_options(ap)
    args = ap.parse_args()
    drive(args, build_requests(args.url, args.store, bytes.fromhex(args.key_hex), request_count(args, 15000),
                               args.seed))


if __name__ == "__main__":
    main()
