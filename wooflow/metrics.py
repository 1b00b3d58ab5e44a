"""Prometheus metrics shared by every role (one process per role, no multiprocess mode)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

events_in = Counter("wooflow_events_in_total", "Events produced into wooflow by the bridge", ["topic", "store"])
webhooks_rejected = Counter("wooflow_webhooks_rejected_total", "Webhook deliveries answered 4xx", ["reason"])
signature_failures = Counter("wooflow_webhook_signature_failures_total", "Webhooks with a bad or missing signature", ["store"])
webhook_latency = Histogram("wooflow_webhook_seconds", "Time from request to 2xx", buckets=LATENCY_BUCKETS)

events_consumed = Counter("wooflow_events_consumed_total", "Events read by a consuming role", ["role", "topic", "store"])
commands_emitted = Counter("wooflow_commands_emitted_total", "Action commands emitted", ["store", "action"])
rule_eval_seconds = Histogram("wooflow_rule_evaluation_seconds", "Rule evaluation time per event", buckets=LATENCY_BUCKETS)
event_to_command_seconds = Histogram("wooflow_event_to_command_seconds", "Event received → command emitted", buckets=LATENCY_BUCKETS)

actions = Counter("wooflow_actions_total", "Actions executed, by outcome", ["store", "action", "outcome"])
action_retries = Counter("wooflow_action_retries_total", "Action attempts that will be retried", ["action"])
end_to_end_seconds = Histogram("wooflow_end_to_end_seconds", "Event received → action executed", buckets=LATENCY_BUCKETS)

dlq = Counter("wooflow_dlq_total", "Messages sent to automation.dlq", ["stage", "reason"])
logs_written = Counter("wooflow_execution_logs_written_total", "Execution log rows written by the sink")
consumer_lag = Gauge("wooflow_consumer_lag", "High watermark − committed offset", ["group", "topic", "partition"])
