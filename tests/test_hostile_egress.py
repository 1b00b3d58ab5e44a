"""SSRF probe matrix for every URL a store owner sets: the `webhook` action's `url` (rules
API), the SMS provider URL (`settings.sms.url`) and whatever plugin actions reach through
`ctx.http` all go through workers/netguard.py's SafeHttp.

Each form in LOOPBACK_FORMS names this machine in its own way (numbers in decimal, octal,
hex or short; IPv4-mapped IPv6; look-alike Unicode; userinfo in front). The matrix shows
each one refused with the default policy while a receiver on 127.0.0.1 counts no request,
and each one *reaching* that receiver once private addresses are allowed — so every
refusal is of a URL that really leads inside. Addresses no test can listen on (private
ranges, link-local, metadata, ULA, 6to4, NAT64...) are refused by the policy; non-http
schemes are refused even when private addresses are allowed. DNS that answers differently
between check and connect, and redirects to each form, are refused too, end to end through
a worker on the real broker as well.

(The store's own URL — its REST API — is not in the matrix: only the operator sets it, with
`wooflow stores add`; a store token has no way to change it.)
"""

from __future__ import annotations

import asyncio
import ipaddress
import threading
from collections import Counter
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.support import ServerThread, make_store, read_topic, wait_for
from wooflow.stores import Store, upsert_store
from wooflow.workers.actions.webhook import Webhook
from wooflow.workers.errors import TransientError
from wooflow.workers.netguard import EgressPolicy, EgressRefused, SafeHttp, StaticResolver
from wooflow.workers.testing import WorkerThread, command, produce

# {port}: the receiver's port on 127.0.0.1
LOOPBACK_FORMS = (
    "http://127.0.0.1:{port}/hook", "http://127.1:{port}/hook", "http://127.0.1:{port}/hook",
    "http://2130706433:{port}/hook", "http://017700000001:{port}/hook", "http://0177.0.0.1:{port}/hook",
    "http://0x7f.0.0.1:{port}/hook", "http://0x7f000001:{port}/hook", "http://0x7f.1:{port}/hook",
    "http://127.000.000.001:{port}/hook", "http://127.0.0.1.:{port}/hook",
    "http://[::ffff:127.0.0.1]:{port}/hook", "http://[::ffff:7f00:1]:{port}/hook",
    "http://[0:0:0:0:0:ffff:127.0.0.1]:{port}/hook",
    "http://localhost:{port}/hook", "http://LOCALHOST:{port}/hook", "http://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ:{port}/hook",
    "http://①②⑦.0.0.1:{port}/hook", "http://１２７.０.０.１:{port}/hook", "http://127。0。0。1:{port}/hook",
    "http://0.0.0.0:{port}/hook", "http://0:{port}/hook",
    "http://public.example@127.0.0.1:{port}/hook", "http://public.example:443@127.0.0.1:{port}/hook",
    "http://127.0.0.1:{port}/hook#@public.example", "http://127.0.0.1:{port}/hook?@public.example",
    "HTTP://127.0.0.1:{port}/hook",
)
# refused by the policy; nothing to reach on this machine
ELSEWHERE = (
    "http://10.0.0.1/", "http://172.16.0.1/", "http://192.168.1.1/", "http://100.64.0.1/", "http://169.254.169.254/",
    "http://169.254.170.2/", "http://100.100.100.200/", "http://198.18.0.1/", "http://192.0.2.1/",
    "http://224.0.0.1/", "http://255.255.255.255/", "http://240.0.0.1/", "http://0.1.2.3/", "http://012.0.0.1/",
    "http://0xa9fea9fe/", "http://2852039166/",
    "http://[::]/", "http://[::1]/", "http://[fe80::1]/", "http://[fe80::1%25lo]/", "http://[fc00::1]/",
    "http://[fd12:3456::1]/", "http://[fd00:ec2::254]/", "http://[fec0::1]/", "http://[ff02::1]/",
    "http://[::ffff:10.0.0.1]/", "http://[::ffff:169.254.169.254]/", "http://[::127.0.0.1]/",
    "http://[64:ff9b::7f00:1]/", "http://[64:ff9b::a9fe:a9fe]/", "http://[2002:7f00:1::]/",
    "http://[2002:a9fe:a9fe::]/", "http://[2002:a00:1::1]/", "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
    "http://[2001:db8::1]/", "http://[100::1]/",
)
NOT_HTTP = (
    "file:///etc/passwd", "gopher://127.0.0.1:{port}/_POST", "ftp://127.0.0.1/", "dict://127.0.0.1:11211/",
    "ws://127.0.0.1:{port}/hook", "wss://127.0.0.1/", "data:text/plain,hi", "javascript:alert(1)",
    "unix:///var/run/docker.sock", "http+unix://%2Fvar%2Frun%2Fdocker.sock/info", "//127.0.0.1:{port}/hook",
    "http:/127.0.0.1:{port}/hook", "http:///hook",
)


class Receiver:
    """Counts every request per path; /redirect?to=URL answers a redirect there."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.hits: Counter[str] = Counter()

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            await request.body()
            with self.lock:
                self.hits[request.url.path] += 1
            return JSONResponse({"ok": True})

        async def redirect(request: Request) -> Response:
            with self.lock:
                self.hits["/redirect"] += 1
            return RedirectResponse(request.query_params["to"], status_code=int(request.query_params.get("code", 307)))

        async def bad_location(request: Request) -> Response:
            return Response(status_code=302, headers={"Location": "http://[::1"})

        return Starlette(routes=[Route("/hook", hook, methods=["GET", "POST"]),
                                 Route("/redirect", redirect, methods=["GET", "POST"]),
                                 Route("/bad-location", bad_location, methods=["GET", "POST"])])


@pytest.fixture
def inside():  # type: ignore[no-untyped-def]
    """A receiver on 127.0.0.1 — inside, where a store's URLs must never lead."""
    receiver = Receiver()
    with ServerThread(receiver.app()) as srv:
        yield receiver, srv.port


@pytest.fixture
def outside():  # type: ignore[no-untyped-def]
    """A receiver on 127.0.0.2 that stands for a public server (the tests allow-list it)."""
    receiver = Receiver()
    with ServerThread(receiver.app(), host="127.0.0.2") as srv:
        yield receiver, srv.port


async def outcome(http: SafeHttp, url: str) -> str:
    try:
        answer = await http.request("POST", url, content=b"{}", timeout=5)
    except EgressRefused as exc:
        return f"refused: {exc}"
    except TransientError as exc:
        return f"transient: {exc}"
    return f"HTTP {answer.status_code}"


@pytest.mark.unit
def test_ssrf_matrix_every_form_is_refused_by_default_and_reaches_inside_only_when_allowed(inside) -> None:  # type: ignore[no-untyped-def]
    receiver, port = inside
    forms = [f.format(port=port) for f in LOOPBACK_FORMS]

    async def run(policy: EgressPolicy, urls: list[str]) -> dict[str, str]:
        http = SafeHttp(policy)
        try:
            return {u: await outcome(http, u) for u in urls}
        finally:
            await http.aclose()

    strict = asyncio.run(run(EgressPolicy.parse(""), forms + list(ELSEWHERE) + [f.format(port=port) for f in NOT_HTTP]))
    not_refused = {u: o for u, o in strict.items() if not o.startswith("refused")}
    assert not not_refused, not_refused
    assert receiver.hits["/hook"] == 0
    # the same forms do lead inside: with private addresses allowed each one arrives
    allowed = asyncio.run(run(EgressPolicy.parse("", allow_private=True), forms))
    assert {u: o for u, o in allowed.items() if o != "HTTP 200"} == {}
    assert receiver.hits["/hook"] == len(forms)
    # other schemes stay refused whatever the policy
    schemes = asyncio.run(run(EgressPolicy.parse("", allow_private=True), [f.format(port=port) for f in NOT_HTTP]))
    assert all(o.startswith("refused") for o in schemes.values()), schemes
    print(f"\nSSRF matrix: {len(strict)} URLs refused by default ({len(forms)} shown to reach inside when allowed, "
          f"{len(NOT_HTTP)} other schemes refused when allowed too)")


class Rebinding:
    """A name that resolves to the allowed (stand-in public) address first and to the
    inside address on every later look-up: a check and a connect that each resolved
    would check the first answer and connect to the second."""

    def __init__(self, first: str, then: str) -> None:
        self.first, self.then, self.calls = first, then, 0

    async def resolve(self, host: str, port: int) -> list[str]:
        self.calls += 1
        return [self.first if self.calls == 1 else self.then]


@pytest.mark.unit
def test_dns_rebinding_cannot_swap_the_checked_address() -> None:
    """The name answers the allowed address (127.0.0.2, standing for a public server) first and
    the inside address (127.0.0.1, same port) afterwards. A client that looked it up once to
    check and again to connect would land inside; this one looks it up once per connection."""
    inner, outer = Receiver(), Receiver()
    with ServerThread(outer.app(), host="127.0.0.2") as out_srv, \
            ServerThread(inner.app(), host="127.0.0.1", port=out_srv.port):
        url = f"http://rebind.test:{out_srv.port}/hook"
        rebinding = Rebinding("127.0.0.2", "127.0.0.1")

        async def once() -> str:
            http = SafeHttp(EgressPolicy.parse("127.0.0.2/32"), rebinding)  # a new client: a new connection
            try:
                return await outcome(http, url)
            finally:
                await http.aclose()

        first = asyncio.run(once())
        assert (first, rebinding.calls) == ("HTTP 200", 1)
        second = asyncio.run(once())
    assert outer.hits["/hook"] == 1 and inner.hits["/hook"] == 0
    assert second.startswith("refused") and "127.0.0.1 is a loopback address" in second, second
    assert rebinding.calls == 2


@pytest.mark.unit
def test_redirects_to_every_inside_form_are_refused(inside, outside) -> None:  # type: ignore[no-untyped-def]
    inner, port = inside
    outer, outer_port = outside
    targets = [f.format(port=port) for f in LOOPBACK_FORMS] + list(ELSEWHERE[:6]) + ["file:///etc/passwd"]

    async def go() -> dict[str, str]:
        http = SafeHttp(EgressPolicy.parse("127.0.0.2/32"))
        out = {}
        try:
            for i, target in enumerate(targets):
                code = (301, 302, 303, 307, 308)[i % 5]
                url = f"http://127.0.0.2:{outer_port}/redirect?code={code}&to={_quote(target)}"
                out[target] = await outcome(http, url)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            out["error"] = repr(exc)
        finally:
            await http.aclose()
        return out

    results = asyncio.run(go())
    assert "error" not in results, results["error"]
    assert not {t: o for t, o in results.items() if not o.startswith("refused")}
    assert outer.hits["/redirect"] == len(targets)
    assert inner.hits["/hook"] == 0


def _quote(url: str) -> str:
    from urllib.parse import quote

    return quote(url, safe="")


@pytest.mark.integration
def test_store_urls_are_refused_end_to_end_through_a_worker(settings, engine, inside) -> None:  # type: ignore[no-untyped-def]
    """The webhook URL of a rule and the store's SMS provider URL, through a real worker:
    each inside form fails with the refusal (no retries), dead-lettered, never connected."""
    receiver, port = inside
    store = make_store(engine)
    sms_stores = []
    for form in LOOPBACK_FORMS[:8]:
        sms = Store(id=f"{store.id}s{len(sms_stores)}", url=store.url, webhook_secret="s",
                    settings={"sms": {"provider": "http", "url": form.format(port=port), "token": "t"}})
        upsert_store(engine, sms)
        sms_stores.append(sms)
    ctx = {"order": {"id": 42, "number": "42", "billing": {"email": "ala@example.com", "phone": "+48600100200"},
                     "customer_id": 7}}
    hooks = [command(store_id=store.id, action_type="webhook", customer_key=f"c{i}", subject_id="42", context=ctx,
                     params={"url": form.format(port=port)}) for i, form in enumerate(LOOPBACK_FORMS)]
    texts = [command(store_id=s.id, action_type="send_sms", customer_key="c1", subject_id="42", context=ctx,
                     params={"text": "hi", "to": "+48600100200"}) for s in sms_stores]
    every = hooks + texts
    s = settings.model_copy(update={"allow_private_webhooks": False, "webhook_allowlist": "",
                                    "action_retry_base_s": 0.2, "deferred_poll_s": 0.2})
    produce(s, every)
    keys = {c["idempotency_key"] for c in every}
    with WorkerThread(s):
        def finals() -> dict[str, dict[str, Any]] | None:
            logs = {rec["idempotency_key"]: rec for _, rec in read_topic(s, "automation.logs")
                    if rec["status"] != "retrying"}
            return logs if keys <= set(logs) else None

        logs = wait_for(finals, 90, 0.5, "a final log for every command")
    wrong = {k: (logs[k]["status"], logs[k]["message"]) for k in keys
             if logs[k]["status"] != "failed" or "refused" not in logs[k]["message"]}
    assert not wrong, wrong
    assert all(logs[k]["attempt"] == 1 for k in keys), "a refusal is permanent: never retried"
    assert receiver.hits["/hook"] == 0


# --- defects the matrix found -------------------------------------------------------------

@pytest.mark.unit
def test_6to4_address_of_loopback_is_blocked() -> None:
    """2002:7f00:1:: is carried to 127.0.0.1 (and 2002:a9fe:a9fe:: to the metadata address)."""
    policy = EgressPolicy.parse("")
    assert "loopback" in (policy.refusal(ipaddress.ip_address("2002:7f00:1::")) or "")
    assert "metadata" in (policy.refusal(ipaddress.ip_address("2002:a9fe:a9fe::")) or "")
    assert "private" in (policy.refusal(ipaddress.ip_address("2002:a00:1::1")) or "")
    assert policy.refusal(ipaddress.ip_address("2002:5db8:d822::1")) is None  # 6to4 of a public address


@pytest.mark.unit
def test_site_local_ipv6_is_blocked() -> None:
    assert "site-local" in (EgressPolicy.parse("").refusal(ipaddress.ip_address("fec0::1")) or "")


@pytest.mark.unit
def test_numeric_ipv4_forms_are_refused_not_retried_as_network_errors(inside) -> None:  # type: ignore[no-untyped-def]
    """`http://2130706433/`, `http://0177.0.0.1/`, `http://127.1/` were sent to aiohttp, which
    refused them as non-canonical: a network error, retried until the DLQ, never saying why."""
    receiver, port = inside

    async def go() -> list[str]:
        http = SafeHttp(EgressPolicy.parse(""))
        try:
            return [await outcome(http, f"http://{host}:{port}/hook")
                    for host in ("2130706433", "0177.0.0.1", "127.1", "0", "127.0.0.1.", "0x7f.1")]
        finally:
            await http.aclose()

    results = asyncio.run(go())
    assert all(r.startswith("refused") and ("loopback" in r or "0.0.0.0" in r) for r in results), results
    assert receiver.hits["/hook"] == 0


@pytest.mark.unit
def test_numeric_host_that_is_no_address_is_refused() -> None:
    async def go() -> str:
        http = SafeHttp(EgressPolicy.parse("", allow_private=True))
        try:
            return await outcome(http, "http://1.2.3.4.5/")
        finally:
            await http.aclose()

    assert "neither an IPv4 address nor a host name" in asyncio.run(go())


@pytest.mark.unit
def test_redirect_to_a_percent_encoded_host_is_refused_not_an_internal_error(outside) -> None:  # type: ignore[no-untyped-def]
    """A Location naming a Unicode host arrives percent-encoded; its host reached the resolver,
    whose IDNA encoding raised UnicodeError out of the action."""
    _, port = outside

    async def go() -> str:
        http = SafeHttp(EgressPolicy.parse("127.0.0.2/32"))
        try:
            target = _quote("http://%E2%93%9B%E2%93%9E%E2%93%92%E2%93%90%E2%93%9B%E2%93%97%E2%93%9E%E2%93%A2%E2%93%A3/")
            return await outcome(http, f"http://127.0.0.2:{port}/redirect?to={target}")
        finally:
            await http.aclose()

    assert "is not a valid host name" in asyncio.run(go())


@pytest.mark.unit
def test_invalid_redirect_location_is_a_clear_error(outside) -> None:  # type: ignore[no-untyped-def]
    """A Location aiohttp cannot parse raised ValueError out of the action (an internal error)."""
    from wooflow.workers.errors import ActionError

    _, port = outside

    async def go() -> None:
        http = SafeHttp(EgressPolicy.parse("127.0.0.2/32"))
        try:
            with pytest.raises(ActionError, match="redirected to an invalid URL"):
                await http.request("POST", f"http://127.0.0.2:{port}/bad-location", content=b"{}")
        finally:
            await http.aclose()

    asyncio.run(go())


@pytest.mark.unit
@pytest.mark.parametrize("headers", [
    {"Content-Length": "5"}, {"transfer-encoding": "chunked"}, {"Host": "internal.example"},
    {"X-A": "a\r\nX-Injected: 1"}, {"X-A\r\nX-B": "y"}, {"Bad Name": "x"}, {"x-wooflow-signature": "sha256=forged"},
    {"Idempotency-Key": "mine"}, {"X-A": "nul\x00"},
])
def test_webhook_headers_cannot_smuggle_framing_or_control_characters(headers: dict[str, str]) -> None:
    """A rule's extra headers were sent as given: Content-Length over a shorter body desynchronised
    the kept-alive connection to the receiver, CR/LF made aiohttp raise ValueError mid-action."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="header"):
        Webhook.Params.model_validate({"url": "https://hooks.example/x", "headers": headers})
    assert Webhook.Params.model_validate({"url": "https://hooks.example/x", "headers": {"X-Shop": "żółć 1"}})


@pytest.mark.unit
def test_the_static_resolver_is_checked_like_any_other() -> None:
    """Operators pinning names (StaticResolver) get no way around the policy."""
    async def go() -> str:
        http = SafeHttp(EgressPolicy.parse(""), StaticResolver({"pinned.test": ["::ffff:169.254.169.254"]}))
        try:
            return await outcome(http, "http://pinned.test/")
        finally:
            await http.aclose()

    assert "metadata" in asyncio.run(go())
