"""Operator commands with relative times, as typed in the runbook, on the real broker and
PostgreSQL: `dlq list --since 2h`, `replay --from 1h`, `offsets reset --to-datetime 30m`.

Messages are produced with Kafka timestamps on both sides of the boundary (an hour or
more ago, and now), so each command has to turn "2h" into the right instant to pass."""

from __future__ import annotations

import re
import subprocess
from datetime import datetime, timedelta, timezone

import pytest
from confluent_kafka import Producer

from tests.pipeline import add_rule
from tests.rules_kit import order_event
from tests.support import env_of, make_store, unique, wooflow_cli
from wooflow.kafka import topics
from wooflow.kafka.config import producer_config
from wooflow.kafka.headers import event_headers
from wooflow.ops import offsets
from wooflow.schemas.codec import get_codec
from wooflow.settings import Settings

pytestmark = pytest.mark.e2e


def wooflow(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as an operator runs it (its own process, settings from the environment)."""
    return wooflow_cli(*args, env=env_of(settings, COLUMNS="250"), timeout=180)


def _producer(settings: Settings) -> Producer:
    return Producer(producer_config(settings))


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def test_dlq_list_since_2h(settings: Settings) -> None:
    topic, codec, store = settings.topic(topics.DLQ), get_codec(None), unique("s")
    now = datetime.now(timezone.utc)
    p = _producer(settings)
    for i, (age, reason) in enumerate(((timedelta(hours=3), "old_failure"), (timedelta(minutes=20), "new_failure"))):
        failed = now - age
        rec = {"dlq_id": unique("d"), "stage": "workers", "reason": reason, "error": f"boom {i}", "store_id": store,
               "source_topic": settings.topic(topics.COMMANDS), "source_partition": 0, "source_offset": i,
               "key": b"k", "value": b"v", "headers_json": "{}", "failed_at": failed, "attempts": 1}
        p.produce(topic, codec.encode("DeadLetter", rec, topic), key=b"k", timestamp=_ms(failed))
    assert p.flush(30) == 0

    recent = wooflow(settings, "dlq", "list", "--since", "2h", "--store", store)
    assert recent.returncode == 0, recent.stderr
    assert "new_failure" in recent.stdout and "old_failure" not in recent.stdout, recent.stdout
    assert "1 dead letter(s)" in recent.stdout
    older = wooflow(settings, "dlq", "list", "--since", "4h", "--until", "2h", "--store", store)
    assert older.returncode == 0, older.stderr
    assert "old_failure" in older.stdout and "new_failure" not in older.stdout and "1 dead letter(s)" in older.stdout
    both = wooflow(settings, "dlq", "list", "--since", "1d", "--store", store)
    assert "2 dead letter(s)" in both.stdout, both.stdout


def test_replay_from_1h(settings: Settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine)
    add_rule(engine, store.id, {"name": "Every order", "trigger": "new_order",
                                "actions": [{"type": "add_order_note", "params": {"note": "seen"}}]})
    topic, codec = settings.topic(topics.ORDERS), get_codec(None)
    now = datetime.now(timezone.utc)
    p = _producer(settings)
    for order_id, age in [(i, timedelta(hours=2)) for i in range(1, 4)] + [(i, timedelta(0)) for i in range(11, 15)]:
        ev = order_event(store.id, order_id, email=f"o{order_id}@example.com")
        p.produce(topic, codec.encode("OrderEvent", ev, topic), key=f"{store.id}:{ev['customer_key']}",
                  headers=event_headers(store.id, "OrderEvent"), timestamp=_ms(now - age))
    assert p.flush(30) == 0

    def replay(*window: str) -> tuple[int, str]:
        run = wooflow(settings, "replay", "--topic", topics.ORDERS, *window, "--store", store.id, "--dry-run")
        assert run.returncode == 0, run.stderr
        found = re.search(r"(\d+) events in", run.stdout)
        assert found, run.stdout
        return int(found.group(1)), run.stdout

    events, out = replay("--from", "1h")
    assert events == 4 and re.search(r"Every order\s*│\s*4\s*│\s*4", out), out
    events, out = replay("--from", "3h", "--to", "1h")
    assert events == 3 and re.search(r"Every order\s*│\s*3\s*│\s*3", out), out
    assert replay("--from", "3h")[0] == 7


def test_offsets_reset_to_datetime_30m(settings: Settings) -> None:
    topic = settings.topic(topics.ORDERS)
    now = datetime.now(timezone.utc)
    p = _producer(settings)
    for i in range(5):
        p.produce(topic, b"old", key=f"k{i}", timestamp=_ms(now - timedelta(hours=2)))
    for i in range(3):
        p.produce(topic, b"new", key=f"k{i}", timestamp=_ms(now))
    assert p.flush(30) == 0
    group = unique("g")
    offsets.apply_reset(settings, group, offsets.plan_reset(settings, group, [topic], now + timedelta(days=1)))

    def lag() -> int:
        return sum(x.lag for x in offsets.lag(settings, group, [topic]))

    assert lag() == 0
    dry = wooflow(settings, "offsets", "reset", "--group", group, "--topic", topics.ORDERS, "--to-datetime", "30m")
    assert dry.returncode == 0 and "dry run" in dry.stdout, dry.stdout + dry.stderr
    assert lag() == 0
    done = wooflow(settings, "offsets", "reset", "--group", group, "--topic", topics.ORDERS, "--to-datetime", "30m",
                   "--execute")
    assert done.returncode == 0, done.stdout + done.stderr
    assert lag() == 3  # the three messages of the last 30 minutes will be read again
    wooflow(settings, "offsets", "reset", "--group", group, "--topic", topics.ORDERS, "--to-datetime", "3h",
            "--execute")
    assert lag() == 8
    wooflow(settings, "offsets", "reset", "--group", group, "--topic", topics.ORDERS, "--to-datetime", "now",
            "--execute")
    assert lag() == 0
