"""Every other built-in action through a real worker against the simulated store (REST),
PostgreSQL and a local SMS receiver — and every action's dry run, which changes nothing.
Also: a delayed command does not run before its `not_before`, and tasks are listed and
completed through the API (scoped to their store)."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.harness import ApiThread, bearer
from tests.support import ServerThread, make_store, read_topic, unique, wait_for
from wooflow.simulator.server import SimulatorServer
from wooflow.stores import Store, upsert_store
from wooflow.workers.testing import WorkerThread, command, produce

pytestmark = pytest.mark.integration


def finals(settings: Any) -> dict[str, dict[str, Any]]:
    return {rec["idempotency_key"]: rec for _, rec in read_topic(settings, "automation.logs")
            if rec["status"] != "retrying"}


def meta(obj: Any, key: str) -> Any:
    return next((m.value for m in obj.meta_data if m.key == key), None)


def test_store_actions_local_state_sms_tasks_and_dry_runs(settings, engine) -> None:  # type: ignore[no-untyped-def]
    sms_inbox: list[dict[str, Any]] = []
    lock = threading.Lock()

    async def sms_endpoint(request: Request) -> JSONResponse:
        body = await request.json()
        with lock:
            sms_inbox.append({"body": body, "auth": request.headers.get("authorization")})
        return JSONResponse({"id": f"m{len(sms_inbox)}"})

    with SimulatorServer(seed=11) as sim, ServerThread(Starlette(routes=[Route("/sms", sms_endpoint,
                                                                                methods=["POST"])])) as sms_srv:
        st = sim.store
        kasia = st.create_customer("kasia@example.com", first_name="Kasia", billing={"phone": "+48500100200"})
        product = st.create_product("Tea", "25.00")
        order = st.create_order(line_items=[{"product_id": product.id, "quantity": 2}], customer_id=kasia.id,
                                billing={"email": "kasia@example.com", "first_name": "Kasia"}, status="processing")
        store = Store(id=unique("store"), url=sim.url, webhook_secret="whs", consumer_key=sim.auth[0],
                      consumer_secret=sim.auth[1], name="Tea Shop",
                      settings={"wp_username": "admin", "wp_app_password": st.app_password,
                                "sms": {"provider": "http", "url": f"{sms_srv.url}/sms", "token": "sms-token",
                                        "sender": "TEASHOP"}})
        upsert_store(engine, store)
        ckey = f"c{kasia.id}"
        ctx = {"order": {"id": order.id, "number": str(order.id), "customer_id": kasia.id,
                         "billing": {"email": "kasia@example.com", "first_name": "Kasia", "phone": "+48500100200"}}}
        s = settings.model_copy(update={"webhook_allowlist": "127.0.0.1/32", "deferred_poll_s": 0.2})

        def cmd(action: str, params: dict[str, Any], *, key: str | None = None, **kw: Any) -> dict[str, Any]:
            kw.setdefault("context", ctx)
            return command(store_id=store.id, action_type=action, params=params, customer_key=key or ckey,
                           subject_id=str(order.id), rule_id=kw.pop("rule_id", 5), **kw)

        # one customer key per family keeps them concurrent; within a key they run in order
        live = {
            "tag": cmd("add_customer_tag", {"tag": "vip, early-bird"}, key=ckey),
            "tag2": cmd("add_customer_tag", {"tags": ["newsletter"]}, key=ckey),
            "untag": cmd("remove_customer_tag", {"tag": "early-bird"}, key=ckey),
            "role": cmd("change_customer_role", {"role": "subscriber"}, key=ckey + "r"),
            "cmeta": cmd("set_customer_meta", {"key": "favourite", "value": "{{ customer.first_name }}'s tea"},
                         key=ckey + "m"),
            "status": cmd("change_order_status", {"status": "completed", "note": "wooflow: done by rule"},
                          key="o1"),
            "ometa": cmd("set_order_meta", {"key": "_packing", "value": "gift-wrap"}, key="o2"),
            "resend": cmd("resend_order_email", {}, key="o3"),
            "trigger": cmd("trigger_order_action", {"action": "send_email",
                                                    "args": {"template_id": "customer_invoice"}}, key="o4"),
            "points": cmd("add_points", {"points": 10, "reason": "order"}, key=ckey + "p"),
            "points2": cmd("add_points", {"points": 5}, key=ckey + "p"),
            "tier": cmd("change_tier", {"tier": "gold"}, key=ckey + "p"),
            "task": cmd("create_admin_task", {"title": "Call {{ customer.first_name }}", "priority": "high",
                                              "due_in_days": 2}, key="t1"),
            "sms": cmd("send_sms", {"text": "Hi {{ customer.first_name }}, order {{ order.number }} shipped"},
                       key="s1"),
            "sms_marketing": cmd("send_sms", {"text": "Sale!", "marketing": True}, key="s2"),
        }
        not_before = datetime.now(timezone.utc) + timedelta(seconds=2)
        delayed = cmd("add_points", {"points": 100}, key="late", not_before=not_before)
        # dry runs of every action: planned results, no effects
        dry = {name: {**c, "dry_run": True, "idempotency_key": c["idempotency_key"] + "d",
                      "customer_key": c["customer_key"] + "d"} for name, c in live.items()}
        dry["coupon"] = cmd("apply_coupon", {"amount": "10"}, key="dc", dry_run=True)
        dry["email"] = cmd("send_email", {"subject": "Hi {{ customer.first_name }}", "html": "<p>x</p>"}, key="de",
                           dry_run=True)
        dry["webhook"] = cmd("webhook", {"url": "https://example.com/hook"}, key="dw", dry_run=True)
        dry["note"] = cmd("add_order_note", {"note": "wooflow: dry"}, key="dn", dry_run=True)
        produce(s, [*live.values(), delayed, *dry.values()])
        with WorkerThread(s):
            wanted = [c["idempotency_key"] for c in (*live.values(), delayed, *dry.values())]
            logs = wait_for(lambda: (f := finals(s)) and all(k in f for k in wanted) and f, 60, 0.3,
                            "every action's log")

        bad = {n: logs[c["idempotency_key"]]["message"] for n, c in live.items()
               if logs[c["idempotency_key"]]["status"] not in ("succeeded", "skipped")}
        assert bad == {}
        # tags: in customer_state and mirrored to WooCommerce meta
        with engine.connect() as conn:
            row = conn.execute(text("SELECT tags, points, tier FROM customer_state WHERE store_id = :s AND "
                                    "customer_key = :k"), {"s": store.id, "k": ckey}).one()
            points_row = conn.execute(text("SELECT points, tier FROM customer_state WHERE store_id = :s AND "
                                           "customer_key = :k"), {"s": store.id, "k": ckey + "p"}).one()
        assert sorted(row.tags) == ["newsletter", "vip"]
        assert sorted(meta(st.users[kasia.id], "_wooflow_tags")) == ["newsletter", "vip"]
        assert st.users[kasia.id].role == "subscriber"
        assert meta(st.users[kasia.id], "favourite") == "Kasia's tea"
        # order actions
        o = st.orders[order.id]
        assert o.status == "completed"
        notes = [n.note for n in st.get_order_notes(order.id)]
        assert "wooflow: done by rule" in notes
        assert meta(o, "_packing") == "gift-wrap"
        assert st.sent_emails == [(order.id, "customer_invoice", "kasia@example.com")] * 2
        assert sum(n.startswith("Order details sent to kasia@example.com") for n in notes) == 2
        # loyalty
        assert (points_row.points, points_row.tier) == (15, "gold")
        # delayed: not before its time
        late = logs[delayed["idempotency_key"]]
        assert late["status"] == "succeeded" and late["executed_at"] >= not_before
        # SMS: sent through the generic HTTP provider; the marketing one skipped (no consent)
        assert [(m["body"]["to"], m["body"]["text"], m["body"]["from"], m["auth"]) for m in sms_inbox] == [
            ("+48500100200", f"Hi Kasia, order {order.id} shipped", "TEASHOP", "Bearer sms-token")]
        assert logs[live["sms_marketing"]["idempotency_key"]]["status"] == "skipped"
        # dry runs: planned, nothing done
        for name, c in dry.items():
            rec = logs[c["idempotency_key"]]
            assert rec["status"] == "dry_run" and rec["dry_run"], (name, rec["message"])
        assert json.loads(logs[dry["coupon"]["idempotency_key"]]["details_json"])["coupon"]["code"].startswith("WF-")
        assert "Hi Kasia" in logs[dry["email"]["idempotency_key"]]["message"]
        assert len(st.coupons) == 0 and "wooflow: dry" not in notes
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM customer_state WHERE store_id = :s AND customer_key "
                                     "LIKE '%d'"), {"s": store.id}).scalar_one() == 0
            assert conn.execute(text("SELECT count(*) FROM tasks WHERE store_id = :s"),
                                {"s": store.id}).scalar_one() == 1

        # tasks through the API: listed, completed, invisible to another store
        h, other = bearer(engine, store.id), bearer(engine, make_store(engine).id)
        with ApiThread(settings) as api:
            listed = httpx.get(f"{api.url}/v1/tasks", headers=h, timeout=10).json()["tasks"]
            assert [(t["title"], t["priority"], t["status"]) for t in listed] == [("Call Kasia", "high", "open")]
            tid = listed[0]["id"]
            assert httpx.post(f"{api.url}/v1/tasks/{tid}/complete", headers=other,
                              timeout=10).status_code == 404
            done = httpx.post(f"{api.url}/v1/tasks/{tid}/complete", json={"completed_by": "ania"}, headers=h,
                              timeout=10).json()
            assert done["status"] == "done" and done["completed_by"] == "ania"
            assert httpx.get(f"{api.url}/v1/tasks", headers=h, timeout=10).json()["tasks"] == []
            assert len(httpx.get(f"{api.url}/v1/tasks", params={"status": "all"}, headers=h,
                                 timeout=10).json()["tasks"]) == 1
