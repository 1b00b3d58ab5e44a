"""No secret in any log: the roles run as real processes at DEBUG level with known secrets —
two stores' webhook secrets, their WooCommerce REST keys (one of them wrong: every REST call
of that store gets a 401), SMTP passwords (the global one and a store's own; the mail server
refuses both), an SMS provider token (the provider answers 401), a webhook action's signing
secret (the receiver answers 500 until the DLQ), API tokens (a store's and the operator's),
the tracking secret and the key derived from it (a tracked email, a tracking hit, a forged
one) — through their normal and error paths. Then every line of every role's log, the execution
logs a store can read through the API and the dead letters' reasons are searched for each
secret, in the forms it travels in (as is, and inside an HTTP Basic Authorization header)."""

from __future__ import annotations

import base64
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.harness import deliver, hook_url
from tests.pipeline import connect_store
from tests.support import (
    RoleProcess,
    ServerThread,
    free_port,
    read_topic,
    ready,
    unique,
    wait_for,
    wait_until_consumed,
)
from wooflow import engagement
from wooflow.api.auth import create_token
from wooflow.kafka import topics
from wooflow.settings import Settings
from wooflow.simulator.server import SimulatorServer
from wooflow.stores import Store, upsert_store
from wooflow.workers.testing import command, produce

pytestmark = pytest.mark.e2e


class RefusingSmtp:
    """An SMTP server that offers AUTH and refuses every login (535)."""

    def __init__(self) -> None:
        self.attempts = 0

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        self.attempts += 1
        return AuthResult(success=False, handled=False)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


def receiver() -> Starlette:
    async def sms(request: Request) -> Response:
        await request.body()
        return JSONResponse({"error": "unauthorized", "message": "bad token"}, status_code=401)

    async def hook(request: Request) -> Response:
        await request.body()
        return Response("receiver down", status_code=500)

    return Starlette(routes=[Route("/sms", sms, methods=["POST"]), Route("/hook", hook, methods=["POST"])])


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_no_secret_in_any_log(settings, engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    logs_dir = tmp_path / "roles"
    logs_dir.mkdir()
    smtp = RefusingSmtp()
    controller = Controller(smtp, hostname="127.0.0.1", port=free_port(), authenticator=smtp.authenticate,
                            auth_require_tls=False)
    controller.start()
    with ExitStack() as stack:
        stack.callback(controller.stop)
        sim = stack.enter_context(SimulatorServer(seed=5))
        hooks = stack.enter_context(ServerThread(receiver()))
        ck, cs = sim.auth
        secrets = {
            "webhook secret": unique("whsec-good-"), "other webhook secret": unique("whsec-bad-"),
            "consumer key": ck, "consumer secret": cs, "wrong consumer secret": unique("cs_wrong_"),
            "global SMTP password": unique("smtp-global-"), "store SMTP password": unique("smtp-store-"),
            "SMS token": unique("sms-token-"), "webhook action secret": unique("hook-secret-"),
            "WordPress application password": unique("wp-app-"), "admin token": unique("wf_admin_"),
            "tracking secret": unique("track-"),
        }
        tracking_key = engagement.signing_key(Settings(tracking_secret=secrets["tracking secret"]), "")
        secrets["tracking key"] = tracking_key.hex()
        good = Store(id=unique("store"), url=sim.url, webhook_secret=secrets["webhook secret"], consumer_key=ck,
                     consumer_secret=cs, timezone="Europe/Warsaw", currency="PLN",
                     settings={"wp_username": "shop", "wp_app_password": secrets["WordPress application password"],
                               "consent": {"policy": "opt_out"}})  # its marketing email is composed, tracked
        bad = Store(id=unique("store"), url=sim.url, webhook_secret=secrets["other webhook secret"], consumer_key=ck,
                    consumer_secret=secrets["wrong consumer secret"], name="Shop",
                    settings={"smtp": {"host": "127.0.0.1", "port": controller.port, "username": "shop",
                                       "password": secrets["store SMTP password"], "from_email": "shop@example.com"},
                              "sms": {"provider": "http", "url": f"{hooks.url}/sms", "token": secrets["SMS token"]}})
        for store in (good, bad):
            upsert_store(engine, store)
        secrets["store API token"] = create_token(engine, good.id, "secrets test")
        secrets["Basic credentials"] = basic(ck, cs)
        secrets["wrong Basic credentials"] = basic(ck, secrets["wrong consumer secret"])

        env = {"WOOFLOW_LOG_LEVEL": "DEBUG", "WOOFLOW_SMTP_HOST": "127.0.0.1",
               "WOOFLOW_SMTP_PORT": str(controller.port), "WOOFLOW_SMTP_USERNAME": "wooflow",
               "WOOFLOW_SMTP_PASSWORD": secrets["global SMTP password"], "WOOFLOW_WEBHOOK_ALLOWLIST": "127.0.0.1/32",
               "WOOFLOW_ACTION_MAX_ATTEMPTS": "2", "WOOFLOW_ACTION_RETRY_BASE_S": "0.2",
               "WOOFLOW_DEFERRED_POLL_S": "0.2", "WOOFLOW_ADMIN_TOKEN": secrets["admin token"],
               "WOOFLOW_TRACKING_SECRET": secrets["tracking secret"]}
        bridge_port, api_port = free_port(), free_port()
        roles = {
            "bridge": RoleProcess("bridge", settings, logs_dir, "--host", "127.0.0.1", "--port", str(bridge_port),
                                  **env),
            "rules": RoleProcess("rules", settings, logs_dir, **env),
            "workers": RoleProcess("workers", settings, logs_dir, **env),
            "sink": RoleProcess("sink", settings, logs_dir, **env),
            "api": RoleProcess("api", settings, logs_dir, "--host", "127.0.0.1", "--port", str(api_port), **env),
        }
        for role in roles.values():
            stack.callback(role.stop)
            role.start()
        bridge_url, api_url = f"http://127.0.0.1:{bridge_port}", f"http://127.0.0.1:{api_port}"

        # --- bridge: real deliveries from the store, forged ones, a read-back refused by REST ---
        connect_store(sim.store, good, bridge_url, ("order.created", "customer.created"))
        st = sim.store
        mug = st.create_product("Kubek", "19.90", sku="MUG")
        alice = st.create_customer("alice@example.com", first_name="Alice")
        order = st.checkout(line_items=[{"product_id": mug.id, "quantity": 1}], customer_id=alice.id,
                            billing={"email": "alice@example.com", "first_name": "Alice"}, payment_method="cod")
        assert st.wait_idle(30)
        assert all(d.success for d in st.deliveries()), [(d.topic, d.status_code) for d in st.deliveries()]
        forged = deliver(hook_url(bridge_url, good.id), secrets["other webhook secret"], "order.updated",
                         {"id": order.id, "status": "processing"})
        assert forged.status_code == 401
        refused_read = deliver(hook_url(bridge_url, bad.id), secrets["other webhook secret"],
                               "action.woocommerce_order_status_completed",
                               {"action": "woocommerce_order_status_completed", "arg": order.id})
        assert refused_read.status_code == 200, refused_read.text  # produced from what the hook said

        # --- workers: REST ok and 401, SMTP login refused (global and store password), SMS 401, webhook 500 ---
        ctx = {"order": {"id": order.id, "number": str(order.id), "billing": {"email": "alice@example.com",
                                                                               "phone": "+48600100200"},
                         "customer_id": alice.id}}
        cmds = [
            command(store_id=good.id, action_type="add_order_note", customer_key="c1", subject_id=str(order.id),
                    context=ctx, params={"note": "wooflow: hello"}),
            command(store_id=bad.id, action_type="add_order_note", customer_key="c2", subject_id=str(order.id),
                    context=ctx, params={"note": "wooflow: refused"}),
            command(store_id=good.id, action_type="send_email", customer_key="c3", context=ctx,
                    params={"subject": "Hi", "text": "global server, tracked: https://shop.example/",
                            "marketing": True}),
            command(store_id=bad.id, action_type="send_email", customer_key="c4", context=ctx,
                    params={"subject": "Hi", "text": "store's server"}),
            command(store_id=bad.id, action_type="send_sms", customer_key="c5", context=ctx, params={"text": "hi"}),
            command(store_id=good.id, action_type="webhook", customer_key="c6", context=ctx,
                    params={"url": f"{hooks.url}/hook", "secret": secrets["webhook action secret"]}),
            command(store_id=good.id, action_type="change_customer_role", customer_key="c7", context=ctx,
                    subject_type="customer", subject_id=str(alice.id), params={"role": "subscriber"}),
        ]
        produce(settings, cmds)
        keys = {c["idempotency_key"] for c in cmds}

        # --- API: a store token, a wrong one, the operator's, a dry run whose REST read is refused ---
        wait_for(lambda: ready(api_url, 1), 40, 0.2, "the API")
        mine = {"Authorization": f"Bearer {secrets['store API token']}"}
        assert httpx.get(f"{api_url}/v1/rules", headers=mine).status_code == 200
        assert httpx.get(f"{api_url}/v1/rules", headers={"Authorization": "Bearer wf_nope"}).status_code == 401
        operator = {"Authorization": f"Bearer {secrets['admin token']}", "X-Wooflow-Store": bad.id}
        rule = httpx.post(f"{api_url}/v1/rules", headers=operator, json={
            "name": "note", "trigger": "new_order", "actions": [{"type": "add_order_note", "params": {"note": "x"}}]})
        assert rule.status_code == 201, rule.text
        dry = httpx.post(f"{api_url}/v1/rules/{rule.json()['id']}/dry-run", headers=operator,
                         json={"order_id": order.id}, timeout=30)
        assert dry.status_code in (404, 502), dry.text
        # tracking links signed with the tracking secret, and one signed with another key
        now = int(time.time())
        m = engagement.Message(good.id, unique("m"), "c1", 1, 0, now, now + 600)
        opened = httpx.get(f"{api_url}/t/o/{engagement.sign(tracking_key, m)}.gif", headers={"User-Agent": "Mozilla"})
        assert opened.status_code == 200
        forged_click = engagement.sign(b"k" * 32, m, 0, "https://a.example/")
        assert httpx.get(f"{api_url}/t/c/{forged_click}?u=https%3A%2F%2Fa.example%2F").status_code == 403

        def finals() -> dict[str, dict[str, Any]] | None:
            with engine.connect() as conn:
                rows = conn.execute(text("SELECT idempotency_key, status, message FROM execution_logs "
                                         "WHERE store_id IN (:a, :b) AND status <> 'retrying'"),
                                    {"a": good.id, "b": bad.id}).mappings().all()
            got = {r["idempotency_key"]: dict(r) for r in rows}
            return got if keys <= set(got) else None

        results = wait_for(finals, 90, 0.5, "an execution log for every command")
        wait_until_consumed(settings, settings.rules_group, topics.EVENT_TOPICS)
    # the paths ran as intended
    status = {c["action_type"] + ("@bad" if c["store_id"] == bad.id else ""): results[c["idempotency_key"]]["status"]
              for c in cmds}
    assert status["add_order_note"] == "succeeded", results
    assert {status[k] for k in ("add_order_note@bad", "send_email", "send_email@bad", "send_sms@bad", "webhook")} \
        <= {"failed", "dead_lettered"}, results
    assert smtp.attempts >= 2, "the mail server saw both logins"

    searched = {f"{name} log": role.log_text() for name, role in roles.items()}
    searched["execution logs"] = "\n".join(r["message"] for r in results.values())
    # a dead letter's `value` is the message itself, kept to be redriven (a command carries its params, as the
    # rule does); what it says about the failure must not repeat a secret
    searched["dead letters"] = "\n".join(f"{rec['reason']} {rec['error']} {rec['headers_json']}"
                                         for _, rec in read_topic(settings, topics.DLQ))
    # the error paths are in the logs, in the words of the failing side
    for where, line in (("workers log", "HTTP 401: Consumer secret is invalid"), ("workers log", "SMTP 535"),
                        ("workers log", "SMS provider answered HTTP 401"), ("workers log", "HTTP 500"),
                        ("workers log", "invalid application password"), ("bridge log", "401")):
        assert line in searched[where], (where, line, searched[where][-2000:])
    leaks = {(where, name) for where, content in searched.items() for name, secret in secrets.items()
             if secret in content}
    assert not leaks, sorted(leaks)
