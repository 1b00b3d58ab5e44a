"""Lag reporting on the real broker, readiness on the real database, the store-label switch."""

from __future__ import annotations

import httpx
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client import REGISTRY

from tests.support import free_port, unique, wait_for
from wooflow import metrics
from wooflow.kafka import topics
from wooflow.kafka.config import consumer_config, producer_config
from wooflow.kafka.lag import LagReporter, Subscription, role_subscription
from wooflow.probes import db_ready, role_readiness, serve_probes


@pytest.mark.integration
def test_lag_is_high_watermark_minus_committed_per_partition(settings) -> None:  # type: ignore[no-untyped-def]
    topic = settings.topic(topics.ORDERS)
    producer = Producer(producer_config(settings))
    for partition, n in ((0, 5), (1, 3)):
        for i in range(n):
            producer.produce(topic, value=b"x", key=f"k{i}", partition=partition)
    assert producer.flush(30) == 0
    group = unique("lag")
    reporter = LagReporter(settings, Subscription(group, (topic, settings.topic("no.such.topic"))), interval_s=1)

    # nothing committed yet: everything retained is still to be read
    lags = reporter.report_once()
    assert lags == {(topic, 0): 5, (topic, 1): 3, (topic, 2): 0, (topic, 3): 0}
    assert REGISTRY.get_sample_value("wooflow_consumer_lag", {"group": group, "topic": topic, "partition": "0"}) == 5
    assert reporter.healthy()

    committer = Consumer(consumer_config(settings, group))
    try:
        committer.commit(offsets=[TopicPartition(topic, 0, 2), TopicPartition(topic, 1, 3)], asynchronous=False)
    finally:
        committer.close()
    lags = reporter.report_once()
    assert lags[(topic, 0)] == 3 and lags[(topic, 1)] == 0
    assert REGISTRY.get_sample_value("wooflow_consumer_lag", {"group": group, "topic": topic, "partition": "0"}) == 3
    assert (REGISTRY.get_sample_value("wooflow_consumer_lag_updated_timestamp_seconds", {"group": group}) or 0) > 0


@pytest.mark.integration
def test_role_subscriptions_match_the_roles_groups(settings) -> None:  # type: ignore[no-untyped-def]
    rules = role_subscription("rules", settings)
    assert rules is not None and rules.group == settings.rules_group and len(rules.topics) == len(topics.EVENT_TOPICS)
    assert role_subscription("workers", settings) == Subscription(settings.workers_group,
                                                                  (settings.topic(topics.COMMANDS),))
    assert role_subscription("sink", settings) == Subscription(settings.sink_group, (settings.topic(topics.LOGS),))
    assert role_subscription("api", settings) is None


@pytest.mark.integration
def test_readiness_needs_the_role_started_and_the_database(migrated: str) -> None:
    import threading

    class Runner:
        ready = threading.Event()

    runner = Runner()
    good = role_readiness(runner, migrated)
    assert good() is False  # consumer not created yet
    runner.ready.set()
    assert good() is True
    dead = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/nothing"
    assert db_ready(dead)() is False

    port_ok, port_dead = free_port(), free_port()
    servers = [serve_probes(port_ok, good, host="127.0.0.1"), serve_probes(port_dead, role_readiness(runner, dead),
                                                                            host="127.0.0.1")]
    try:
        assert httpx.get(f"http://127.0.0.1:{port_ok}/readyz").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port_dead}/readyz").status_code == 503
        assert httpx.get(f"http://127.0.0.1:{port_dead}/healthz").status_code == 200  # alive, just not ready
        assert "wooflow_consumer_lag" in httpx.get(f"http://127.0.0.1:{port_ok}/metrics").text
    finally:
        for s in servers:
            s.shutdown()


@pytest.mark.unit
def test_store_label_can_be_switched_off() -> None:
    before = metrics._store_label_on
    store = unique("store")
    try:
        metrics.configure(store_label_enabled=True)
        metrics.actions.labels(store, "add_order_note", "succeeded").inc()
        metrics.events_in.labels(topic="woo.orders", store=store).inc()
        assert REGISTRY.get_sample_value("wooflow_actions_total",
                                         {"store": store, "action": "add_order_note", "outcome": "succeeded"}) == 1
        metrics.configure(store_label_enabled=False)
        assert metrics.store_label(store) == "all"
        all_before = REGISTRY.get_sample_value("wooflow_events_in_total", {"topic": "woo.orders", "store": "all"}) or 0
        metrics.events_in.labels(topic="woo.orders", store=store).inc()
        metrics.events_in.labels("woo.orders", unique("other")).inc()
        assert REGISTRY.get_sample_value("wooflow_events_in_total",
                                         {"topic": "woo.orders", "store": "all"}) == all_before + 2
        assert REGISTRY.get_sample_value("wooflow_events_in_total", {"topic": "woo.orders", "store": store}) == 1
    finally:
        metrics._store_label_on = before


@pytest.mark.integration
def test_lag_reporter_thread_reports_until_stopped(settings) -> None:  # type: ignore[no-untyped-def]
    import threading

    stop = threading.Event()
    group = unique("lagt")
    reporter = LagReporter(settings, Subscription(group, (settings.topic(topics.LOGS),)), interval_s=0.2).start(stop)
    try:
        wait_for(reporter.healthy, 30, 0.1, "a lag reading")
        assert REGISTRY.get_sample_value("wooflow_consumer_lag",
                                         {"group": group, "topic": settings.topic(topics.LOGS), "partition": "3"}) == 0
    finally:
        stop.set()
