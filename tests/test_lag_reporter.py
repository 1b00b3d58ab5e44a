"""The lag reporter's own Kafka client: a reading that fails gives it up, so a client
stuck after a broker restart never keeps a group's lag unreported."""

from __future__ import annotations

import pytest

from tests.support import free_port
from wooflow.kafka.lag import LagReporter, Subscription
from wooflow.settings import Settings

pytestmark = pytest.mark.unit


def test_a_lag_reader_stuck_after_a_broker_restart_is_replaced_by_a_new_client() -> None:
    s = Settings(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}")  # nothing listens there
    reporter = LagReporter(s, Subscription("g", ("t",)), interval_s=1.0, timeout_s=0.5)
    first = reporter._client()
    try:
        assert reporter.try_report() is False
        assert reporter._consumer is None  # the failed client is closed, not kept
        second = reporter._client()
        assert second is not first
        assert reporter.try_report() is False and reporter.last_success is None
    finally:
        reporter.close()
