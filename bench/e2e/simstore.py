"""The simulated store of the end-to-end benchmark, in its own process (run by bench_e2e.py).

It is WooCommerce's side of the wire: the REST API the workers write order notes to, and
the webhook deliveries (the simulator's own `DeliveryWorker`: payload built at delivery
time, PHP's JSON, signed) that start the pipeline. An open-loop driver creates orders at a
fixed rate, each one queuing an `order.created` delivery, and the store records per order:

- `scheduled`: when the driver was due to create it (open loop: a late driver counts);
- `sent`: when its webhook delivery started, how long the bridge took to answer, the status;
- `noted`: when the rule's note (text starting with the marker) arrived through REST —
  the action's effect, timed where it lands.

All times are `time.time()` of this machine, comparable with the other processes' clocks
and PostgreSQL's. Commands, a JSON list per line on stdin, answers one JSON line on stdout:

    hook URL SECRET      subscribe order.created to the bridge (the bridge must answer)
    run RATE SECONDS     create orders open-loop; answers once all were created
    dump PATH            write what was recorded since the last dump to PATH, and forget it
    quit
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from wooflow.simulator.models import DeliveryAttempt, OrderNote
from wooflow.simulator.server import SimulatorServer
from wooflow.simulator.state import SimulatedStore

MARK = "wooflow-e2e:"


class TimedStore(SimulatedStore):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scheduled: dict[int, float] = {}
        self.sent: dict[int, tuple[float, float, int | None]] = {}
        self.noted: dict[int, float] = {}

    def add_order_note(self, order_id: int, note: str, *, customer_note: bool = False,
                       added_by_user: bool = False) -> OrderNote:
        created = super().add_order_note(order_id, note, customer_note=customer_note, added_by_user=added_by_user)
        if note.startswith(MARK):
            self.noted.setdefault(order_id, time.time())
        return created

    def record_attempt(self, attempt: DeliveryAttempt) -> None:
        super().record_attempt(attempt)
        if attempt.kind == "delivery" and isinstance(attempt.resource_id, int):
            self.sent.setdefault(attempt.resource_id, (attempt.started_at, attempt.duration, attempt.status_code))


def drive(store: TimedStore, customers: list[int], product: int, rate: float, seconds: float) -> dict[str, Any]:
    """Open loop: order k is due at start + k / rate, whatever happened to order k - 1."""
    n = int(rate * seconds)
    start = time.time() + 0.05
    worst = 0.0
    for k in range(n):
        due = start + k / rate
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        else:
            worst = max(worst, -delay)
        cid = customers[k % len(customers)]
        order = store.create_order(customer_id=cid, created_via="checkout", payment_method="przelewy24",
                                   line_items=[{"product_id": product, "quantity": 1 + k % 3}],
                                   billing={"first_name": "Zofia", "email": f"c{cid}@example.com", "country": "PL"})
        store.scheduled[order.id] = due
    return {"created": n, "driver_late_max_ms": round(worst * 1000, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--customers", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=64, help="webhook deliveries in flight")
    args = ap.parse_args()
    store = TimedStore(seed=11, max_log_entries=1000)
    customers = [store.create_customer(f"c{i}@example.com", first_name="Zofia").id for i in range(args.customers)]
    product = store.create_product("Kubek", "59.90", sku="MUG").id
    with SimulatorServer(store, delivery_concurrency=args.concurrency) as sim:
        print(json.dumps({"url": sim.url, "consumer_key": store.consumer_key,
                          "consumer_secret": store.consumer_secret}), flush=True)
        for line in sys.stdin:
            cmd, *rest = json.loads(line)
            if cmd == "hook":
                url, secret = rest
                store.create_webhook("order.created", url, secret=secret)
                answer: dict[str, Any] = {"ok": True}
            elif cmd == "run":
                answer = drive(store, customers, product, float(rest[0]), float(rest[1]))
            elif cmd == "dump":
                with store.lock:
                    taken = {"scheduled": store.scheduled, "sent": store.sent, "noted": store.noted}
                    store.scheduled, store.sent, store.noted = {}, {}, {}
                with open(rest[0], "w") as f:
                    json.dump(taken, f)
                answer = {"ok": True, "orders": len(taken["scheduled"])}
            elif cmd == "quit":
                break
            else:
                answer = {"error": f"unknown command {cmd}"}
            print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
