"""Webhook action end to end through a real worker, broker and database, with a real
loopback receiver: signatures, retries with backoff (one effective delivery), the DLQ
after the last attempt, and the egress guard (loopback, private and metadata addresses
refused directly, via DNS and via redirect, before any connection is made)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
from collections import defaultdict
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.support import ServerThread, make_store, read_topic, wait_for
from wooflow.workers.netguard import EgressPolicy, EgressRefused, SafeHttp, StaticResolver, SystemResolver
from wooflow.workers.testing import WorkerThread, command, produce

SECRET = "hook-secret & <x>"


class Receiver:
    """Records what arrives; /flaky fails twice per delivery id before answering 200."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.hits: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.flaky_seen: dict[str, int] = defaultdict(int)

    def app(self) -> Starlette:
        async def ok(request: Request) -> Response:
            body = await request.body()
            ts = request.headers.get("x-wooflow-timestamp", "")
            expected = "sha256=" + hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
            valid = hmac.compare_digest(expected, request.headers.get("x-wooflow-signature", ""))
            with self.lock:
                self.hits["ok"].append({"valid": valid, "body": json.loads(body), "headers": dict(request.headers)})
            return JSONResponse({"ok": valid}, status_code=200 if valid else 401)

        async def flaky(request: Request) -> Response:
            delivery = request.headers.get("x-wooflow-delivery", "")
            with self.lock:
                self.flaky_seen[delivery] += 1
                n = self.flaky_seen[delivery]
                if n > 2:
                    self.hits["flaky_ok"].append({"delivery": delivery,
                                                  "attempt": request.headers.get("x-wooflow-attempt")})
            return Response(status_code=200 if n > 2 else 503)

        async def down(request: Request) -> Response:
            with self.lock:
                self.hits["down"].append({})
            return Response("boom", status_code=500)

        async def redirect(request: Request) -> Response:
            with self.lock:
                self.hits["redirect"].append({"to": request.query_params["to"]})
            return RedirectResponse(request.query_params["to"], status_code=307)

        return Starlette(routes=[Route("/ok", ok, methods=["POST"]), Route("/flaky", flaky, methods=["POST"]),
                                 Route("/down", down, methods=["POST"]),
                                 Route("/redirect", redirect, methods=["POST"])])


def logs_by_key(settings: Any) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for _, rec in read_topic(settings, "automation.logs"):
        out[rec["idempotency_key"]].append(rec)
    return out


def final(recs: list[dict[str, Any]]) -> dict[str, Any] | None:
    done = [r for r in recs if r["status"] not in ("retrying",)]
    return done[-1] if done else None


@pytest.mark.integration
def test_webhooks_signed_retried_dead_lettered_and_egress_guarded(settings, engine) -> None:  # type: ignore[no-untyped-def]
    receiver = Receiver()
    with ServerThread(receiver.app()) as srv:
        port = srv.port
        base = f"http://receiver.test:{port}"
        s = settings.model_copy(update={"webhook_allowlist": "receiver.test", "allow_private_webhooks": False,
                                        "action_max_attempts": 3, "action_retry_base_s": 0.3,
                                        "deferred_poll_s": 0.2})
        store = make_store(engine)
        resolver = StaticResolver({"receiver.test": ["127.0.0.1"], "rebind.test": ["10.0.0.5"],
                                   "metadata.test": ["169.254.169.254"]}, fallback=SystemResolver())
        ctx = {"order": {"id": 42, "number": "42", "billing": {"email": "ala@example.com"}, "customer_id": 7}}

        def hook(url: str, **extra: Any) -> dict[str, Any]:
            return command(store_id=store.id, action_type="webhook", customer_key=f"c{len(url)}x{hash(url) % 997}",
                           params={"url": url, "secret": SECRET, **extra}, context=ctx, subject_id="42",
                           rule_id=77)

        signed = hook(f"{base}/ok", payload={"greeting": "hi {{ customer.email }}"})
        flaky = hook(f"{base}/flaky")
        down = hook(f"{base}/down")
        refused = {
            "direct loopback": hook(f"http://127.0.0.1:{port}/ok"),
            "direct private": hook("http://10.20.30.40/hook"),
            "direct metadata": hook("http://169.254.169.254/latest/meta-data/"),
            "dns loopback (localhost)": hook(f"http://localhost:{port}/ok"),
            "dns private": hook("http://rebind.test/hook"),
            "dns metadata": hook("http://metadata.test/latest/meta-data/"),
            "redirect loopback": hook(f"{base}/redirect?to=http://127.0.0.1:{port}/ok"),
            "redirect private": hook(f"{base}/redirect?to=http://10.1.2.3/hook"),
            "redirect metadata": hook(f"{base}/redirect?to=http://169.254.169.254/latest/meta-data/"),
        }
        every = [signed, flaky, down, *refused.values()]
        produce(s, every)
        with WorkerThread(s, resolver=resolver):
            keys = {c["idempotency_key"] for c in every}

            def all_final() -> dict[str, list[dict[str, Any]]] | None:
                logs = logs_by_key(s)
                return logs if all(final(logs.get(k, [])) for k in keys) else None

            logs = wait_for(all_final, 90, 0.5, "a final log for every webhook command")

        # signed: the receiver verified the signature, the body says what happened to whom
        assert len(receiver.hits["ok"]) == 1, "only the allowed webhook reached /ok"
        hit = receiver.hits["ok"][0]
        assert hit["valid"]
        body = hit["body"]
        assert body["subject_type"] == "order" and body["subject_id"] == "42"
        assert body["store_id"] == store.id and body["rule_id"] == 77
        assert body["event"]["event_id"] == signed["event_id"] and body["event"]["trigger"] == "new_order"
        assert body["payload"] == {"greeting": "hi ala@example.com"}
        assert hit["headers"]["x-wooflow-delivery"] == signed["idempotency_key"]
        assert final(logs[signed["idempotency_key"]])["status"] == "succeeded"

        # flaky: 503, 503, 200 → exactly one effective delivery, on the third attempt
        assert receiver.flaky_seen[flaky["idempotency_key"]] == 3
        assert receiver.hits["flaky_ok"] == [{"delivery": flaky["idempotency_key"], "attempt": "3"}]
        flaky_logs = logs[flaky["idempotency_key"]]
        assert [r["status"] for r in flaky_logs] == ["retrying", "retrying", "succeeded"]
        assert final(flaky_logs)["attempt"] == 3

        # always failing: three attempts, then the DLQ with the reason
        assert len(receiver.hits["down"]) == 3
        down_final = final(logs[down["idempotency_key"]])
        assert down_final["status"] == "dead_lettered" and "HTTP 500" in down_final["message"]
        dead = [rec for _, rec in read_topic(s, "automation.dlq") if rec["stage"] == "workers"]
        reasons = {(rec["reason"], rec["attempts"]) for rec in dead if "HTTP 500" in rec["error"]}
        assert reasons == {("max_attempts", 3)}

        # refused: failed with the reason, dead-lettered, never connected
        for what, cmd in refused.items():
            rec = final(logs[cmd["idempotency_key"]])
            assert rec["status"] == "failed", what
            assert "refused" in rec["message"], (what, rec["message"])
        assert "metadata" in final(logs[refused["direct metadata"]["idempotency_key"]])["message"]
        assert "10.0.0.5" in final(logs[refused["dns private"]["idempotency_key"]])["message"]
        assert "loopback" in final(logs[refused["dns loopback (localhost)"]["idempotency_key"]])["message"]
        # the redirects reached the receiver (allowed), their targets did not
        assert sorted(h["to"] for h in receiver.hits["redirect"]) == sorted(
            [f"http://127.0.0.1:{port}/ok", "http://10.1.2.3/hook", "http://169.254.169.254/latest/meta-data/"])
        refused_dlq = [rec for rec in dead if "refused" in rec["error"]]
        assert len(refused_dlq) == len(refused) and {rec["reason"] for rec in refused_dlq} == {"action_error"}


@pytest.mark.unit
def test_egress_policy_allowlists_and_checks_before_connecting() -> None:
    receiver = Receiver()

    async def go(port: int) -> None:
        url = f"http://127.0.0.1:{port}/ok"
        strict = SafeHttp(EgressPolicy.parse(""))
        with pytest.raises(EgressRefused, match="loopback"):
            await strict.request("POST", url, content=b"{}")
        await strict.aclose()
        # a CIDR on the allow-list opens exactly that network
        cidr = SafeHttp(EgressPolicy.parse("127.0.0.0/8"))
        answer = await cidr.request("POST", url, content=b"{}")
        assert answer.status_code == 401  # reached (unsigned → the receiver says 401)
        with pytest.raises(EgressRefused, match="private"):
            await cidr.request("POST", "http://192.168.1.1/", content=b"{}")
        await cidr.aclose()
        # IPv4-mapped IPv6, link-local v6 and unspecified are refused too
        policy = EgressPolicy.parse("")
        import ipaddress
        for raw in ("::ffff:127.0.0.1", "fe80::1", "0.0.0.0", "100.100.100.200", "fd00:ec2::254", "::1"):
            assert policy.refusal(ipaddress.ip_address(raw)), raw
        assert policy.refusal(ipaddress.ip_address("93.184.216.34")) is None
        # one private address among public ones is enough to refuse a name
        mixed = SafeHttp(policy, StaticResolver({"mixed.test": ["93.184.216.34", "10.0.0.1"]}))
        with pytest.raises(EgressRefused, match=r"10\.0\.0\.1"):
            await mixed.request("POST", "http://mixed.test/", content=b"{}")
        with pytest.raises(EgressRefused, match="only http"):
            await mixed.request("POST", "file:///etc/passwd", content=b"{}")
        await mixed.aclose()

    with ServerThread(receiver.app()) as srv:
        asyncio.run(go(srv.port))
    assert len(receiver.hits["ok"]) == 1
