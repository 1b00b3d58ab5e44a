"""The worker's machinery: offsets of out-of-order completions, batching, claims and
deferrals on the real database, the template sandbox — and, through a real worker on a
one-partition topic, that a slow webhook and a retrying one hold back nobody else."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support import ServerThread, make_store, read_topic, unique, wait_for
from wooflow.kafka.admin import create_topics
from wooflow.kafka.producer import Producer
from wooflow.workers import claims, deferred
from wooflow.workers.batching import Batcher
from wooflow.workers.errors import ActionError
from wooflow.workers.executor import backoff_s
from wooflow.workers.templating import render
from wooflow.workers.testing import WorkerThread, command, produce
from wooflow.workers.tracker import OffsetTracker


@pytest.mark.unit
def test_tracker_commits_only_the_finished_prefix() -> None:
    t = OffsetTracker()
    h = [t.add("c", 0, off) for off in range(5)]
    t.add_outputs(h[0], 1)  # offset 0 has a log in flight
    for i in (1, 2, 4):
        t.done(h[i])
    t.done(h[0])
    assert t.committable() == {}, "offset 0 still waits for its log's ack"
    t.done(h[0])  # the ack
    assert t.committable() == {("c", 0): 3}
    t.mark_committed({("c", 0): 3})
    assert t.committable() == {}
    t.done(h[3])
    assert t.committable() == {("c", 0): 5}
    assert t.unfinished == 0
    g = t.add("c", 1, 10)
    assert t.forget({("c", 1)}) == 1 and t.unfinished == 0
    t.done(g)  # a late finish of a forgotten partition changes nothing
    assert t.unfinished == 0 and ("c", 1) not in t.committable()


@pytest.mark.unit
def test_batcher_coalesces_and_isolates_failures() -> None:
    calls: list[list[int]] = []

    def fn(items: list[int]) -> list[Any]:
        calls.append(items)
        return [ValueError(f"bad {i}") if i == 3 else i * 10 for i in items]

    async def go() -> list[Any]:
        b: Batcher[int, int] = Batcher(fn, parallel=1)
        return await asyncio.gather(*(b.submit(i) for i in range(6)), return_exceptions=True)

    out = asyncio.run(go())
    assert [o if not isinstance(o, Exception) else str(o) for o in out] == [0, 10, 20, "bad 3", 40, 50]
    assert len(calls) == 1, "six concurrent calls, one round trip"


@pytest.mark.unit
def test_backoff_grows_with_jitter_and_cap() -> None:
    for attempt in range(1, 12):
        d = backoff_s(attempt, 2.0, 60.0)
        cap = min(60.0, 2.0 * 2 ** (attempt - 1))
        assert cap / 2 <= d <= cap


@pytest.mark.unit
def test_template_sandbox_and_errors_are_clear() -> None:
    assert render("Hi {{ c.first_name | title }}", {"c": {"first_name": "ala"}}) == "Hi Ala"
    assert render("<b>{{ x }}</b>", {"x": "<script>"}, html=True) == "<b>&lt;script&gt;</b>"
    cases = {
        "{{ ''.__class__.__mro__[1].__subclasses__() }}": "sandbox",
        "{{ order.__init__.__globals__ }}": "sandbox",
        "{{ 'x' * 100000000 }}": "sandbox",
        "{{ missing.value }}": "undefined",
        "{% if %}": "template error",
        "{{ 1 / 0 }}": "ZeroDivisionError",
    }
    for source, words in cases.items():
        with pytest.raises(ActionError, match=words):
            render(source, {"order": {}})


@pytest.mark.integration
def test_claims_finish_retry_and_deferrals_on_the_database(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine)
    cmd = command(store_id=store.id, action_type="add_points", params={"points": 1})
    key = cmd["idempotency_key"]
    lease = 0.5
    assert claims.claim_batch(engine, [cmd], lease)[key].outcome == "claimed"
    assert claims.claim_batch(engine, [cmd], lease)[key].outcome == "busy"
    # busy until the lease (a deadline in the database) passes; then the next copy recovers it
    outcomes: list[str] = []
    wait_for(lambda: outcomes.append(claims.claim_batch(engine, [cmd], lease)[key].outcome) or outcomes[-1] != "busy",
             10, 0.1, "the lease to expire")
    assert outcomes[-1] == "recover"
    # a transient failure: the next attempt is deferred, the execution waits for it
    payload = b"cmd-bytes"
    due = datetime.now(timezone.utc) - timedelta(seconds=1)
    topic = settings.topic("automation.commands")
    deferred.defer_batch(engine, [deferred.Deferral(topic, key, 2, store.id, due, "retry", b"k", payload, "HTTP 503")])
    assert claims.claim_batch(engine, [cmd], lease)[key].outcome == "stale", "attempt 1 again: a stale copy"
    assert claims.claim_batch(engine, [{**cmd, "attempt": 2}], lease)[key].outcome == "recover"
    claims.finish_batch(engine, [claims.Finish(key, "succeeded", {"x": 1}, "done", None, 2)])
    done = claims.claim_batch(engine, [{**cmd, "attempt": 3}], lease)[key]
    assert (done.outcome, done.status, done.attempts, done.message, done.result) == ("done", "succeeded", 2, "done",
                                                                                      {"x": 1})
    # release: produced back to the commands topic, then deleted
    producer = Producer(settings)
    try:
        assert deferred.release_due(engine, producer, topic) == 1
    finally:
        producer.close()
    with engine.connect() as conn:
        left = conn.execute(text("SELECT count(*) FROM deferred_commands WHERE idempotency_key = :k"),
                            {"k": key}).scalar_one()
    assert left == 0
    from confluent_kafka import TopicPartition

    from wooflow.kafka.consumer import make_reader

    c = make_reader(settings, unique("r"))
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(settings.topic_partitions)])
        values: list[bytes] = []
        wait_for(lambda: values.extend(m.value() for m in c.consume(100, 0.5) if not m.error()) or payload in values,
                 20, 0.1, "the released command")
    finally:
        c.close()


@pytest.mark.integration
def test_slow_and_retrying_commands_do_not_hold_back_others(settings, engine) -> None:  # type: ignore[no-untyped-def]
    s = settings.model_copy(update={"topic_prefix": unique("one") + ".", "topic_partitions": 1,
                                    "workers_group": unique("g"), "webhook_allowlist": "127.0.0.1/32",
                                    "action_retry_base_s": 5.0, "action_max_attempts": 2})
    create_topics(s)
    slow_started, slow_answered, release = threading.Event(), threading.Event(), threading.Event()

    async def slow(request: Request) -> Response:
        slow_started.set()
        await asyncio.to_thread(release.wait, 10)  # held until the test lets it answer (or 10 s)
        slow_answered.set()
        return Response(status_code=200)

    async def fail(request: Request) -> Response:
        return Response(status_code=503)

    app = Starlette(routes=[Route("/slow", slow, methods=["POST"]), Route("/fail", fail, methods=["POST"])])
    with ServerThread(app) as srv:
        store = make_store(engine)
        first = [command(store_id=store.id, action_type="webhook", customer_key="slow",
                         params={"url": f"{srv.url}/slow", "timeout": 20}),
                 command(store_id=store.id, action_type="webhook", customer_key="fail",
                         params={"url": f"{srv.url}/fail"})]
        rest = [command(store_id=store.id, action_type="add_points", params={"points": 1}, customer_key=f"k{i}")
                for i in range(30)]
        produce(s, first + rest)  # one partition: the slow one comes first
        with WorkerThread(s):
            keys = {c["idempotency_key"] for c in rest}
            try:
                wait_for(lambda: keys <= {r["idempotency_key"] for _, r in read_topic(s, "automation.logs")
                                          if r["status"] == "succeeded"}, 30, 0.2, "the 30 quick commands")
                # they all finished while the slow webhook was still waiting for its answer, and the
                # failing one was put aside for a retry in ~5 s instead of being retried in place
                assert slow_started.is_set() and not slow_answered.is_set()
                statuses = [r["status"] for _, r in read_topic(s, "automation.logs")
                            if r["idempotency_key"] == first[1]["idempotency_key"]]
                assert statuses == ["retrying"]
            finally:
                release.set()
            wait_for(lambda: any(r["idempotency_key"] == first[0]["idempotency_key"] and r["status"] == "succeeded"
                                 for _, r in read_topic(s, "automation.logs")), 30, 0.2, "the slow webhook")
