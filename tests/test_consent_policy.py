"""A store's marketing-consent policy: opt-in with grants from the checkout checkbox (order
or customer meta), the storefront and the API; opt-out; withdrawals winning by time; the
triggering order's own checkbox counting before anyone recorded it; answers read from
events recorded once (replays change nothing); the policy set through the API and the
CLI; the dry run's verdict; and, end to end through every role on the real broker and
PostgreSQL with a real SMTP server, the welcome template's email sent or skipped."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import Engine, insert, text

from tests.harness import api_client, bearer
from tests.support import env_of, make_sim_store, make_store, unique, wait_for, wooflow_cli
from tests.test_workflows_e2e import Workflows
from wooflow.consent_policy import ConsentPolicy, policy_of, record_event_answers
from wooflow.db.tables import consents, execution_logs
from wooflow.producers.keys import email_hash
from wooflow.scheduler.templates import install
from wooflow.settings import Settings
from wooflow.stores import Store, StoreCache, upsert_store
from wooflow.workers.consent import TableConsentChecker, record

KEY = "_wooflow_marketing_consent"
NOW = datetime.now(timezone.utc).replace(microsecond=0)


def store_with(engine: Engine, url: str = "http://127.0.0.1:1", **consent: Any) -> Store:
    store = make_store(engine, url)
    store = Store(**{**store.__dict__, "settings": {"consent": consent, "smtp": {"host": "mail.example"}}})
    upsert_store(engine, store)
    return store


def gkey(email: str) -> str:
    return f"g{email_hash(email)}"


def order_ctx(oid: int, email: str, created: datetime, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """A command's context as the rule consumer builds it for an order event."""
    return {"customer_key": gkey(email),
            "order": {"id": oid, "billing": {"email": email}, "date_created": created.isoformat(),
                      "meta": {k: json.dumps(v) for k, v in (meta or {}).items()}}}


def check(settings: Settings, engine: Engine, store: Store, email: str, context: dict[str, Any] | None = None) -> Any:
    return TableConsentChecker(settings, engine).check(store.id, "email", email=email, customer_key=gkey(email),
                                                       context=context or {"customer_key": gkey(email)})


def order_event(store: Store, oid: int, email: str, created: datetime, meta: dict[str, Any]) -> dict[str, Any]:
    return {"event_id": unique("ev"), "store_id": store.id, "customer_key": gkey(email), "action": "created",
            **{k: v for k, v in order_ctx(oid, email, created, meta).items() if k == "order"}}


def customer_event(store: Store, cid: int, email: str, modified: datetime, value: str) -> dict[str, Any]:
    return {"event_id": unique("ev"), "store_id": store.id, "customer_key": f"c{cid}", "action": "updated",
            "customer": {"id": cid, "email": email, "date_modified": modified, "meta": {KEY: json.dumps(value)}}}


def storefront_event(store: Store, email: str, flag: str | None, at: datetime, event_id: str = "") -> dict[str, Any]:
    return {"event_id": event_id or unique("sf"), "store_id": store.id, "customer_key": gkey(email),
            "event_type": "email_captured", "email": email, "occurred_at": at,
            "properties": {"marketing_consent": flag} if flag else {}}


def rows(engine: Engine, store: Store) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(text(
            "SELECT email, customer_key, granted, source, source_ref, recorded_at FROM consents WHERE store_id = :s "
            "ORDER BY recorded_at, id"), {"s": store.id}).mappings()]


# --- the policy --------------------------------------------------------------------------------

@pytest.mark.unit
def test_policy_validation_and_checkbox_values() -> None:
    p = ConsentPolicy()
    assert (p.policy, p.grants_from, p.meta_key) == ("opt_in", ["api", "order_meta", "customer_meta"], None)
    for bad in ({"policy": "maybe"}, {"grants_from": ["crm"]}, {"surprise": 1}):
        with pytest.raises(ValidationError):
            ConsentPolicy.model_validate(bad)
    p = ConsentPolicy(meta_key=f" {KEY} ", meta_yes=["YES", "1"], meta_no=["No"])
    assert p.meta_key == KEY
    assert p.meta_answer({KEY: '"Yes"'}) is True and p.meta_answer({KEY: "1"}) is True
    assert p.meta_answer({KEY: '"no"'}) is False
    assert p.meta_answer({KEY: '"maybe"'}) is None and p.meta_answer({"other": '"yes"'}) is None
    assert ConsentPolicy(meta_key=KEY).meta_answer({KEY: "true"}) is True  # a JSON boolean
    assert ConsentPolicy(meta_key=KEY).meta_answer({KEY: '"no"'}) is None  # an unticked box is no answer
    # stored settings written around the CLI/API never loosen the policy
    broken = Store(id="x", url="http://x", webhook_secret="s", settings={"consent": {"policy": "whatever"}})
    assert policy_of(broken) == ConsentPolicy()


@pytest.mark.integration
def test_opt_in_counts_the_triggering_orders_checkbox(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = store_with(engine, policy="opt_in", meta_key=KEY, meta_yes=["yes"])
    ticked = order_ctx(1, "ala@example.com", NOW, {KEY: "yes"})
    d = check(settings, engine, store, "ala@example.com", ticked)
    assert (d.granted, d.source, d.policy) == (True, "order_meta", "opt_in")
    d = check(settings, engine, store, "bob@example.com", order_ctx(2, "bob@example.com", NOW))
    assert not d.granted and d.reason == "no email marketing consent on record for bob@example.com"
    # the box someone else ticked is not this recipient's consent
    assert not check(settings, engine, store, "eve@example.com", ticked).granted
    # nothing is recorded by the check itself
    assert rows(engine, store) == []
    # a store without a meta key, or not trusting order meta, ignores the box
    assert not check(settings, engine, store_with(engine, policy="opt_in"), "ala@example.com", ticked).granted
    untrusting = store_with(engine, meta_key=KEY, grants_from=["api"])
    assert not check(settings, engine, untrusting, "ala@example.com", ticked).granted


@pytest.mark.integration
def test_opt_out_sends_unless_withdrawn_and_the_newest_answer_wins(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = store_with(engine, policy="opt_out")
    d = check(settings, engine, store, "dan@example.com")
    assert (d.granted, d.source, d.policy) == (True, "policy", "opt_out") and "has not withdrawn" in d.reason
    record(engine, store.id, granted=False, email="dan@example.com", source="unsubscribe_link")
    d = check(settings, engine, store, "dan@example.com")
    assert not d.granted and "withdrew" in d.reason and d.source == "unsubscribe_link"
    record(engine, store.id, granted=True, email="dan@example.com", source="preference_center")
    assert check(settings, engine, store, "dan@example.com").granted  # a later explicit grant re-enables

    # a grant and a withdrawal given at the same instant: the withdrawal wins
    with engine.begin() as conn:
        for granted in (False, True):
            conn.execute(insert(consents).values(store_id=store.id, email="tie@example.com", granted=granted,
                                                 source="import", recorded_at=NOW + timedelta(hours=1)))
    assert not check(settings, engine, store, "tie@example.com").granted


@pytest.mark.integration
def test_withdrawals_and_checkout_grants_are_ordered_by_time(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = store_with(engine, meta_key=KEY)
    addr = "ola@example.com"
    record(engine, store.id, granted=False, email=addr, source="unsubscribe_link")  # now
    # the box was ticked on an order placed before the unsubscribe: the withdrawal wins
    earlier = order_ctx(3, addr, NOW - timedelta(hours=1), {KEY: "yes"})
    d = check(settings, engine, store, addr, earlier)
    assert not d.granted and "withdrew" in d.reason
    # ticked again on a later order: an explicit new grant
    later = order_ctx(4, addr, datetime.now(timezone.utc) + timedelta(minutes=1), {KEY: "yes"})
    d = check(settings, engine, store, addr, later)
    assert d.granted and d.source == "order_meta"


@pytest.mark.integration
def test_answers_read_from_events_are_recorded_once(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = store_with(engine, meta_key=KEY, meta_no=["no"], grants_from=["api", "order_meta", "customer_meta"])
    policy = policy_of(store)
    with engine.begin() as conn:
        ev = order_event(store, 7, "Ala@Example.com", NOW - timedelta(days=1), {KEY: "yes"})
        assert record_event_answers(conn, policy, "OrderEvent", ev) == 1
        assert record_event_answers(conn, policy, "OrderEvent", {**ev, "event_id": "replayed"}) == 0  # replay
        assert record_event_answers(conn, policy, "OrderEvent",
                                    order_event(store, 8, "bob@example.com", NOW, {})) == 0  # no box
        sf = storefront_event(store, "cat@example.com", "yes", NOW - timedelta(hours=2), "sf-1")
        assert record_event_answers(conn, policy, "StorefrontEvent", sf) == 1
        assert record_event_answers(conn, policy, "StorefrontEvent", sf) == 0
        assert record_event_answers(conn, policy, "StorefrontEvent",
                                    storefront_event(store, "cat@example.com", "no", NOW)) == 0
        assert record_event_answers(conn, policy, "StorefrontEvent",
                                    storefront_event(store, "cat@example.com", None, NOW)) == 0
    got = rows(engine, store)
    assert [(r["email"], r["granted"], r["source"], r["source_ref"]) for r in got] == [
        ("ala@example.com", True, "order_meta", "order:7"), ("cat@example.com", True, "storefront", "storefront:sf-1")]
    assert got[0]["customer_key"] == gkey("ala@example.com") and got[0]["recorded_at"] == NOW - timedelta(days=1)
    # a later email not tied to that order sees the recorded grant
    assert check(settings, engine, store, "ala@example.com").granted


@pytest.mark.integration
def test_customer_meta_is_a_state_a_repeated_yes_after_an_unsubscribe_grants_nothing(  # type: ignore[no-untyped-def]
        settings, engine) -> None:
    store = store_with(engine, meta_key=KEY, meta_no=["no"])
    policy, addr, cid = policy_of(store), "kim@example.com", 41

    def customer(at: datetime, value: str) -> int:
        with engine.begin() as conn:
            return record_event_answers(conn, policy, "CustomerEvent", customer_event(store, cid, addr, at, value))

    def verdict(at: datetime, value: str) -> Any:
        ctx = {"customer_key": f"c{cid}", "customer": {"id": cid, "email": addr, "date_modified": at.isoformat(),
                                                       "meta": {KEY: json.dumps(value)}}}
        return TableConsentChecker(settings, engine).check(store.id, "email", email=addr, customer_key=f"c{cid}",
                                                           context=ctx)

    t1 = NOW - timedelta(days=3)
    assert customer(t1, "yes") == 1 and verdict(t1, "yes").granted
    record(engine, store.id, granted=False, email=addr, source="unsubscribe_link")  # now
    later = datetime.now(timezone.utc) + timedelta(minutes=1)
    # a profile edit still carrying the old "yes" is no new answer: neither recorded nor counted
    assert customer(later, "yes") == 0
    assert not verdict(later, "yes").granted
    # the customer unticks and ticks again: two new answers, consent is back
    assert customer(later + timedelta(minutes=1), "no") == 1
    assert customer(later + timedelta(minutes=2), "yes") == 1
    assert verdict(later + timedelta(minutes=2), "yes").granted
    assert customer(later + timedelta(minutes=2), "yes") == 0  # replayed


@pytest.mark.integration
def test_storefront_grants_count_only_where_the_store_trusts_them(settings, engine) -> None:  # type: ignore[no-untyped-def]
    default = store_with(engine)
    trusting = store_with(engine, grants_from=["api", "storefront"])
    for store in (default, trusting):
        with engine.begin() as conn:
            record_event_answers(conn, policy_of(store), "StorefrontEvent",
                                 storefront_event(store, "sue@example.com", "yes", NOW))
    assert not check(settings, engine, default, "sue@example.com").granted
    d = check(settings, engine, trusting, "sue@example.com")
    assert d.granted and d.source == "storefront"


# --- setting the policy ------------------------------------------------------------------------

@pytest.mark.integration
def test_policy_through_the_api(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = store_with(engine)
    client = api_client(settings)
    h = bearer(engine, store.id)
    assert client.get("/v1/consent-policy", headers=h).json()["policy"] == "opt_in"
    r = client.put("/v1/consent-policy", headers=h,
                   json={"policy": "opt_out", "meta_key": KEY, "meta_yes": ["Yes"], "grants_from": ["api"]})
    assert r.status_code == 200, r.text
    got = client.get("/v1/consent-policy", headers=h).json()
    assert (got["policy"], got["meta_key"], got["meta_yes"], got["grants_from"]) == ("opt_out", KEY, ["yes"], ["api"])
    with engine.connect() as conn:
        saved = conn.execute(text("SELECT settings FROM stores WHERE id = :s"), {"s": store.id}).scalar_one()
    assert saved["smtp"] == {"host": "mail.example"}  # other settings untouched
    bad = client.put("/v1/consent-policy", headers=h, json={"policy": "sometimes"})
    assert bad.status_code == 422 and "policy" in bad.json()["message"]
    # sources of answers read from events cannot be forged through the API
    forged = client.post("/v1/consents", headers=h, json={"email": "a@b.pl", "granted": True, "source": "order_meta"})
    assert forged.status_code == 422 and "reserved" in forged.json()["message"]
    assert client.get("/v1/consent-policy").status_code == 401


@pytest.mark.e2e
def test_policy_through_the_cli(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = store_with(engine)
    env = env_of(settings)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return wooflow_cli("stores", "consent", *args, env=env)

    done = cli(store.id, "--policy", "opt_out", "--meta-key", KEY, "--meta-yes", "yes, 1",
               "--grants-from", "api,order_meta,storefront")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["meta_yes"] == ["yes", "1"]
    shown = cli(store.id)  # no options: show
    assert shown.returncode == 0 and json.loads(shown.stdout)["policy"] == "opt_out"
    p = policy_of(Store(**{**store.__dict__, "settings": _settings(engine, store.id)}))
    assert (p.policy, p.meta_key, p.grants_from) == ("opt_out", KEY, ["api", "order_meta", "storefront"])
    bad = cli(store.id, "--policy", "sometimes")
    assert bad.returncode == 1 and "policy" in bad.stderr
    assert cli("no-such-store").returncode == 1


def _settings(engine: Engine, store_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT settings FROM stores WHERE id = :s"), {"s": store_id}).scalar_one())


# --- the dry run -------------------------------------------------------------------------------

@pytest.mark.integration
def test_dry_run_shows_the_verdict_with_policy_and_source(settings, engine) -> None:  # type: ignore[no-untyped-def]
    from wooflow.simulator.server import SimulatorServer

    with SimulatorServer(seed=5) as sim:
        store = make_sim_store(engine, sim)
        upsert_store(engine, Store(**{**store.__dict__, "settings": {"consent": {"meta_key": KEY}}}))
        rule_id = install(engine, store.id, "welcome_series")
        client = api_client(settings)
        h = bearer(engine, store.id)
        product = sim.store.create_product("Kettle", "150.00")

        def dry_run(email: str, meta: list[dict[str, Any]]) -> dict[str, Any]:
            order = sim.store.create_order(line_items=[{"product_id": product.id, "quantity": 1}],
                                           billing={"email": email, "country": "PL"}, meta_data=meta,
                                           status="processing")
            r = client.post(f"/v1/rules/{rule_id}/dry-run", json={"order_id": order.id}, headers=h)
            assert r.status_code == 200, r.text
            return r.json()  # type: ignore[no-any-return]

        yes = dry_run("ala@example.com", [{"key": KEY, "value": "yes"}])
        assert yes["consent"]["policy"]["policy"] == "opt_in" and yes["consent"]["policy"]["meta_key"] == KEY
        assert yes["consent"]["channels"]["email"] | {"recorded_at": None} == {
            "granted": True, "policy": "opt_in", "source": "order_meta", "recorded_at": None,
            "reason": yes["consent"]["channels"]["email"]["reason"]}
        assert yes["actions"][0]["status"] == "dry_run"
        no = dry_run("bob@example.com", [])
        email = no["consent"]["channels"]["email"]
        assert (email["granted"], email["policy"], email["source"]) == (False, "opt_in", "")
        assert no["actions"][0]["status"] == "skipped"
        assert no["actions"][0]["details"]["reason"] == "no_consent"
        assert no["actions"][0]["details"]["policy"] == "opt_in"


# --- end to end: the welcome template through every role, a real SMTP server ------------------

def skipped(w: Workflows, ckey: str, step: int) -> dict[str, Any] | None:
    for log in w.logs(ckey, "skipped"):
        if log["step"] == step and log["action_type"] == "send_email":
            return log
    return None


def consent_rows(w: Workflows, source: str) -> list[dict[str, Any]]:
    return w.query("SELECT * FROM consents WHERE store_id = :s AND source = :src ORDER BY id", src=source)


@pytest.mark.e2e
def test_opt_in_checkout_box_storefront_capture_and_unsubscribe(settings, engine, logs_dir) -> None:  # type: ignore[no-untyped-def]
    policy = {"policy": "opt_in", "meta_key": KEY, "meta_yes": ["yes"], "grants_from": ["api", "order_meta",
                                                                                         "storefront"]}
    with ExitStack() as stack:
        w = Workflows(settings, engine, logs_dir, stack, store_settings={"consent": policy})
        install(engine, w.store.id, "welcome_series")
        w.start()
        try:
            product = w.sim.store.create_product("Mug", "49.00")

            def order(addr: str, meta: list[dict[str, Any]]) -> int:
                return w.sim.store.create_order(line_items=[{"product_id": product.id, "quantity": 1}],
                                                billing={"email": addr, "first_name": "Ala", "country": "PL"},
                                                meta_data=meta, status="processing").id

            ala, bob, cat = "ala@example.com", "bob@example.com", "cat@example.com"
            ala_order = order(ala, [{"key": KEY, "value": "yes"}])
            order(bob, [])
            # the checkbox on the first order lets the welcome email out at once
            [welcome] = wait_for(lambda: w.inbox.to(ala), 60, 0.2, "the welcome email of the customer who ticked")
            assert "Welcome to" in str(welcome["Subject"])
            # no box: skipped with reason no_consent, and nothing reached the SMTP server
            log = wait_for(lambda: skipped(w, gkey(bob), 0), 60, 0.2, "the skipped welcome email")
            assert log["details"]["reason"] == "no_consent" and log["details"]["policy"] == "opt_in"
            assert "no email marketing consent on record for bob@example.com" in log["message"]
            assert w.inbox.to(bob) == []
            # the scheduler's activity reader recorded the order's grant, once
            recorded = wait_for(lambda: consent_rows(w, "order_meta"), 60, 0.2, "the recorded checkout grant")
            assert [(r["email"], r["source_ref"], r["granted"]) for r in recorded] == \
                [(ala, f"order:{ala_order}", True)]

            # a storefront capture with the consent flag records a grant a later email honours
            w.storefront(unique("sess"), {"type": "email_captured", "email": cat, "marketing_consent": True})
            wait_for(lambda: consent_rows(w, "storefront"), 60, 0.2, "the storefront grant")
            order(cat, [])  # this order carries no box
            wait_for(lambda: w.inbox.to(cat), 60, 0.2, "the welcome email honouring the storefront grant")

            # the unsubscribe link: the next step of ala's series does not reach her
            link = str(welcome["List-Unsubscribe"]).strip("<>")
            assert httpx.post(link, timeout=10).status_code == 200
            w.at(timedelta(days=3, hours=1))
            wait_for(lambda: len(w.inbox.to(cat)) == 2, 60, 0.2, "cat's day-3 email (the pipeline moved past day 3)")
            stopped = wait_for(lambda: [s for s in w.steps(gkey(ala)) if s["step"] == 1 and s["status"] != "pending"],
                               60, 0.2, "ala's day-3 step")
            assert stopped[0]["status"] == "exited"
            assert len(w.inbox.to(ala)) == 1
        except AssertionError:
            print(w.role_logs())
            raise


@pytest.mark.e2e
def test_opt_out_sends_unless_the_customer_withdrew(settings, engine, logs_dir) -> None:  # type: ignore[no-untyped-def]
    from wooflow.workers import unsubscribe

    with ExitStack() as stack:
        w = Workflows(settings, engine, logs_dir, stack, store_settings={"consent": {"policy": "opt_out"}})
        install(engine, w.store.id, "welcome_series")
        dan, eve, fay = "dan@example.com", "eve@example.com", "fay@example.com"
        # eve withdrew through the consents API, fay through an unsubscribe link
        h = bearer(engine, w.store.id)
        r = httpx.post(f"{w.api.url}/v1/consents", headers=h, timeout=10,
                       json={"email": eve, "granted": False, "source": "preference_center"})
        assert r.status_code == 201, r.text
        saved = StoreCache(engine).get(w.store.id)
        assert saved is not None
        token = unsubscribe.make_token(w.settings, saved, email=fay, customer_key=gkey(fay), channel="email",
                                       rule_id=None)
        assert httpx.post(unsubscribe.unsubscribe_url(w.settings, token), timeout=10).status_code == 200
        w.start()
        try:
            product = w.sim.store.create_product("Mug", "49.00")
            for addr in (dan, eve, fay):
                w.sim.store.create_order(line_items=[{"product_id": product.id, "quantity": 1}],
                                         billing={"email": addr, "first_name": "Dan", "country": "PL"},
                                         status="processing")
            wait_for(lambda: w.inbox.to(dan), 60, 0.2, "the welcome email under opt-out")
            for addr, source in ((eve, "preference_center"), (fay, "unsubscribe_link")):
                log = wait_for(lambda addr=addr: skipped(w, gkey(addr), 0), 60, 0.2, f"{addr}'s skipped email")
                assert log["details"]["reason"] == "no_consent" and log["details"]["policy"] == "opt_out"
                assert log["details"]["consent_source"] == source and "withdrew" in log["message"]
                assert w.inbox.to(addr) == []
        except AssertionError:
            print(w.role_logs())
            raise


# --- the demo's summary and its store's checkbox -----------------------------------------------

@pytest.mark.integration
def test_demo_counts_emails_sent_and_skipped_for_no_consent(engine) -> None:  # type: ignore[no-untyped-def]
    from wooflow.demo import EmailCounts, email_counts

    store, other = unique("demo"), unique("demo")
    started = datetime.now(timezone.utc)

    def log(key: str, status: str, reason: str = "", *, at: datetime | None = None, attempt: int = 1,
            action: str = "send_email", store_id: str = store, dry_run: bool = False) -> dict[str, Any]:
        return {"log_id": f"{store_id}:{key}:{attempt}:{status}", "idempotency_key": key, "store_id": store_id,
                "customer_key": "c1", "rule_id": 1, "event_id": "e", "step": 0, "action_type": action,
                "status": status, "attempt": attempt, "dry_run": dry_run,
                "details": {"reason": reason} if reason else {},
                "executed_at": at or started + timedelta(seconds=attempt)}

    with engine.begin() as conn:
        conn.execute(insert(execution_logs), [
            log("a", "succeeded"),
            log("b", "retrying", attempt=1), log("b", "succeeded", attempt=2),  # one email, retried
            log("c", "skipped", "no_consent"), log("d", "skipped", "no_consent"),
            log("e", "skipped", "no_recipient"), log("f", "failed"),
            log("g", "succeeded", action="add_order_note"),
            log("h", "succeeded", store_id=other), log("i", "dry_run", dry_run=True),
            log("j", "succeeded", at=started - timedelta(minutes=5)),  # before the demo started
        ])
        assert email_counts(conn, store, started.timestamp()) == EmailCounts(sent=2, no_consent=2, other=2)


@pytest.mark.unit
def test_simulated_checkout_box_marks_some_orders_and_leaves_traffic_unchanged() -> None:
    from wooflow.simulator.state import SimulatedStore
    from wooflow.simulator.traffic import ConsentBox, generate

    plain, boxed = SimulatedStore(), SimulatedStore()
    a = generate(plain, 40, seed=9)
    b = generate(boxed, 40, seed=9, consent=ConsentBox(KEY, "yes", 0.5))
    assert a.totals == b.totals and a.final_statuses == b.final_statuses  # same shop, same shoppers
    ticked = [o for o in boxed.orders.values() if any(m.key == KEY and m.value == "yes" for m in o.meta_data)]
    assert len(ticked) == b.consented_orders and 0 < len(ticked) < 40
    assert a.consented_orders == 0
    assert not any(m.key == KEY for o in plain.orders.values() for m in o.meta_data)


@pytest.mark.integration
def test_demo_forgets_its_previous_store_and_runs_without_aiosmtpd(engine, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from wooflow.demo import DEMO_STORE, _reset_store, _smtp_server

    other = make_store(engine)
    upsert_store(engine, Store(id=DEMO_STORE, url="http://127.0.0.1:1", webhook_secret="s"))
    for store_id in (DEMO_STORE, other.id):
        record(engine, store_id, granted=True, email="x@example.com", source="import")
    _reset_store(engine)
    with engine.connect() as conn:
        left = dict(conn.execute(text("SELECT store_id, count(*) FROM consents WHERE store_id IN (:a, :b) "
                                      "GROUP BY store_id"), {"a": DEMO_STORE, "b": other.id}).all())
    assert left == {other.id: 1}
    monkeypatch.setitem(sys.modules, "aiosmtpd.controller", None)  # as if the dev extra were not installed
    with ExitStack() as stack:
        assert _smtp_server(stack) is None
