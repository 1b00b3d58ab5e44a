"""The product catalog behind `category` and `product_tag` conditions, on the real broker
and database: WooCommerce-shaped orders (line items with a product and a variation id, no
categories) match through the catalog the rule consumer keeps from product events, or
through the store's REST API for a product met first in an order — asked once; a store
that does not answer costs its batch the fetch timeout, and its unknown products never
count as absent. The dry run resolves them the same way."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text

from tests.harness import api_client, bearer
from tests.pipeline import add_rule
from tests.rules_kit import ConsumerThread, EventProducer, commands, order_event
from tests.support import ServerThread, make_sim_store, make_store, wait_for, wait_until_consumed
from wooflow.kafka import topics
from wooflow.producers.normalise import StoreInfo, normalise
from wooflow.simulator.server import SimulatorServer
from wooflow.simulator.state import SimulatedStore

pytestmark = pytest.mark.integration

NOTE = [{"type": "add_order_note", "params": {"note": "n"}}]


def rule(name: str, field: str, op: str, value: Any) -> dict[str, Any]:
    return {"name": name, "trigger": "new_order", "actions": NOTE,
            "conditions": {"match": "all", "conditions": [{"field": field, "operator": op, "value": value}]}}


def fired(cmds: list[dict[str, Any]], rule_id: int) -> list[str]:
    return sorted({c["idempotency_key"]: c["subject_id"] for c in cmds if c["rule_id"] == rule_id}.values())


def fetches(store_id: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("wooflow_catalog_fetches_total", {"store": store_id, "outcome": outcome}) or 0.0


def catalog_rows(engine: Any, store_id: str) -> dict[int, Any]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM product_catalog WHERE store_id = :s"), {"s": store_id}).all()
    return {r.product_id: r for r in rows}


def webhook(store: Any, sim: SimulatedStore, topic: str, resource_id: int,
            edit: Any = None) -> tuple[str, dict[str, Any]]:
    """The event the bridge makes of `topic`'s delivery of the resource as the store shows it."""
    payload = sim.rest_item(topic.partition(".")[0], resource_id)
    if edit is not None:
        edit(payload)
    [event] = normalise(StoreInfo(store.id, store.timezone, store.currency), topic, payload, source="webhook",
                        received_at=datetime.now(timezone.utc))
    return event.schema, dict(event.record)


def variable_product(sim: SimulatedStore, name: str, category: str, tag: str) -> tuple[int, int, int, int]:
    """A variable product with one variation: (parent id, variation id, category id, tag id)."""
    parent = sim.create_product(name, "0", type="variable", categories=[category], tags=[tag])
    variation = sim.create_variation(parent.id, "99.00", attributes={"Size": "M"})
    return parent.id, variation.id, sim.category_by_name(category).id, sim.tag_by_name(tag).id


def test_a_rest_shaped_order_matches_through_the_catalog_kept_from_product_events(settings, engine) -> None:  # type: ignore[no-untyped-def]
    # the store's REST API is unreachable: whatever matches, matches through the product events
    store = make_store(engine)
    sim = SimulatedStore(seed=1)
    parent, variation, outdoor, winter = variable_product(sim, "Jacket", "Outdoor", "winter")
    mug = sim.create_product("Mug", "20.00", categories=["Kitchen"])
    kitchen = sim.category_by_name("Kitchen").id
    ids = {name: add_rule(engine, store.id, r) for name, r in {
        "outdoor": rule("outdoor", "category", "in", str(outdoor)),
        "not_outdoor": rule("not outdoor", "category", "not_in", str(outdoor)),
        "winter": rule("winter", "product_tag", "in", [winter]),
        "kitchen": rule("kitchen", "category", "equals", kitchen),
    }.items()}
    order = sim.create_order(line_items=[{"variation_id": variation, "quantity": 1}],
                             billing={"email": "a@example.com", "country": "PL"})
    line = sim.rest_item("order", order.id)["line_items"][0]
    assert (line["product_id"], line["variation_id"]) == (parent, variation) and "categories" not in line \
        and "category_ids" not in line, "line items as WooCommerce's REST v3 shows them"
    prod = EventProducer(settings)
    with ConsumerThread(settings):
        for pid in (parent, variation, mug.id):
            prod.send(*webhook(store, sim, "product.created", pid))
        prod.flush()
        wait_until_consumed(settings, settings.rules_group, [topics.PRODUCTS])
        prod.send(*webhook(store, sim, "order.created", order.id))
        prod.flush()
        wait_until_consumed(settings, settings.rules_group, [topics.ORDERS])
    cmds = commands(settings)
    assert fired(cmds, ids["outdoor"]) == [str(order.id)]  # the variation's parent is in Outdoor
    assert fired(cmds, ids["winter"]) == [str(order.id)]
    assert fired(cmds, ids["not_outdoor"]) == [] and fired(cmds, ids["kitchen"]) == []
    rows = catalog_rows(engine, store.id)
    assert {p: (r.source, r.parent_id, list(r.category_ids)) for p, r in rows.items()} == {
        parent: ("event", 0, [outdoor]), variation: ("event", parent, []), mug.id: ("event", 0, [kitchen])}
    assert list(rows[parent].tag_ids) == [winter]
    # the terms' names beside their ids, for the console's pickers
    assert (list(rows[parent].category_names), list(rows[parent].tag_names), list(rows[mug.id].category_names)) == (
        ["Outdoor"], ["winter"], ["Kitchen"])
    assert fetches(store.id, "fetched") == fetches(store.id, "failed") == 0

    # a stock or price update changes no term: the row is not written again; a new category is
    def later(payload: dict[str, Any], categories: list[int] | None = None) -> None:
        payload["date_modified_gmt"] = payload["date_modified"] = "2031-01-01T00:00:00"
        if categories is not None:
            payload["categories"] = [{"id": c} for c in categories]

    with ConsumerThread(settings):
        prod.send(*webhook(store, sim, "product.updated", mug.id, later))
        prod.flush()
        wait_until_consumed(settings, settings.rules_group, [topics.PRODUCTS])
        assert catalog_rows(engine, store.id)[mug.id].modified_ms == rows[mug.id].modified_ms
        prod.send(*webhook(store, sim, "product.updated", mug.id, lambda p: later(p, [kitchen, outdoor])))
        prod.flush()
        wait_until_consumed(settings, settings.rules_group, [topics.PRODUCTS])
    assert list(catalog_rows(engine, store.id)[mug.id].category_ids) == [kitchen, outdoor]


def test_a_product_met_first_in_an_order_is_asked_for_once_and_kept(settings, engine) -> None:  # type: ignore[no-untyped-def]
    with SimulatorServer(seed=2) as server:
        sim = server.store
        store = make_sim_store(engine, server)
        parent, variation, outdoor, _ = variable_product(sim, "Tent", "Camping", "summer")
        other, other_variation, lamps, _ = variable_product(sim, "Lamp", "Lamps", "night")
        ids = {"camping": add_rule(engine, store.id, rule("camping", "category", "in", str(outdoor))),
               "lamps": add_rule(engine, store.id, rule("lamps", "category", "in", str(lamps))),
               "no_lamps": add_rule(engine, store.id, rule("no lamps", "category", "not_in", str(lamps)))}
        orders = [sim.create_order(line_items=[{"variation_id": variation, "quantity": 1}],
                                   billing={"email": f"b{i}@example.com", "country": "DE"}) for i in range(2)]
        lamp_order = sim.create_order(line_items=[{"variation_id": other_variation, "quantity": 1}],
                                      billing={"email": "c@example.com", "country": "DE"})
        pen = sim.create_product("Pen", "3.00", categories=["Office"])
        pen_order = sim.create_order(line_items=[{"product_id": pen.id, "quantity": 1}],
                                     billing={"email": "p@example.com", "country": "DE"})
        sim.delete_product(pen.id, force=True)  # gone from the store: a 404, known to have no category

        def product_gone(payload: dict[str, Any]) -> None:  # a line item that names only its variation
            payload["line_items"][0]["product_id"] = 0

        prod = EventProducer(settings)
        with ConsumerThread(settings):
            prod.send(*webhook(store, sim, "order.created", orders[0].id))
            prod.flush()
            wait_until_consumed(settings, settings.rules_group, [topics.ORDERS])
            prod.send(*webhook(store, sim, "order.created", orders[1].id))
            prod.send(*webhook(store, sim, "order.created", lamp_order.id, product_gone))
            prod.send(*webhook(store, sim, "order.created", pen_order.id))
            prod.flush()
            wait_until_consumed(settings, settings.rules_group, [topics.ORDERS])
    cmds = commands(settings)
    assert fired(cmds, ids["camping"]) == sorted(str(o.id) for o in orders)
    assert fired(cmds, ids["lamps"]) == [str(lamp_order.id)]  # the variation, then its parent, from REST
    assert fired(cmds, ids["no_lamps"]) == sorted([*(str(o.id) for o in orders), str(pen_order.id)])
    # the tent once (the second order found it in memory); the lamp's variation and its parent
    assert fetches(store.id, "fetched") == 3 and fetches(store.id, "gone") == 1 and fetches(store.id, "failed") == 0
    rows = catalog_rows(engine, store.id)
    assert {p: (r.source, r.parent_id) for p, r in rows.items()} == {
        parent: ("rest", 0), other_variation: ("rest", other), other: ("rest", 0), pen.id: ("gone", 0)}
    assert (list(rows[other].category_names), list(rows[other].tag_names)) == (["Lamps"], ["night"])  # named too


@contextmanager
def silent_store() -> Iterator[ServerThread]:
    """A store that accepts connections and never answers (until the test is done)."""
    done = threading.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                kind = (await receive())["type"]
                await send({"type": f"{kind}.complete"})
                if kind == "lifespan.shutdown":
                    return
        while not done.is_set():
            await asyncio.sleep(0.05)
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    server = ServerThread(app)
    with server:
        try:
            yield server
        finally:
            done.set()


def test_a_store_that_does_not_answer_leaves_its_products_unknown_and_the_partition_moving(settings, engine) -> None:  # type: ignore[no-untyped-def]
    s = settings.model_copy(update={"catalog_fetch_timeout_s": 1.0, "catalog_retry_s": 600.0})
    with silent_store() as silent:
        store = make_store(engine, silent.url)
        ids = {"in": add_rule(engine, store.id, rule("in", "category", "in", "5")),
               "not_in": add_rule(engine, store.id, rule("not in", "category", "not_in", "5")),
               "tag_not": add_rule(engine, store.id, rule("no tag", "product_tag", "not_equals", "9")),
               "any": add_rule(engine, store.id, rule("any order", "order_total", "gt", "0"))}
        prod = EventProducer(s)
        with ConsumerThread(s):
            prod.send("OrderEvent", order_event(store.id, 1, customer_id=3, items=[(501, 1), (502, 2)]))
            prod.flush()
            wait_until_consumed(s, s.rules_group, [topics.ORDERS])
            assert fetches(store.id, "failed") == 2
            # while the store is in its retry interval, its unknown products are not asked for
            prod.send("OrderEvent", order_event(store.id, 2, customer_id=3, items=[(501, 1)]))
            prod.flush()
            wait_until_consumed(s, s.rules_group, [topics.ORDERS])
            assert fetches(store.id, "skipped") == 1
    cmds = commands(s)
    assert fired(cmds, ids["any"]) == ["1", "2"]  # both orders were processed
    # unknown products: `in` has nothing to match, and their absence is never assumed
    assert fired(cmds, ids["in"]) == fired(cmds, ids["not_in"]) == fired(cmds, ids["tag_not"]) == []
    assert catalog_rows(engine, store.id) == {}
    assert (REGISTRY.get_sample_value("wooflow_catalog_unknown_total", {"store": store.id}) or 0) >= 2


@contextmanager
def ordered_variation(engine: Any, seed: int, name: str, tag: str) -> Iterator[tuple[Any, Any, tuple[int, ...], Any]]:
    """A simulated store (registered in wooflow) with a variable product in Outdoor and an
    order of its variation: (simulated store, store, (parent, variation, outdoor, tag), order)."""
    with SimulatorServer(seed=seed) as server:
        store = make_sim_store(engine, server)
        ids = variable_product(server.store, name, "Outdoor", tag)
        order = server.store.create_order(line_items=[{"variation_id": ids[1], "quantity": 1}],
                                          billing={"email": f"{name.lower()}@example.com", "country": "PL"})
        yield server.store, store, ids, order


def test_dry_run_resolves_categories_through_the_catalog_and_the_store(settings, engine) -> None:  # type: ignore[no-untyped-def]
    with ordered_variation(engine, 4, "Boots", "winter") as (_, store, (parent, _, outdoor, winter), order):
        client = api_client(settings)
        h = bearer(engine, store.id)
        rid = client.post("/v1/rules", json=rule("outdoor", "category", "in", str(outdoor)), headers=h).json()["id"]
        other = client.post("/v1/rules", json=rule("not outdoor", "category", "not_in", str(outdoor)),
                            headers=h).json()["id"]
        out = client.post(f"/v1/rules/{rid}/dry-run", json={"order_id": order.id}, headers=h).json()
        assert out["matched"] is True, out["conditions"]
        [leaf] = out["conditions"]["conditions"]
        assert leaf["actual"] == [str(outdoor)] and leaf["result"] is True
        assert out["products"][str(parent)]["source"] == "rest" and out["facts"]["product_tag"] == [str(winter)]
        assert client.post(f"/v1/rules/{other}/dry-run", json={"order_id": order.id},
                           headers=h).json()["matched"] is False
    # the dry run asks the store without writing the catalog (the rule consumer owns it)
    assert catalog_rows(engine, store.id) == {}


def test_dry_run_reads_the_catalog_before_asking_the_store(settings, engine) -> None:  # type: ignore[no-untyped-def]
    with ordered_variation(engine, 5, "Sledge", "snow") as (sim, store, (parent, _, outdoor, _), order):
        prod = EventProducer(settings)
        with ConsumerThread(settings):  # the catalog learns the product from its event, moved to another category
            moved = webhook(store, sim, "product.updated", parent, lambda p: p.update(categories=[{"id": 4242}]))
            prod.send(*moved)
            prod.flush()
            wait_for(lambda: parent in catalog_rows(engine, store.id), 30, 0.1, "the catalog row")
        client = api_client(settings)
        h = bearer(engine, store.id)
        rid = client.post("/v1/rules", json=rule("moved", "category", "in", "4242"), headers=h).json()["id"]
        out = client.post(f"/v1/rules/{rid}/dry-run", json={"order_id": order.id}, headers=h).json()
        assert out["matched"] is True and out["products"][str(parent)]["source"] == "event"
        assert str(outdoor) not in out["facts"]["category"]
