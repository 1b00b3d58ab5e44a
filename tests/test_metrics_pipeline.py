"""Every role's /metrics after real traffic: orders through the simulator → bridge → rules →
workers → sink, a forged signature, and an order of a second store whose REST API is
unreachable (its action retries, then goes to the DLQ)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import tests.pipeline as pipeline_module
from tests.harness import deliver, hook_url
from tests.pipeline import BIG_ORDER_RULE, Pipeline, add_rule
from tests.support import RoleProcess, free_port, make_store, ready, wait_for, wait_until_pipeline_idle
from wooflow.kafka import topics

pytestmark = pytest.mark.e2e

Samples = list[tuple[str, dict[str, str], float]]


def scrape(url: str) -> Samples:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return [(s.name, s.labels, s.value) for fam in text_string_to_metric_families(text) for s in fam.samples]


def scrape_if(url: str, ok: Callable[[Samples], bool]) -> Samples | None:
    samples = scrape(url)
    return samples if ok(samples) else None


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items()))


def place(sim_store: Any, total_: str, email: str) -> int:
    product = sim_store.create_product(f"Product {total_} {random.random()}", total_)
    return int(sim_store.create_order(line_items=[{"product_id": product.id, "quantity": 1}],
                                      billing={"email": email, "first_name": "Ola", "country": "PL"},
                                      status="processing").id)


@pytest.fixture
def metrics_ports(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """Pipeline's roles started with a metrics port each; the workers with the store label off."""
    ports = {role: free_port() for role in ("rules", "workers", "sink")}

    class MetricsRole(RoleProcess):
        def __init__(self, role: str, settings: Any, log_dir: Any, *args: str, **env: str) -> None:
            if role in ports:
                env = {"WOOFLOW_METRICS_PORT": str(ports[role]), "WOOFLOW_LAG_INTERVAL_S": "0.5", **env}
            if role == "workers":
                env = {"WOOFLOW_METRICS_STORE_LABEL": "false", **env}
            super().__init__(role, settings, log_dir, *args, **env)

    monkeypatch.setattr(pipeline_module, "RoleProcess", MetricsRole)
    yield ports


def test_every_role_reports_its_traffic(settings, engine, logs_dir, metrics_ports) -> None:  # type: ignore[no-untyped-def]
    settings = settings.model_copy(update={"action_max_attempts": 2})
    urls = {role: f"http://127.0.0.1:{port}" for role, port in metrics_ports.items()}
    # a second store whose REST API nobody answers: its actions can only fail
    unreachable = make_store(engine, f"http://127.0.0.1:{free_port()}")
    add_rule(engine, unreachable.id, BIG_ORDER_RULE)
    with ExitStack() as stack:
        p = Pipeline(settings, engine, logs_dir, stack, rules=(BIG_ORDER_RULE,))
        store = p.store.id
        api_port = free_port()
        api = RoleProcess("api", settings, logs_dir, "--host", "127.0.0.1", "--port", str(api_port))
        stack.callback(api.stop)
        api.start()
        urls["bridge"], urls["api"] = p.bridge_url, f"http://127.0.0.1:{api_port}"

        try:
            for role, url in urls.items():
                wait_for(lambda url=url: ready(url), 60, 0.2, f"{role} /readyz")
            big = [place(p.sim.store, "150.00", f"m{i}@example.com") for i in range(2)]
            place(p.sim.store, "10.00", "small@example.com")
            wait_for(lambda: all(p.wooflow_notes(o) for o in big), 60, 0.2, "notes on the big orders")
            # a forged delivery
            forged = deliver(hook_url(p.bridge_url, store), "", "order.created", b'{"id": 1}',
                             headers={"X-WC-Webhook-Signature": "Zm9yZ2Vk"})
            assert forged.status_code == 401
            # the same order, delivered (correctly signed) for the unreachable store
            body = httpx.get(f"{p.sim.api_url}/orders/{big[0]}", auth=p.sim.auth).content
            delivered = deliver(hook_url(p.bridge_url, unreachable.id), unreachable.webhook_secret, "order.created",
                                body)
            assert delivered.status_code == 200, delivered.text

            workers = wait_for(lambda: scrape_if(urls["workers"], lambda s: total(
                s, "wooflow_dlq_total", stage="workers", reason="max_attempts") >= 1), 90, 0.5,
                "the unreachable store's action in the DLQ")
            # exact counts below: every event and command has been processed before they are read
            wait_until_pipeline_idle(settings, timeout=90)
            sink = wait_for(lambda: scrape_if(urls["sink"], lambda s: total(
                s, "wooflow_execution_logs_written_total") >= 3 and total(
                s, "wooflow_consumer_lag", group=settings.sink_group) == 0), 60, 0.5, "the sink caught up")
        except AssertionError:
            print(p.role_logs(), api.log_text()[-3000:])
            for role in ("workers", "sink"):
                print(role, [x for x in scrape(urls[role]) if x[0].startswith(("wooflow_actions", "wooflow_dlq"))])
            raise
        bridge, rules, api_samples = scrape(urls["bridge"]), scrape(urls["rules"]), scrape(urls["api"])
    assert workers is not None and sink is not None

    orders, commands, logs = (settings.topic(t) for t in (topics.ORDERS, topics.COMMANDS, topics.LOGS))
    # bridge: events in per topic and store, signature failures
    assert total(bridge, "wooflow_events_in_total", topic=topics.ORDERS, store=store) >= 3
    assert total(bridge, "wooflow_events_in_total", topic=topics.ORDERS, store=unreachable.id) >= 1
    assert total(bridge, "wooflow_webhook_signature_failures_total", store=store) == 1
    # a store's signature failures are exported at 0 from its first delivery: a forged burst
    # is then an increase() Prometheus sees, not the first sample of a new series
    assert ("wooflow_webhook_signature_failures_total", {"store": unreachable.id}, 0.0) in bridge
    assert total(bridge, "wooflow_webhooks_rejected_total", reason="invalid_signature") == 1
    # rules: events consumed, commands out, latencies, lag per partition of every event topic
    assert total(rules, "wooflow_events_consumed_total", role="rules", topic=orders, store=store) >= 3
    assert total(rules, "wooflow_commands_emitted_total", store=store, action="add_order_note") == 2
    assert total(rules, "wooflow_commands_emitted_total", store=unreachable.id, action="add_order_note") == 1
    assert total(rules, "wooflow_events_out_total", role="rules", topic=commands) == 3
    assert total(rules, "wooflow_rule_evaluation_seconds_count") >= 1
    assert total(rules, "wooflow_event_to_command_seconds_count") == 3
    lag_series = {(lab["topic"], lab["partition"]) for n, lab, _ in rules
                  if n == "wooflow_consumer_lag" and lab["group"] == settings.rules_group}
    assert len(lag_series) == len(topics.EVENT_TOPICS) * settings.topic_partitions
    # workers (store label off): actions by type and outcome, retries, DLQ, end-to-end latency
    assert total(workers, "wooflow_actions_total", store="all", action="add_order_note", outcome="succeeded") == 2
    assert total(workers, "wooflow_actions_total", store="all", action="add_order_note", outcome="dead_lettered") == 1
    assert total(workers, "wooflow_action_retries_total", action="add_order_note") >= 1
    assert total(workers, "wooflow_end_to_end_seconds_count") >= 2
    assert total(workers, "wooflow_events_consumed_total", role="workers", topic=commands, store="all") >= 3
    assert total(workers, "wooflow_events_out_total", role="workers", topic=logs, store="all") >= 3
    assert not [lab for _, lab, _ in workers if lab.get("store") in (store, unreachable.id)], \
        "store label must be 'all'"
    assert {lab["partition"] for n, lab, _ in workers if n == "wooflow_consumer_lag"} == {"0", "1", "2", "3"}
    # every role exports its dead-letter counters from its start: the first letter is an increase
    assert ("wooflow_dlq_total", {"stage": "sink", "reason": "undecodable"}, 0.0) in sink
    assert ("wooflow_dlq_total", {"stage": "rules", "reason": "undecodable"}, 0.0) in rules
    # sink: rows written, events consumed, caught up (lag 0)
    assert total(sink, "wooflow_execution_logs_written_total") >= 3
    assert total(sink, "wooflow_events_consumed_total", role="sink", topic=logs, store=store) >= 2
    assert total(sink, "wooflow_events_consumed_total", role="sink", topic=logs, store=unreachable.id) >= 1
    # every process exposes the shared names (dashboards rely on them), the API included
    for samples in (bridge, rules, workers, sink, api_samples):
        names = {n for n, _, _ in samples}
        assert {"wooflow_outbox_depth", "wooflow_scheduler_lateness_seconds_count"} <= names
    # Kafka availability comes from the bridge alone: a constant 0 from any other role would
    # read as "Kafka unavailable" on the dashboard and in the alert
    assert total(bridge, "wooflow_bridge_kafka_available") == 1
    for samples in (rules, workers, sink, api_samples):
        assert "wooflow_bridge_kafka_available" not in {n for n, _, _ in samples}
