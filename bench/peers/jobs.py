"""The two jobs of the peer benchmark, as a plain Python user would write them for the
plain loop and the Quix Streams app (no wooflow import: this file also runs in the
Quix Streams virtual environment). wooflow's equivalent rules are in `run.py`.

- Job A (stateless): a new order (WooCommerce `order.created`) with a total above 100
  and billing country PL → a command.
- Job B (stateful): a customer's first paid order (status processing or completed;
  WooCommerce's paid statuses, wooflow's default counted statuses) → a command.

Events are read as the bridge writes them: Avro single-object encoding (2 marker bytes,
8-byte schema fingerprint, then the body), decoded with fastavro and the writer schema.
"""

from __future__ import annotations

import io
import json
from decimal import Decimal
from typing import Any

import fastavro

PAID = frozenset({"processing", "completed"})
THRESHOLD = Decimal(100)
HEADER = 10  # 0xC3 0x01 + the schema's 8-byte fingerprint


def load_schema(path: str) -> Any:
    with open(path) as f:
        return fastavro.parse_schema(json.load(f))


def decode(schema: Any, data: bytes) -> dict[str, Any]:
    if data[:2] != b"\xc3\x01":
        raise ValueError("not Avro single-object encoded")
    return fastavro.schemaless_reader(io.BytesIO(data[HEADER:]), schema)  # type: ignore[return-value]


def job_a(ev: dict[str, Any]) -> bool:
    o = ev["order"]
    return ev["action"] == "created" and o is not None and o["total"] > THRESHOLD and o["billing"]["country"] == "PL"


def paid(ev: dict[str, Any]) -> bool:
    o = ev["order"]
    return o is not None and o["status"] in PAID


def command(job: str, ev: dict[str, Any]) -> dict[str, Any]:
    return {"job": job, "event_id": ev["event_id"], "store_id": ev["store_id"], "customer_key": ev["customer_key"],
            "order_id": ev["order_id"]}
