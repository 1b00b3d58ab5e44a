"""What each action guarantees when its worker dies in the middle of it.

- Email, SMS and webhook (effects nobody can look up): worker processes are SIGKILLed
  while the SMTP server, the SMS provider and the webhook receiver hold the request. The
  next worker repeats each once, with the same Message-ID / SMS reference / delivery id;
  if that worker is killed mid-effect too, the third one dead-letters the command with the
  reason instead of sending a third time.
- Actions whose effect can be looked up (coupon, order note, order status, meta, role):
  left in exactly the state a worker dies in after the effect and before recording it,
  the next worker finds the effect and does not repeat it.
- Plugins: "at_most_once" never runs again after an interrupted attempt, the default
  runs once more, "repeat" runs again.
- PostgreSQL unreachable for longer than a lease: the worker abandons the effect before
  its lease could end, exits with code 3, and the command is done by the next worker.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel
from sqlalchemy import Engine, text

from tests.effects_kit import HttpReceiver, SmtpReceiver, TcpProxy, effects_store, settled
from tests.support import RoleProcess, ServerThread, make_store, read_topic, unique, wait_for
from wooflow.dlq import Filters, read_dlq, redrive
from wooflow.settings import Settings
from wooflow.simulator.server import SimulatorServer
from wooflow.stores import Store, upsert_store
from wooflow.workers import registry
from wooflow.workers.registry import ActionContext, ActionResult, BaseAction, InterruptPolicy
from wooflow.workers.testing import WorkerThread, command, produce

ENV = {"WOOFLOW_ACTION_LEASE_S": "4", "WOOFLOW_WEBHOOK_ALLOWLIST": "127.0.0.1/32", "WOOFLOW_DEFERRED_POLL_S": "0.2"}


def worker_process(s: Settings, logs_dir: Path, n: int, **env: str) -> RoleProcess:
    """The n-th worker process of a test, logging to a directory of its own."""
    (logs_dir / f"w{n}").mkdir()
    return RoleProcess("workers", s, logs_dir / f"w{n}", **(ENV | env))


def message_id(key: str) -> str:
    """send_email's Message-ID: derived from the idempotency key (and the sender's domain)."""
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@example.com>"


def last_logs(s: Settings) -> dict[str, dict[str, Any]]:
    """The last execution log of each key (a redelivered finished key re-emits its log)."""
    return {r["idempotency_key"]: r for _, r in read_topic(s, "automation.logs") if r["status"] != "retrying"}


def executions(engine: Engine, keys: list[str]) -> dict[str, tuple[str, int]]:
    with engine.connect() as conn:
        return {k: (st, n) for k, st, n in conn.execute(text(
            "SELECT idempotency_key, status, interrupted FROM action_executions WHERE idempotency_key = ANY(:k)"),
            {"k": keys})}


def finals_are(s: Settings, want: dict[str, str]) -> Callable[[], bool]:
    def check() -> bool:
        logs = last_logs(s)
        return all(logs.get(k, {}).get("status") == status for k, status in want.items())
    return check


@pytest.mark.e2e
def test_sigkill_mid_email_sms_webhook_repeats_each_at_most_once_with_the_same_identity(  # type: ignore[no-untyped-def]
        settings, engine, logs_dir) -> None:
    smtp, http = SmtpReceiver().start(), HttpReceiver()
    procs: list[RoleProcess] = []
    try:
        with ServerThread(http.app()) as srv:
            store = effects_store(engine, smtp.port, srv.url)
            ctx = {"order": {"id": 5, "number": "5", "billing": {"email": "ola@example.com", "phone": "+48500100200"}}}

            def trio(tag: str) -> dict[str, dict[str, Any]]:
                def cmd(action: str, params: dict[str, Any]) -> dict[str, Any]:
                    return command(store_id=store.id, action_type=action, params=params, context=ctx,
                                   customer_key=f"{tag}-{action}")
                return {"email": cmd("send_email", {"subject": "Order {{ order.number }}", "text": "Thanks!"}),
                        "sms": cmd("send_sms", {"text": "Order {{ order.number }} shipped"}),
                        "webhook": cmd("webhook", {"url": f"{srv.url}/hook", "timeout": 30})}

            once, twice = trio("once"), trio("twice")  # interrupted once / interrupted twice

            def identity(kind: str, cmd: dict[str, Any]) -> str:
                key = cmd["idempotency_key"]
                return message_id(key) if kind == "email" else key

            receiver = {"email": smtp, "sms": http, "webhook": http}
            for group, held in ((once, 1), (twice, 2)):  # how many arrivals each receiver sits on
                for kind, cmd in group.items():
                    receiver[kind].holds[identity(kind, cmd)] = held
            every = [(kind, c) for group in (once, twice) for kind, c in group.items()]
            keys = [c["idempotency_key"] for _, c in every]

            def arrived(n: int, *groups: dict[str, dict[str, Any]]) -> Callable[[], bool]:
                return lambda: all(len(receiver[k].of(identity(k, c))) >= n for g in groups for k, c in g.items())

            produce(settings, [c for _, c in every])
            procs.append(worker_process(settings, logs_dir, len(procs)).start())
            wait_for(arrived(1, once, twice), 60, 0.05, "the first worker in the middle of all six")
            procs[-1].kill()  # mid-effect: the receivers hold every request

            procs.append(worker_process(settings, logs_dir, len(procs)).start())
            try:
                wait_for(finals_are(settings, {c["idempotency_key"]: "succeeded" for c in once.values()}), 60, 0.3,
                         "the repeats of the once-interrupted commands")
                wait_for(arrived(2, twice), 60, 0.05, "the repeats of the others, held")
            except AssertionError:
                print(procs[-1].log_text()[-6000:])
                raise
            procs[-1].kill()  # mid-effect again

            procs.append(worker_process(settings, logs_dir, len(procs)).start())
            want = {c["idempotency_key"]: "succeeded" for c in once.values()} | \
                {c["idempotency_key"]: "dead_lettered" for c in twice.values()}
            settled(settings, engine, keys, finals_are(settings, want))
            logs = last_logs(settings)
            dead = [r for _, r in read_topic(settings, "automation.dlq") if r["stage"] == "workers"]
    finally:
        smtp.release.set()
        http.release.set()
        for p in procs:
            p.stop()
        smtp.stop()

    for kind, cmd in every:
        got = receiver[kind].of(identity(kind, cmd))
        # exactly two arrivals — the interrupted one and one repeat — and they are the same message
        assert len(got) == 2, (kind, cmd["customer_key"], len(got))
        same = [{k: v for k, v in a.info.items() if k != "gone_at"} for a in got]
        assert same[0] == same[1], (kind, got)
    for cmd in (once["sms"], twice["sms"]):
        assert all(a.info["idempotency_key"] == cmd["idempotency_key"] for a in http.of(cmd["idempotency_key"]))
    for cmd in (once["webhook"], twice["webhook"]):
        assert all(a.info["idempotency_key"] == a.info["body_id"] == cmd["idempotency_key"]
                   for a in http.of(cmd["idempotency_key"]))
    for cmd in once.values():
        assert json.loads(logs[cmd["idempotency_key"]]["details_json"])["interrupted_attempts"] == 1
    for cmd in twice.values():
        assert "interrupted twice mid-action" in logs[cmd["idempotency_key"]]["message"]
    assert {r["reason"] for r in dead} == {"interrupted"} and len(dead) == 3
    assert executions(engine, keys) == {c["idempotency_key"]: (want[c["idempotency_key"]], 2 if c in twice.values()
                                                               else 1) for _, c in every}


DIED_AFTER_THE_EFFECT = text("""
UPDATE action_executions SET status = 'running', lease_until = now() - interval '1 second', finished_at = NULL,
                             owner = 'a-worker-that-died', result = '{}'::jsonb
WHERE idempotency_key = ANY(:k)
""")


@pytest.mark.integration
def test_effects_that_can_be_looked_up_are_found_not_repeated(settings, engine) -> None:  # type: ignore[no-untyped-def]
    s = settings.model_copy(update={"deferred_poll_s": 0.2})
    with SimulatorServer(seed=5) as sim:
        st = sim.store
        ola = st.create_customer("ola@example.com", first_name="Ola")
        product = st.create_product("Tea", "25.00")
        order = st.create_order(line_items=[{"product_id": product.id, "quantity": 1}], customer_id=ola.id,
                                billing={"email": "ola@example.com"}, status="processing")
        store = Store(id=unique("store"), url=sim.url, webhook_secret="whs", consumer_key=sim.auth[0],
                      consumer_secret=sim.auth[1],
                      settings={"wp_username": "admin", "wp_app_password": st.app_password})
        upsert_store(engine, store)
        ctx = {"order": {"id": order.id, "number": str(order.id), "customer_id": ola.id,
                         "billing": {"email": "ola@example.com"}}}

        def cmd(action: str, params: dict[str, Any], who: str) -> dict[str, Any]:
            return command(store_id=store.id, action_type=action, params=params, context=ctx, customer_key=who,
                           subject_id=str(order.id))

        ckey = f"c{ola.id}"
        cmds = {
            "coupon": cmd("apply_coupon", {"amount": "10"}, "k1"),
            "note": cmd("add_order_note", {"note": "wooflow: thank you"}, "k2"),
            "status": cmd("change_order_status", {"status": "completed", "note": "wooflow: completed"}, "k3"),
            "order_meta": cmd("set_order_meta", {"key": "_gift", "value": "yes"}, "k4"),
            "customer_meta": cmd("set_customer_meta", {"key": "fav", "value": "tea"}, ckey),
            "role": cmd("change_customer_role", {"role": "subscriber"}, ckey + "r"),
            "resend": cmd("resend_order_email", {}, "k5"),  # found by the order note WooCommerce adds
        }
        keys = [c["idempotency_key"] for c in cmds.values()]
        produce(s, cmds.values())
        with WorkerThread(s):
            wait_for(finals_are(s, dict.fromkeys(keys, "succeeded")), 60, 0.3, "the first executions")
            # every effect happened; now the worker "dies" before recording it, and the commands come back
            with engine.begin() as conn:
                conn.execute(DIED_AFTER_THE_EFFECT, {"k": keys})
            produce(s, cmds.values())

            def recovered() -> bool:  # the second execution found each effect instead of repeating it
                logs = last_logs(s)
                return all(k in logs and json.loads(logs[k]["details_json"]).get("recovered") for k in keys)

            settled(s, engine, keys, recovered)
        logs = last_logs(s)
        assert {n: logs[c["idempotency_key"]]["status"] for n, c in cmds.items()} == dict.fromkeys(cmds, "succeeded")
        assert len(st.coupons) == 1
        notes = [n.note for n in st.get_order_notes(order.id) if n.note.startswith("wooflow:")]
        assert sorted(notes) == ["wooflow: completed", "wooflow: thank you"]
        assert st.orders[order.id].status == "completed"
        assert [m.value for m in st.orders[order.id].meta_data if m.key == "_gift"] == ["yes"]
        assert [m.value for m in st.users[ola.id].meta_data if m.key == "fav"] == ["tea"]
        assert st.users[ola.id].role == "subscriber"
        assert st.sent_emails == [(order.id, "customer_invoice", "ola@example.com")]
        assert executions(engine, keys) == dict.fromkeys(keys, ("succeeded", 1))


class _Ping(BaseAction):
    """A plugin whose effect is one POST nobody can look up."""

    description: ClassVar[str] = "test plugin"

    class Params(BaseModel):
        url: str

    async def run(self, ctx: ActionContext) -> ActionResult:
        p: _Ping.Params = ctx.params  # type: ignore[assignment]
        await ctx.http.request("POST", p.url, content=b"{}", headers={"X-Wooflow-Delivery": ctx.idempotency_key})
        return ActionResult("succeeded", "pinged")


class PingAtMostOnce(_Ping):
    name: ClassVar[str] = "test_ping_at_most_once"
    on_interrupted: ClassVar[InterruptPolicy] = "at_most_once"


class PingDefault(_Ping):
    name: ClassVar[str] = "test_ping_default"


class PingRepeat(_Ping):
    name: ClassVar[str] = "test_ping_repeat"
    on_interrupted: ClassVar[InterruptPolicy] = "repeat"


INTERRUPTED_EARLIER = text("""
INSERT INTO action_executions (idempotency_key, store_id, rule_id, event_id, step, action_type, status, attempts,
                               lease_until, owner, interrupted)
VALUES (:k, :s, 1, :e, 0, :a, 'running', 1, now() - interval '1 second', 'a-worker-that-died', :n)
""")


@pytest.mark.integration
def test_plugins_state_what_an_interrupted_attempt_may_do(settings, engine) -> None:  # type: ignore[no-untyped-def]
    for handler in (PingAtMostOnce(), PingDefault(), PingRepeat()):
        registry.register(handler)
    http = HttpReceiver()
    s = settings.model_copy(update={"webhook_allowlist": "127.0.0.1/32", "deferred_poll_s": 0.2})
    with ServerThread(http.app()) as srv:
        store = make_store(engine)
        # (action, interrupted attempts before this one, expected outcome)
        cases = [("test_ping_at_most_once", 0, "dead_lettered"), ("test_ping_default", 0, "succeeded"),
                 ("test_ping_default", 1, "dead_lettered"), ("test_ping_repeat", 3, "succeeded"),
                 ("test_ping_repeat", 4, "dead_lettered"),  # WOOFLOW_ACTION_MAX_ATTEMPTS: 5
                 ("add_points", 1, "succeeded")]  # a local-state failure path's claim: nothing was applied
        cmds = [command(store_id=store.id, action_type=a, customer_key=f"p{i}",
                        params={"points": 7} if a == "add_points" else {"url": f"{srv.url}/hook"})
                for i, (a, _, _) in enumerate(cases)]
        with engine.begin() as conn:  # each left running by a worker that died, as many times as the case says
            for c, (action, n, _) in zip(cmds, cases, strict=True):
                conn.execute(INTERRUPTED_EARLIER, {"k": c["idempotency_key"], "s": store.id, "e": c["event_id"],
                                                   "a": action, "n": n})
        keys = [c["idempotency_key"] for c in cmds]
        produce(s, cmds)
        with WorkerThread(s):
            settled(s, engine, keys, finals_are(s, {c["idempotency_key"]: want for c, (_, _, want) in
                                                    zip(cmds, cases, strict=True)}))
            logs = last_logs(s)
            sent = http.counts()
            # an operator's redrive is a deliberate "try again": each runs once more
            letters = list(read_dlq(s, Filters(store=store.id, reason="interrupted")))
            assert redrive(s, engine, letters) == (3, 0)
            settled(s, engine, keys, finals_are(s, dict.fromkeys(keys, "succeeded")))
    ran = {c["idempotency_key"] for c, (a, _, want) in zip(cmds, cases, strict=True)
           if want == "succeeded" and a != "add_points"}
    assert sent == dict.fromkeys(ran, 1)
    with engine.connect() as conn:
        points = conn.execute(text("SELECT points FROM customer_state WHERE store_id = :s AND customer_key = 'p5'"),
                              {"s": store.id}).scalar_one()
    assert points == 7
    messages = [logs[c["idempotency_key"]]["message"] for c in cmds]
    assert "test_ping_at_most_once runs at most once: not repeated" in messages[0]
    assert "interrupted twice mid-action" in messages[2]
    assert "interrupted 5 times mid-action" in messages[4]
    assert http.counts() == dict.fromkeys(keys[:5], 1)


@pytest.mark.e2e
def test_postgresql_gone_longer_than_a_lease_stops_the_effect_and_the_worker(settings, engine, logs_dir) -> None:  # type: ignore[no-untyped-def]
    http = HttpReceiver(hold=1)
    url = engine.url
    with ServerThread(http.app()) as srv, TcpProxy(str(url.host), int(url.port or 5432)) as proxy:
        store = make_store(engine)
        hook = command(store_id=store.id, action_type="webhook", params={"url": f"{srv.url}/hook", "timeout": 30})
        key = hook["idempotency_key"]
        produce(settings, [hook])
        through_proxy = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        worker = worker_process(settings, logs_dir, 0, WOOFLOW_DATABASE_URL=through_proxy).start()
        try:
            wait_for(lambda: http.of(key), 60, 0.05, "the webhook to be in flight")
            proxy.cut()  # PostgreSQL is unreachable for this worker from now on
            assert worker.proc is not None
            code = worker.proc.wait(60)
        finally:
            worker.kill()
        with engine.connect() as conn:
            status, lease_until = conn.execute(text("SELECT status, lease_until FROM action_executions "
                                                    "WHERE idempotency_key = :k"), {"k": key}).one()
        # the worker hung up on the receiver while its lease was still its own, and said why it stopped
        assert code == 3, worker.log_text()[-3000:]
        assert status == "running" and http.of(key)[0].info["gone_at"] < lease_until.timestamp()
        assert "could not be renewed" in worker.log_text()

        # the command was not committed: the next worker repeats it (once)
        nxt = worker_process(settings, logs_dir, 1).start()
        try:
            settled(settings, engine, [key], finals_are(settings, {key: "succeeded"}))
        finally:
            nxt.stop()
    assert http.counts() == {key: 2}
    assert executions(engine, [key]) == {key: ("succeeded", 1)}
