"""`wooflow backfill --since 6h`, interrupted with Ctrl-C (SIGINT) after its first
checkpoint and run again: it resumes where it stopped, at the instant the first run
meant, and every order modified in the last six hours is produced exactly once.

A relative `--since` names a new instant on every run, so this only works because a
run is keyed by what the operator typed (`6h`), not by the instant."""

from __future__ import annotations

import signal
import subprocess
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import text

from tests.support import CLI, env_of, make_sim_store, make_store, read_topic, topic_size, wait_for
from wooflow.kafka import topics
from wooflow.simulator import ManualClock
from wooflow.simulator.server import SimulatorServer

RECENT, OLD = 2000, 40
PAGES = RECENT // 100


def _checkpoint(engine, store_id: str) -> Any:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return conn.execute(text("SELECT since_spec, resources, resource, since, started_at, next_page, done "
                                 "FROM bridge_backfill_checkpoints WHERE store_id = :s"), {"s": store_id}).all()


@pytest.mark.e2e
def test_backfill_since_6h_resumes_after_sigint_and_misses_nothing(settings, engine) -> None:  # type: ignore[no-untyped-def]
    clock = ManualClock(datetime.now(timezone.utc) - timedelta(hours=9))
    with SimulatorServer(seed=11, clock=clock) as sim:
        st = sim.store
        mug = st.create_product("Mug", "12.00")
        old = {st.create_order(line_items=[{"product_id": mug.id}], status="processing").id for _ in range(OLD)}
        clock.advance(8 * 3600)  # the rest was modified an hour ago: inside --since 6h
        recent = {st.create_order(line_items=[{"product_id": mug.id}], status="processing").id for _ in range(RECENT)}
        store = make_sim_store(engine, sim)
        cmd = [*CLI, "backfill", "--store", store.id, "--since", "6h",
               "--resources", "orders"]
        env = env_of(settings)

        before_first = datetime.now(timezone.utc)
        first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: [r for r in _checkpoint(engine, store.id) if r.next_page >= 2], 120, 0.02,
                     "the first checkpoint")
            first.send_signal(signal.SIGINT)
            out1 = first.communicate(timeout=60)[0].decode()
        finally:
            if first.poll() is None:
                first.kill()
        assert first.returncode == 130, out1[-2000:]
        assert "new run started" in out1 and "run the same command again to resume" in out1, out1[-2000:]
        (cp,) = _checkpoint(engine, store.id)
        assert (cp.since_spec, cp.resources, cp.done) == ("6h ago", "orders", False)
        assert 2 <= cp.next_page <= PAGES, "stopped before the end"
        assert before_first - timedelta(hours=6) <= cp.since <= datetime.now(timezone.utc) - timedelta(hours=6)
        produced = topic_size(settings, topics.ORDERS)
        assert (cp.next_page - 1) * 100 <= produced < RECENT

        second = subprocess.run(cmd, env=env, capture_output=True, timeout=300)
        out2 = (second.stdout + second.stderr).decode()
        assert second.returncode == 0, out2[-2000:]
        assert "resuming the run started" in out2, out2[-2000:]
        assert f"page {cp.next_page}/{PAGES}" in out2 and f"page {PAGES}/{PAGES}" in out2, out2[-2000:]
        assert f"page {cp.next_page - 1}/{PAGES} " not in out2, "pages already done were read again"
        (done,) = _checkpoint(engine, store.id)
        assert done.done and done.since == cp.since and done.started_at == cp.started_at  # the first run's instant

        events = read_topic(settings, topics.ORDERS, timeout=60)
        ids = [ev["order_id"] for _, ev in events]
        assert len(ids) == RECENT and set(ids) == recent and not old & set(ids)

        # The run is finished: the same command is a new run (six hours before now), and
        # everything in it was produced already.
        third = subprocess.run(cmd, env=env, capture_output=True, timeout=300)
        out3 = (third.stdout + third.stderr).decode()
        assert third.returncode == 0 and "new run started" in out3 and f"page 1/{PAGES}" in out3, out3[-2000:]
        assert f"0 produced, {RECENT} already seen" in out3, out3[-2000:]
        (again,) = _checkpoint(engine, store.id)
        assert again.done and again.since > cp.since
        assert topic_size(settings, topics.ORDERS) == RECENT


@pytest.mark.integration
def test_a_run_is_what_was_asked(engine) -> None:  # type: ignore[no-untyped-def]
    """Which command resumes which run, on the checkpoint table itself."""
    from wooflow.producers.backfill import _save, open_run, unfinished_runs
    from wooflow.timespec import parse_time

    store = make_store(engine)
    t0 = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
    run = open_run(engine, store.id, parse_time("6h", t0), ["orders", "customers"])
    assert not run.resumed and run.since == t0 - timedelta(hours=6) and run.resources == "customers,orders"
    _save(engine, run, "orders", next_page=4)

    # an hour later, spelled differently, resources in another order: the same run, the same instant
    later = open_run(engine, store.id, parse_time("360m", t0 + timedelta(hours=1)), ["customers", "orders"])
    assert later.resumed and later.since == run.since and later.started_at == run.started_at
    assert {r.resource: r.next_page for r in _checkpoint(engine, store.id)} == {"orders": 4, "customers": 1}
    assert len(_checkpoint(engine, store.id)) == 2

    # another --since is another run from page 1; the interrupted one keeps its checkpoints
    other = open_run(engine, store.id, parse_time("7h", t0 + timedelta(hours=1)), ["orders", "customers"])
    assert not other.resumed and other.since == t0 - timedelta(hours=6)  # 7h before 13:00
    assert unfinished_runs(engine, other) == [("6h ago", "customers,orders")]
    # so are other resources
    assert not open_run(engine, store.id, parse_time("6h", t0), ["orders"]).resumed

    # --restart: this request from page 1, at the instant it means now
    again = open_run(engine, store.id, parse_time("6h", t0 + timedelta(hours=2)), ["orders", "customers"],
                     restart=True)
    assert not again.resumed and again.since == t0 - timedelta(hours=4)
    assert {r.next_page for r in _checkpoint(engine, store.id) if r.since_spec == "6h ago"
            and r.resources == "customers,orders"} == {1}

    # finished: the same command starts a new run
    for resource in ("orders", "customers"):
        _save(engine, again, resource, done=True)
    fresh = open_run(engine, store.id, parse_time("6h", t0 + timedelta(hours=3)), ["orders", "customers"])
    assert not fresh.resumed and fresh.since == t0 - timedelta(hours=3)
