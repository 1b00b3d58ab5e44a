"""The sizing table of docs/capacity.md, computed from measured per-event costs.

    .venv/bin/python bench/scale/capacity.py            # prints the markdown tables

Every input is a named figure below with where it was measured (docs/benchmarks.md); the
workload of a Black-Friday peak is an assumption, stated once, so a reader can change it
and print the table again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# --- measured costs ------------------------------------------------------------------------
# CPU µs per unit of work on one core of the benchmark box (2 shared cores), quiet-box
# figures where there are any.
BRIDGE_US = 143          # per signed webhook, acks=all (bench/bridge, identity round, quiet box)
BRIDGE_STOREFRONT_US = 143  # per storefront event: not measured separately, taken as a webhook's
RULES_US = 57            # per event, bench/rules' mix, warm (bench/scale's rules catalogue, quiet box, 2026-12-06)
RULES_SCALE_FACTOR = 1.58  # 90 vs 57 µs: 10,000 stores / 100,000 rules / 5,000,000 customers (bench/scale)
WORKERS_US = 600         # per command that calls a store's REST API or a webhook (bench/workers: notes, webhook)
SINK_US = 115            # per execution log, small batches (bench/e2e at 1,000/s: an upper bound)
SCHEDULER_US = 70        # per event its activity reader applies: not measured, taken as the rule consumer's
PG_US_PER_ORDER = 230    # PostgreSQL CPU per order through the whole pipeline (bench/e2e, own PostgreSQL, 1,000/s)
PG_US_PER_STOREFRONT = 100  # claim + view counts + activity: ~3 row writes at ~32 µs (bench/e2e's per-row cost)
POD_CORE_BUDGET = 0.6    # a pod is sized to use at most 60% of a core at the peak
RULES_BASE_MB = 221      # rule consumer RSS with bench/rules' catalogue and a full state cache (bench/scale)
RULE_KB = 2.5            # per rule held: 464 − 221 MB for 100,000 rules (bench/scale, every store's rules compiled)

# bytes (Avro value + key), per record (bench/e2e: Kafka bytes per order)
EVENT_BYTES = 1_114      # an order webhook's OrderEvent
STOREFRONT_BYTES = 450   # a StorefrontEvent (product view): not measured in bench/e2e, from the schema
COMMAND_BYTES = 774
LOG_BYTES = 143
# PostgreSQL rows per unit, and their size with indexes (pg_total_relation_size / rows)
ROWS_PER_ORDER_WRITTEN = 7     # bench/e2e: 5 inserted, 2 updated per order
ROWS_PER_STOREFRONT_WRITTEN = 3
STATE_BYTES_PER_CUSTOMER = 324  # customer_state (bench/scale: 5,000,000 rows, 1.5 GB)
ORDER_STATE_BYTES = 430         # order_state
CLAIM_BYTES = 473               # action_executions
LOG_ROW_BYTES = 888             # execution_logs
SEEN_BYTES = 214                # bridge_seen (+ order_owners 128 per order)

# --- the assumed Black-Friday peak (per store, averaged over all stores) ---------------------
ORDERS_PER_STORE_PER_MIN = 1.0   # the peak hour's average store; big stores spread over partitions by customer
WEBHOOKS_PER_ORDER = 4           # order.created, order.updated ×2, customer.updated
STOREFRONT_PER_ORDER = 25        # views, searches, cart updates, with the storefront snippet (0 without)
COMMANDS_PER_ORDER = 1.5         # a note, an email, ...; delayed steps wait in scheduled_steps
CUSTOMERS_PER_STORE = 5_000
PEAK_HOURS_PER_DAY = 8           # a Black-Friday day's volume = 8 peak hours (retention: a week of such days)
RETENTION_DAYS = {"events": 7, "commands": 7, "logs": 3}  # the topics' defaults
REPLICATION = 3


@dataclass
class Tier:
    stores: int
    storefront_per_order: float = STOREFRONT_PER_ORDER

    @property
    def orders_s(self) -> float:
        return self.stores * ORDERS_PER_STORE_PER_MIN / 60

    @property
    def webhooks_s(self) -> float:
        return self.orders_s * WEBHOOKS_PER_ORDER

    @property
    def storefront_s(self) -> float:
        return self.orders_s * self.storefront_per_order

    @property
    def commands_s(self) -> float:
        return self.orders_s * COMMANDS_PER_ORDER


def pods(us_per_s: float) -> int:
    return max(2, math.ceil(us_per_s / 1e6 / POD_CORE_BUDGET))  # two for availability


def partitions(*pod_counts: int) -> int:
    """Room for twice the peak pods of any group, a power of two, at least 12."""
    need = 2 * max(pod_counts)
    return max(12, 2 ** math.ceil(math.log2(need)))


def row(t: Tier) -> dict[str, str]:
    events_s = t.webhooks_s + t.storefront_s
    rules_us = RULES_US * (RULES_SCALE_FACTOR if t.stores >= 10_000 else 1.0)
    bridge = pods(t.webhooks_s * BRIDGE_US + t.storefront_s * BRIDGE_STOREFRONT_US)
    rules = pods(events_s * rules_us)
    workers = pods(t.commands_s * WORKERS_US)
    sink = pods(t.commands_s * SINK_US)
    scheduler = pods(events_s * SCHEDULER_US)
    pg_cores = (t.orders_s * PG_US_PER_ORDER + t.storefront_s * PG_US_PER_STOREFRONT) / 1e6
    rows_s = t.orders_s * ROWS_PER_ORDER_WRITTEN + t.storefront_s * ROWS_PER_STOREFRONT_WRITTEN
    kafka_in = (t.webhooks_s * EVENT_BYTES + t.storefront_s * STOREFRONT_BYTES + t.commands_s * (COMMAND_BYTES
                                                                                                + LOG_BYTES))
    # read by the rule consumers and the scheduler's activity reader; commands by workers, logs by the sink
    kafka_out = (t.webhooks_s * EVENT_BYTES + t.storefront_s * STOREFRONT_BYTES) * 2 + t.commands_s * (
        COMMAND_BYTES + LOG_BYTES)
    day = 3600 * PEAK_HOURS_PER_DAY
    retained = (day * RETENTION_DAYS["events"] * (t.webhooks_s * EVENT_BYTES + t.storefront_s * STOREFRONT_BYTES)
                + day * RETENTION_DAYS["commands"] * t.commands_s * COMMAND_BYTES
                + day * RETENTION_DAYS["logs"] * t.commands_s * LOG_BYTES) * REPLICATION
    state_gb = t.stores * CUSTOMERS_PER_STORE * STATE_BYTES_PER_CUSTOMER / 1e9
    seen_gb = day * (t.webhooks_s + t.storefront_s) * SEEN_BYTES / 1e9
    per_day_gb = day * (t.orders_s * (ORDER_STATE_BYTES + 128) + t.commands_s * (CLAIM_BYTES + LOG_ROW_BYTES)) / 1e9
    rules_mb = RULES_BASE_MB + t.stores * 10 * RULE_KB / 1024
    return {
        "stores": f"{t.stores:,}",
        "orders/s": f"{t.orders_s:,.0f}",
        "events/s (webhooks + storefront)": f"{t.webhooks_s:,.0f} + {t.storefront_s:,.0f}",
        "commands/s": f"{t.commands_s:,.0f}",
        "partitions (woo.*, commands)": str(partitions(rules, scheduler, workers)),
        "bridge pods": str(bridge),
        "rule consumer pods (RSS each)": f"{rules} ({rules_mb / 1024:.1f} GB)",
        "rule compilation per new pod": f"{t.stores * 10 * 60e-6:,.0f} s CPU",
        "worker pods": str(workers),
        "sink pods": str(sink),
        "scheduler pods": str(scheduler),
        "PostgreSQL CPU at the peak": f"{pg_cores:.1f} cores",
        "PostgreSQL row writes/s": f"{rows_s:,.0f}",
        "PostgreSQL: customer state": f"{state_gb:,.1f} GB",
        "PostgreSQL growth per peak day: dedupe rows (kept 30 days)": f"{seen_gb:,.1f} GB",
        "PostgreSQL growth per peak day: orders, claims, logs": f"{per_day_gb:,.1f} GB",
        "Kafka in / out": f"{kafka_in / 1e6:,.1f} / {kafka_out / 1e6:,.1f} MB/s",
        "Kafka retained, a week at this volume (×3 replicas)": f"{retained / 1e9:,.0f} GB",
    }


def table(tiers: list[Tier]) -> str:
    rows = [row(t) for t in tiers]
    out = ["| | " + " | ".join(r["stores"] + " stores" for r in rows) + " |", "|---|" + "---|" * len(rows)]
    out += [f"| {k} | " + " | ".join(r[k] for r in rows) + " |" for k in list(rows[0])[1:]]
    return "\n".join(out)


def main() -> None:
    print("Webhooks only (no storefront snippet):\n")
    print(table([Tier(n, 0) for n in (1_000, 10_000, 100_000)]))
    print(f"\nWith the storefront snippet ({STOREFRONT_PER_ORDER} events per order):\n")
    print(table([Tier(n) for n in (1_000, 10_000, 100_000)]))


if __name__ == "__main__":
    main()
