"""Exactly one effect per command, whatever the delivery does: a three-step run (coupon →
note quoting the coupon → email quoting it) delivered three times, the worker SIGKILLed
while the store is still answering the coupon request (the coupon exists, the worker
never learnt it), then delivered three more times to a fresh worker process.

Afterwards: one coupon, one note, one email — the second worker found the coupon by its
derived code (`already_applied`) instead of creating another, and the later steps saw it.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.support import RoleProcess, ServerThread, read_topic, unique, wait_for, wait_until_consumed
from wooflow.kafka import topics
from wooflow.simulator import SimulatedStore, create_app
from wooflow.stores import Store, upsert_store
from wooflow.workers.testing import command, produce

pytestmark = pytest.mark.e2e


class HoldFirstCouponAnswer:
    """ASGI middleware: the store creates the first coupon, then sits on the answer until released."""

    def __init__(self, app: Any) -> None:
        self.app, self.held, self.release = app, 0, threading.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        hold = (scope["type"] == "http" and scope["method"] == "POST" and scope["path"].endswith("/coupons")
                and self.held == 0)
        if not hold:
            await self.app(scope, receive, send)
            return
        self.held += 1
        sent: list[Any] = []

        async def keep(message: Any) -> None:
            sent.append(message)

        await self.app(scope, receive, keep)  # the effect happens now
        await asyncio.to_thread(self.release.wait, 30)  # the answer is lost with the killed worker
        for message in sent:
            await send(message)


def test_three_deliveries_and_a_sigkill_give_one_coupon_one_note_one_email(settings, engine, logs_dir, inbox) -> None:  # type: ignore[no-untyped-def]
    sim = SimulatedStore(seed=3)
    app = HoldFirstCouponAnswer(create_app(sim))
    workers: list[RoleProcess] = []
    try:
        with ServerThread(app) as srv:
            sim.url = srv.url
            product = sim.create_product("Mug", "40.00")
            order = sim.create_order(line_items=[{"product_id": product.id, "quantity": 1}], status="processing",
                                     billing={"email": "ola@example.com", "first_name": "Ola"})
            store = Store(id=unique("store"), url=srv.url, webhook_secret="whs", consumer_key=sim.consumer_key,
                          consumer_secret=sim.consumer_secret,
                          settings={"smtp": inbox.smtp_settings("s@example.com")})
            upsert_store(engine, store)
            ctx = {"order": {"id": order.id, "number": str(order.id), "customer_id": 0,
                             "billing": {"email": "ola@example.com", "first_name": "Ola"}}}
            event = unique("evt")
            common = {"store_id": store.id, "rule_id": 31, "event_id": event, "customer_key": "gola",
                      "context": ctx, "subject_id": str(order.id)}
            run = [
                command(action_type="apply_coupon", step=0, params={"amount": "15", "expires_in_days": 14}, **common),
                command(action_type="add_order_note", step=1, params={"note": "wooflow: your code {{ coupon.code }}"},
                        **common),
                command(action_type="send_email", step=2, params={"subject": "Your code {{ coupon.code }}",
                                                                  "text": "Use {{ coupon.code }} within 14 days."},
                        **common),
            ]
            env = {"WOOFLOW_DEFERRED_POLL_S": "0.2", "WOOFLOW_ACTION_RETRY_BASE_S": "0.3"}
            produce(settings, run, copies=3)
            first = RoleProcess("workers", settings, logs_dir, **env).start()
            workers.append(first)
            wait_for(lambda: len(sim.coupons) == 1, 60, 0.05, "the coupon to exist in the store")
            first.kill()  # the store created the coupon; the worker never heard back
            app.release.set()

            produce(settings, run, copies=3)  # ... and the whole run is delivered again
            second = RoleProcess("workers", settings, logs_dir, **env).start()
            workers.append(second)
            keys = [c["idempotency_key"] for c in run]

            def finals() -> dict[str, dict[str, Any]] | None:
                out = {rec["idempotency_key"]: rec for _, rec in read_topic(settings, "automation.logs")
                       if rec["status"] not in ("retrying",)}
                return out if all(out.get(k, {}).get("status") == "succeeded" for k in keys) else None

            try:
                logs = wait_for(finals, 90, 0.5, "the three steps to succeed")

                def settled() -> bool:
                    with engine.connect() as conn:
                        return conn.execute(text("SELECT count(*) FROM deferred_commands WHERE idempotency_key = "
                                                 "ANY(:k)"), {"k": keys}).scalar_one() == 0

                wait_for(settled, 30, 0.2, "no deferred copies left")
                wait_for(lambda: len(inbox.messages) >= 1, 10, 0.1, "the email")
                # every copy went through the worker: a second coupon, note or email would exist now
                wait_until_consumed(settings, settings.workers_group, [topics.COMMANDS])
            except AssertionError:
                print("\n".join(w.log_text()[-4000:] for w in workers))
                raise

            coupons = list(sim.coupons.values())
            assert len(coupons) == 1
            code = coupons[0].code.upper()
            assert coupons[0].email_restrictions == ["ola@example.com"] and coupons[0].usage_limit == 1
            notes = [n.note for n in sim.get_order_notes(order.id) if n.note.startswith("wooflow:")]
            assert notes == [f"wooflow: your code {code}"]
            assert len(inbox.messages) == 1
            assert inbox.messages[0]["Subject"] == f"Your code {code}"
            # the second worker recovered the coupon by its code instead of making another
            import json

            details = json.loads(logs[keys[0]]["details_json"])
            assert details.get("recovered") is True and details["coupon"]["code"] == code
            with engine.connect() as conn:
                rows = conn.execute(text("SELECT status FROM action_executions WHERE idempotency_key = ANY(:k)"),
                                    {"k": keys}).scalars().all()
            assert sorted(rows) == ["succeeded"] * 3
    finally:
        for w in workers:
            w.stop()


def test_a_command_put_aside_again_while_its_previous_copy_is_being_released_is_not_lost(engine: Engine) -> None:
    """A step waiting for the one before it is put aside every second; the copy a release
    produced can come back and be put aside again before that release deleted the row it
    came from. The new deferral must survive the release's delete."""
    from datetime import datetime, timedelta, timezone

    from wooflow.workers.deferred import _DELETE, _DUE, Deferral, defer_batch

    topic, key = f"{unique('t')}.automation.commands", unique("k")
    now = datetime.now(timezone.utc)

    def deferral(due: datetime) -> Deferral:
        return Deferral(topic, key, 1, "s", due, "waiting", b"kk", b"payload")

    defer_batch(engine, [deferral(now - timedelta(seconds=1))])
    with engine.connect() as releasing:  # a release in progress: its rows locked, produced, not yet deleted
        rows = releasing.execute(_DUE, {"topic": topic, "now": now, "limit": 10}).all()
        assert [r[0] for r in rows] == [key]
        again = threading.Thread(target=defer_batch, args=(engine, [deferral(now + timedelta(seconds=1))]))
        again.start()  # the produced copy came back and is put aside again

        def waits_or_done() -> bool:
            with engine.connect() as conn:
                waiting = conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                            "AND query LIKE '%INSERT INTO deferred_commands%'")).scalar_one()
            return not again.is_alive() or waiting > 0

        wait_for(waits_or_done, 30, 0.05, "the second deferral to reach the database")
        releasing.execute(_DELETE, {"topic": topic, "keys": [key], "atts": [1]})
        releasing.commit()
    again.join(30)
    with engine.connect() as conn:
        left = conn.execute(text("SELECT reason, due_at FROM deferred_commands WHERE topic = :t"), {"t": topic}).all()
    assert [r[0] for r in left] == ["waiting"] and left[0][1] > now
