"""REST backfill and the reconciliation poller against the simulated store: 5,000 orders,
interrupted and resumed with no duplicates, progress shown; webhooks, backfill and the
poller share one dedupe store; 429/5xx are retried with backoff."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from sqlalchemy import text

from tests.harness import BridgeThread
from tests.support import CLI, ServerThread, env_of, make_sim_store, read_topic, topic_size, wait_for
from wooflow.kafka import topics
from wooflow.producers.poller import poll_store
from wooflow.producers.sync_ingest import SyncIngest
from wooflow.producers.woo_rest import WooRest
from wooflow.schemas.codec import get_codec
from wooflow.simulator import ManualClock
from wooflow.simulator.server import SimulatorServer
from wooflow.stores import Store

ORDERS = 5000


def backfill_cmd(settings, store_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [*CLI, "backfill", "--store", store_id, "--since", "2026-01-01",
            "--resources", "orders"]


def checkpoint(engine, store_id: str) -> tuple[int, bool]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        row = conn.execute(text("SELECT next_page, done FROM bridge_backfill_checkpoints WHERE store_id = :s"),
                           {"s": store_id}).first()
    return (row[0], row[1]) if row else (0, False)


@pytest.mark.e2e
def test_backfill_of_5000_orders_resumes_after_interrupt_without_duplicates(settings, engine, logs_dir) -> None:  # type: ignore[no-untyped-def]
    with SimulatorServer(seed=3, clock=ManualClock()) as sim:
        st = sim.store
        products = [st.create_product(f"P{i}", f"{10 + i}.99") for i in range(5)]
        customers = [st.create_customer(f"b{i}@example.com") for i in range(50)]
        for i in range(ORDERS):
            st.create_order(line_items=[{"product_id": products[i % 5].id, "quantity": 1 + i % 3}],
                            customer_id=customers[i % 50].id, status="processing")
        store = make_sim_store(engine, sim)
        env = env_of(settings)
        first = subprocess.Popen(backfill_cmd(settings, store.id), env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: checkpoint(engine, store.id)[0] > 8, 120, 0.1, "backfill past page 8")
            first.send_signal(signal.SIGINT)
            out, _ = first.communicate(timeout=60)
        finally:
            if first.poll() is None:
                first.kill()
        text_out = out.decode()
        assert first.returncode == 130, text_out[-2000:]
        assert "page 1/50" in text_out and "eta" in text_out and "resume" in text_out, text_out[-2000:]
        page, done = checkpoint(engine, store.id)
        assert not done and 9 <= page < 50
        produced_before = topic_size(settings, topics.ORDERS)
        assert (page - 1) * 100 <= produced_before < ORDERS

        second = subprocess.run(backfill_cmd(settings, store.id), env=env, capture_output=True, timeout=300)
        out2 = (second.stdout + second.stderr).decode()
        assert second.returncode == 0, out2[-2000:]
        assert f"page {page}/50" in out2 and "page 50/50" in out2 and "page 1/50" not in out2, out2[-2000:]
        assert checkpoint(engine, store.id) == (51, True)

        events = read_topic(settings, topics.ORDERS, timeout=60)
        assert len(events) == ORDERS
        assert len({ev["order_id"] for _, ev in events}) == ORDERS
        assert len({ev["event_id"] for _, ev in events}) == ORDERS
        assert {ev["source"] for _, ev in events} == {"rest"}

        # a webhook of a state the backfill already produced is a duplicate (one dedupe store)
        order = st.rest_item("order", events[0][1]["order_id"])
        with BridgeThread(settings) as bridge:
            r = bridge.webhook(store, "order.created", order)
        assert r.status_code == 200 and r.json()["duplicate"] is True, r.text
        assert topic_size(settings, topics.ORDERS) == ORDERS


@pytest.mark.integration
def test_poller_catches_changes_without_webhooks_and_dedupes_with_them(settings, engine) -> None:  # type: ignore[no-untyped-def]
    settings = settings.model_copy(update={"poll_overlap_s": 5.0})
    with SimulatorServer(seed=5) as sim:
        store = make_sim_store(engine, sim)
        ingest = SyncIngest(settings, engine, get_codec(None))
        try:
            assert poll_store(store, settings, engine, ingest, ("orders",)) == {"orders": 0}  # watermark = now
            mug = sim.store.create_product("Mug", "9.00")
            order = sim.store.create_order(line_items=[{"product_id": mug.id}], billing={"email": "g@example.com"})
            # the store's dates have whole seconds: the update below is a new state only in a later one
            wait_for(lambda: sim.store.clock() >= order.modified_at + 1, 5, 0.01, "the store's next second")
            sim.store.set_order_status(order.id, "processing")
            assert poll_store(store, settings, engine, ingest, ("orders",)) == {"orders": 1}
            assert poll_store(store, settings, engine, ingest, ("orders",)) == {"orders": 0}
        finally:
            ingest.close()
        (_, ev), = read_topic(settings, topics.ORDERS)
        assert ev["source"] == "poller" and ev["order"]["status"] == "processing" and ev["action"] == "updated"
        # the webhook of that change arrives late: same content, same event id, nothing new
        sim.store.create_webhook("order.updated", "http://127.0.0.1:1/", ping=False)
        with BridgeThread(settings) as bridge:
            r = bridge.webhook(store, "order.updated", sim.store.rest_item("order", order.id))
        assert r.status_code == 200 and r.json()["duplicate"] is True, r.text


@pytest.mark.unit
def test_rest_client_backs_off_on_429_and_5xx() -> None:
    """A store that answers 429, then 503, then the page (over a real socket)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from wooflow.producers.woo_rest import Transient

    calls: list[str] = []
    mode = {"flaky": True}

    async def orders(request: Request) -> Response:
        calls.append(request.url.path)
        if not mode["flaky"]:
            return Response(status_code=500)
        if len(calls) == 1:
            return Response(status_code=429, headers={"Retry-After": "0"})
        if len(calls) == 2:
            return Response(status_code=503)
        return JSONResponse([{"id": 1}], headers={"X-WP-TotalPages": "1", "X-WP-Total": "1"})

    with ServerThread(Starlette(routes=[Route("/wp-json/wc/v3/orders", orders)])) as shop:
        store = Store(id="s", url=shop.url, webhook_secret="x", consumer_key="ck", consumer_secret="cs")
        with WooRest(store, max_attempts=4) as rest:
            started = time.monotonic()
            pages = list(rest.pages("orders", {}))
        assert [p.items for p in pages] == [[{"id": 1}]] and len(calls) == 3
        assert time.monotonic() - started >= 0.25  # exponential backoff after the 503

        mode["flaky"] = False
        with WooRest(store, max_attempts=2) as rest, pytest.raises(Transient):
            rest.page("orders", 1, {})
