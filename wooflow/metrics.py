"""Prometheus metrics shared by every role (one process per role, no multiprocess mode).

Cardinality: the only unbounded-looking label is `store`. Metrics carrying it are built
with the Store* classes below, whose `labels()` passes the value through `store_label()`,
so with WOOFLOW_METRICS_STORE_LABEL=false every store collapses into store="all" without
any caller having to remember. Every other label takes values from a fixed set in code
(topic, role, action type, outcome, stage, reason) or from the partition count.

Dashboards (deploy/grafana/) and alert rules (deploy/prometheus/) may only use names
registered here; tests/test_deploy_observability.py enforces that.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, disable_created_metrics

# `_created` series double every counter's cardinality and no dashboard or alert uses them.
disable_created_metrics()

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Delayed steps ("day 3") make lateness and end-to-end times of minutes perfectly normal.
LATENESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

# --- the store label ----------------------------------------------------------------------
ALL_STORES = "all"
_store_label_on: bool | None = None


def configure(*, store_label_enabled: bool) -> None:
    """Set the store-label policy explicitly (processes otherwise read it from Settings)."""
    global _store_label_on
    _store_label_on = store_label_enabled


def store_label(store_id: str | None) -> str:
    """The `store` label value for a store id: the id itself, or "all" when per-store labels are off."""
    global _store_label_on
    if _store_label_on is None:
        from wooflow.settings import get_settings

        _store_label_on = get_settings().metrics_store_label
    if not _store_label_on:
        return ALL_STORES
    return store_id or "unknown"


class _StoreScoped:
    """`labels()` maps the `store` label through store_label(); children are plain metrics."""

    _labelnames: tuple[str, ...]

    def labels(self, *values: Any, **kw: Any) -> Any:
        if kw:
            if "store" in kw:
                kw["store"] = store_label(kw["store"])
        elif "store" in self._labelnames:
            i = self._labelnames.index("store")
            if i < len(values):
                values = (*values[:i], store_label(values[i]), *values[i + 1:])
        return super().labels(*values, **kw)  # type: ignore[misc]


class StoreCounter(_StoreScoped, Counter):
    pass


class StoreGauge(_StoreScoped, Gauge):
    pass


class StoreHistogram(_StoreScoped, Histogram):
    pass


# --- bridge ---------------------------------------------------------------------------------
events_in = StoreCounter("wooflow_events_in_total", "Events produced into wooflow by the bridge", ["topic", "store"])
webhooks_rejected = Counter("wooflow_webhooks_rejected_total", "Webhook deliveries answered 4xx", ["reason"])
signature_failures = StoreCounter("wooflow_webhook_signature_failures_total",
                                  "Webhooks with a bad or missing signature", ["store"])
webhook_latency = Histogram("wooflow_webhook_seconds", "Time from request to 2xx", buckets=LATENCY_BUCKETS)
# (bridge) dedupe, outbox, breaker, REST sources, storefront
webhooks_accepted = Counter("wooflow_webhooks_accepted_total", "Webhook deliveries answered 2xx, by outcome",
                            ["outcome"])  # produced | outbox | duplicate | ping | resource_gone | unmapped_action
events_duplicate = Counter("wooflow_events_duplicate_total", "Events dropped as already seen (same content)",
                           ["source"])
outbox_written = Counter("wooflow_outbox_written_total", "Events written to the outbox instead of Kafka")
outbox_drained = Counter("wooflow_outbox_drained_total", "Outbox events produced to Kafka after an outage")
outbox_rejected = Counter("wooflow_outbox_rejected_total", "Events answered 503 because the outbox was full")
# Exported by the bridge only (`export_bridge_gauges`): a label-less gauge starts at 0, so every
# other process would report "Kafka unavailable" for as long as it runs.
kafka_available = Gauge("wooflow_bridge_kafka_available", "1 while the bridge believes Kafka accepts writes",
                        registry=None)


_bridge_gauges_exported = False


def export_bridge_gauges() -> None:
    """Register the gauges only a bridge process may export (idempotent)."""
    global _bridge_gauges_exported
    if not _bridge_gauges_exported:
        REGISTRY.register(kafka_available)
        _bridge_gauges_exported = True


rest_events = StoreCounter("wooflow_rest_events_total", "Events produced from WooCommerce REST (backfill/poller)",
                           ["source", "store"])
storefront_rejected = Counter("wooflow_storefront_rejected_total", "Storefront requests answered 4xx", ["reason"])

# --- every consuming / producing role -------------------------------------------------------
events_consumed = StoreCounter("wooflow_events_consumed_total", "Events read by a consuming role",
                               ["role", "topic", "store"])
events_out = StoreCounter("wooflow_events_out_total", "Records produced by a role (commands, logs), per topic",
                          ["role", "topic", "store"])
consumer_refetches = Counter("wooflow_consumer_refetches_total",
                             "Partitions fetched again after their fetch stalled with messages waiting "
                             "(wooflow/kafka/stall.py)", ["topic"])
consumer_lag = Gauge("wooflow_consumer_lag", "High watermark − committed offset", ["group", "topic", "partition"])
consumer_lag_updated = Gauge("wooflow_consumer_lag_updated_timestamp_seconds",
                             "When this process last read its group's lag successfully", ["group"])

# --- rules ----------------------------------------------------------------------------------
commands_emitted = StoreCounter("wooflow_commands_emitted_total", "Action commands emitted", ["store", "action"])
rule_eval_seconds = Histogram("wooflow_rule_evaluation_seconds", "Rule evaluation time per event",
                              buckets=LATENCY_BUCKETS)
event_to_command_seconds = Histogram("wooflow_event_to_command_seconds", "Event received → command emitted",
                                     buckets=LATENCY_BUCKETS)
catalog_fetches = StoreCounter("wooflow_catalog_fetches_total",
                              "Products the rule consumer asked a store for (not in its catalog yet), by outcome: "
                              "fetched, gone (404), failed (error or timeout), skipped (store failed recently)",
                              ["store", "outcome"])
catalog_unknown = StoreCounter("wooflow_catalog_unknown_total",
                               "Category/product-tag facts computed with ordered products still unknown",
                               ["store"])

# --- workers --------------------------------------------------------------------------------
actions = StoreCounter("wooflow_actions_total", "Actions executed, by outcome", ["store", "action", "outcome"])
action_retries = Counter("wooflow_action_retries_total", "Action attempts that will be retried", ["action"])
end_to_end_seconds = Histogram("wooflow_end_to_end_seconds", "Event received → action executed",
                               buckets=LATENCY_BUCKETS)

# --- dlq / sink -----------------------------------------------------------------------------
dlq = Counter("wooflow_dlq_total", "Messages sent to automation.dlq", ["stage", "reason"])
logs_written = Counter("wooflow_execution_logs_written_total", "Execution log rows written by the sink")

# --- declared here for other areas, so dashboards and alerts can rely on the names ---------
# The bridge's PostgreSQL outbox (events answered 2xx while Kafka was unavailable).
outbox_depth = Gauge("wooflow_outbox_depth", "Webhook events waiting in the bridge's outbox for Kafka")
# The scheduler: due time of a delayed step → its command emitted.
scheduler_lateness_seconds = Histogram("wooflow_scheduler_lateness_seconds", "Step due → command emitted",
                                       buckets=LATENESS_BUCKETS)

# --- scheduler (scheduler/) -----------------------------------------------------------------
scheduler_steps = StoreCounter("wooflow_scheduler_steps_total", "Workflow steps by outcome (stored, emitted, exited)",
                               ["store", "outcome"])
scheduler_pending = Gauge("wooflow_scheduler_pending_steps", "Steps waiting in scheduled_steps (due: overdue now)",
                          ["state"])  # due | future
scheduler_triggers = StoreCounter("wooflow_scheduler_triggers_total", "Cart/behaviour/time triggers fired by the scan",
                                  ["store", "trigger"])
scheduler_scan_seconds = Histogram("wooflow_scheduler_scan_seconds", "Duration of one trigger scan", ["scan"],
                                   buckets=LATENCY_BUCKETS)
carts_total = StoreCounter("wooflow_carts_total", "Cart transitions (abandoned, recovered, ordered)",
                           ["store", "outcome"])
attributed_orders = StoreCounter("wooflow_attributed_orders_total", "Orders attributed to a workflow",
                                  ["store", "kind"])

# --- analytics (wooflow/api/tracking.py, scheduler/conversions.py) --------------------------
tracking_hits = StoreCounter("wooflow_tracking_hits_total", "Opens and clicks of tracked messages (valid links)",
                             ["store", "kind"])  # kind: open | click
tracking_rejected = Counter("wooflow_tracking_rejected_total", "Tracking hits answered 4xx, nothing recorded",
                            ["reason"])
tracking_unrecorded = Counter("wooflow_tracking_unrecorded_total",
                              "Valid tracking hits answered but not recorded (the database refused the row)")
conversions_total = StoreCounter("wooflow_conversions_total", "Orders credited to a message, by what started "
                                 "the window", ["store", "touch"])  # touch: click | open | send
attributed_revenue = StoreCounter("wooflow_attributed_revenue_total", "Order totals credited to messages, when "
                                  "first credited (refunds are in the analytics API)", ["store", "currency"])
