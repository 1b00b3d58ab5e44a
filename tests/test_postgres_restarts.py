"""PostgreSQL going away for a few seconds (a restart, a failover) while the roles run:
they wait for it and go on, in the same process — no command dead-lettered as an
"internal error", no batch role exiting. The database is reached through a TCP proxy
that drops every connection and refuses new ones for a while (what a restart looks
like from the client side), with the session's real PostgreSQL behind it."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.effects_kit import HttpReceiver, TcpProxy, settled
from tests.pipeline import add_rule
from tests.rules_kit import EventProducer, order_event
from tests.support import RoleProcess, ServerThread, make_store, read_topic, unique, wait_for, wait_until_consumed
from wooflow.dlq import Filters, read_dlq
from wooflow.kafka import topics
from wooflow.settings import Settings
from wooflow.workers.testing import command, produce

pytestmark = pytest.mark.integration


NOTE_RULE = {"name": "note", "trigger": "new_order", "actions": [
    {"type": "add_order_note", "params": {"note": "n {{ order.id }}"}}]}


@pytest.fixture
def proxy(engine):  # type: ignore[no-untyped-def]
    """The session's PostgreSQL behind a TCP proxy the test can cut and restore."""
    url = engine.url
    with TcpProxy(str(url.host), int(url.port or 5432)) as p:
        yield p


def proxied(engine: Any, proxy: TcpProxy) -> str:
    url = engine.url.set(host="127.0.0.1", port=proxy.port)
    return str(url.render_as_string(hide_password=False))


def blink(proxy: TcpProxy, seconds: float, during: Any = None) -> None:
    """PostgreSQL unreachable for `seconds` (connections dropped, new ones refused); `during`
    runs meanwhile, e.g. producing work that needs the database."""
    proxy.cut()
    started = time.monotonic()
    if during is not None:
        during()
    time.sleep(max(0.0, seconds - (time.monotonic() - started)))  # the outage's length, not a wait for a result
    proxy.restore()


def test_workers_wait_for_postgresql_instead_of_dead_lettering_internal_error(settings, engine,  # type: ignore[no-untyped-def]
                                                                               logs_dir) -> None:
    http = HttpReceiver()
    url = engine.url
    with ServerThread(http.app()) as srv, TcpProxy(str(url.host), int(url.port or 5432)) as proxy:
        store = make_store(engine)

        def hooks(n: int) -> list[Any]:
            return [command(store_id=store.id, action_type="webhook", customer_key=unique("c"),
                            params={"url": f"{srv.url}/hook"}) for _ in range(n)]

        before, during = hooks(20), hooks(20)
        worker = RoleProcess("workers", settings, logs_dir, WOOFLOW_DATABASE_URL=proxied(engine, proxy),
                             WOOFLOW_WEBHOOK_ALLOWLIST="127.0.0.1/32", WOOFLOW_ACTION_LEASE_S="30").start()
        try:
            produce(settings, before)
            wait_for(lambda: len(http.counts()) >= 5, 60, 0.02, "the first webhooks delivered")
            # the cut meets commands between their claim and their finish, and new ones before their claim
            blink(proxy, 4.0, lambda: produce(settings, during))
            keys = [c["idempotency_key"] for c in before + during]
            with engine.connect() as conn:
                def finished() -> bool:
                    done = conn.execute(text("SELECT count(*) FROM action_executions WHERE idempotency_key = ANY(:k) "
                                             "AND status = 'succeeded'"), {"k": keys}).scalar_one()
                    conn.rollback()
                    return int(done) == len(keys)
                settled(settings, engine, keys, finished, timeout=90)
            assert worker.alive(), worker.log_text()[-3000:]
        finally:
            worker.stop()
    letters = [r for r in read_dlq(settings, Filters(store=store.id))]
    assert letters == [], [(r["reason"], r["error"][:200]) for r in letters]
    # every webhook went out, once (a command held back by the outage was not repeated)
    assert http.counts() == dict.fromkeys((c["idempotency_key"] for c in before + during), 1)
    assert "wait for the database" in worker.log_text()  # the outage was met, not missed


def test_rule_consumer_and_sink_read_their_batch_again_when_postgresql_blinks_instead_of_exiting(  # type: ignore[no-untyped-def]
        settings: Settings, engine, logs_dir: Path, proxy: TcpProxy) -> None:
    store = make_store(engine)
    add_rule(engine, store.id, NOTE_RULE)
    env = {"WOOFLOW_DATABASE_URL": proxied(engine, proxy)}
    rules, sink = RoleProcess("rules", settings, logs_dir, **env), RoleProcess("sink", settings, logs_dir, **env)
    events = EventProducer(settings)
    logs = _log_producer(settings, store.id)
    try:
        rules.start()
        sink.start()
        for n in range(50):
            events.send("OrderEvent", order_event(store.id, n + 1, email=f"a{n}@example.com"))
        events.flush()
        logs(range(0, 50))
        wait_until_consumed(settings, settings.rules_group, topics.EVENT_TOPICS, timeout=60)

        def more() -> None:  # batches that meet the outage
            for n in range(50, 100):
                events.send("OrderEvent", order_event(store.id, n + 1, email=f"a{n}@example.com"))
            events.flush()
            logs(range(50, 100))
            wait_for(lambda: "read again" in rules.log_text() and "read again" in sink.log_text(), 30, 0.1,
                     "both roles to meet the outage")

        blink(proxy, 3.0, more)
        wait_until_consumed(settings, settings.rules_group, topics.EVENT_TOPICS, timeout=90)
        wait_until_consumed(settings, settings.sink_group, [topics.LOGS], timeout=90)
        assert rules.alive() and sink.alive(), rules.log_text()[-2000:] + sink.log_text()[-2000:]
        assert rules.starts == sink.starts == 1
    finally:
        rules.stop()
        sink.stop()
    cmds = [c for _, c in read_topic(settings, topics.COMMANDS) if c["store_id"] == store.id]
    assert sorted(int(c["subject_id"]) for c in {c["idempotency_key"]: c for c in cmds}.values()) == \
        list(range(1, 101))
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT count(*) FROM execution_logs WHERE store_id = :s"),
                            {"s": store.id}).scalar_one()
    assert rows == 100


def _log_producer(s: Settings, store_id: str) -> Any:
    from wooflow.kafka.producer import Producer
    from wooflow.schemas.codec import get_codec
    from wooflow.workers.executor import log_record

    codec, producer, topic = get_codec(s.schema_registry_url), Producer(s), s.topic(topics.LOGS)
    run = unique("e")  # log ids are derived from the event id: unique per test run

    def send(ns: range) -> None:
        for n in ns:
            cmd = command(store_id=store_id, action_type="add_order_note", params={}, event_id=f"{run}-{n}")
            producer.produce(topic, codec.encode("ExecutionLog", log_record(cmd, "succeeded", "ok", attempt=1,
                                                                            duration_s=0.01), topic), key=f"k{n}")
        producer.flush(30)

    return send


def test_scheduler_exits_with_an_error_when_a_loop_dies(settings: Settings) -> None:
    """A loop that dies stops the scheduler — with an error, so that the orchestrator sees a
    failure (exit code ≠ 0), not a requested stop."""
    from wooflow.scheduler.runner import Scheduler

    sched = Scheduler(settings.model_copy(update={"scheduler_group": f"{settings.topic_prefix}sched"}))
    assert sched.activity is not None

    def dies(stop: threading.Event) -> None:
        raise RuntimeError("the activity reader broke")

    sched.activity.run = dies  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="activity loop died"):
        sched.run(threading.Event())


def test_scheduler_activity_reader_never_dead_letters_an_event_because_postgresql_blinked(  # type: ignore[no-untyped-def]
        settings: Settings, engine, logs_dir: Path) -> None:
    from tests.rules_kit import customer_event
    from wooflow.kafka.groups import lag
    from wooflow.kafka.lag import role_subscription

    group = f"{settings.topic_prefix}scheduler"
    url = engine.url
    with TcpProxy(str(url.host), int(url.port or 5432)) as proxy:
        store = make_store(engine)
        sched = RoleProcess("scheduler", settings, logs_dir, "--no-scan", WOOFLOW_DATABASE_URL=proxied(engine, proxy),
                            WOOFLOW_SCHEDULER_GROUP=group, WOOFLOW_SCHEDULER_STORES=store.id)
        events = EventProducer(settings)
        n = 6000
        for i in range(n):  # each one a savepoint of its own in the reader's batch transaction
            events.send("CustomerEvent", customer_event(store.id, i + 1, email=f"c{i}@example.com"))
        events.flush()
        sub = role_subscription("scheduler", settings.model_copy(update={"scheduler_group": group}))
        assert sub is not None

        def behind() -> int:
            return sum(p.lag for p in lag(settings, group, [settings.topic(topics.CUSTOMERS)], timeout=10))

        try:
            sched.start()
            # the first batch is committed: the reader is in the middle of the next one
            wait_for(lambda: 0 < behind() < n, 120, 0.05, "the reader's first batch")
            blink(proxy, 3.0)
            wait_for(lambda: behind() == 0, 120, 0.5, "the reader to catch up")
            assert sched.alive() and sched.starts == 1, sched.log_text()[-3000:]
        finally:
            sched.stop()
    letters = [r for r in read_dlq(settings, Filters(stage="scheduler")) if r.get("store_id") == store.id]
    assert letters == [], [(r["reason"], r["error"][:200]) for r in letters[:3]]
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT count(*) FROM customer_calendar WHERE store_id = :s"),
                            {"s": store.id}).scalar_one()
    assert rows == n


def test_a_rule_consumer_started_while_postgresql_is_away_waits_for_it(  # type: ignore[no-untyped-def]
        settings: Settings, engine, logs_dir: Path, proxy: TcpProxy) -> None:
    store = make_store(engine)
    add_rule(engine, store.id, NOTE_RULE)
    rules = RoleProcess("rules", settings, logs_dir, WOOFLOW_DATABASE_URL=proxied(engine, proxy))
    proxy.cut()
    try:
        rules.start()
        wait_for(lambda: "PostgreSQL is unavailable" in rules.log_text(), 60, 0.1, "the consumer to wait")
        proxy.restore()
        events = EventProducer(settings)
        events.send("OrderEvent", order_event(store.id, 1, email="w@example.com"))
        events.flush()
        wait_until_consumed(settings, settings.rules_group, topics.EVENT_TOPICS, timeout=90)
        assert rules.alive() and rules.starts == 1, rules.log_text()[-3000:]
    finally:
        rules.stop()
    cmds = [c for _, c in read_topic(settings, topics.COMMANDS) if c["store_id"] == store.id]
    assert [c["subject_id"] for c in cmds] == ["1"]
