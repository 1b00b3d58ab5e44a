"""send_email through a real worker to a real SMTP server (aiosmtpd): both MIME parts, the
subject, consent for marketing, unsubscribe link + List-Unsubscribe headers, the public
unsubscribe route recording the withdrawal, and template errors / sandbox escapes ending
as clear failed logs (and dead letters), never a crash."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.harness import ApiThread, bearer
from tests.support import read_topic, unique, wait_for
from wooflow.stores import Store, upsert_store
from wooflow.workers import consent
from wooflow.workers.testing import WorkerThread, command, produce

pytestmark = pytest.mark.integration


def final_logs(settings: Any) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for _, rec in read_topic(settings, "automation.logs"):
        if rec["status"] != "retrying":
            out[rec["idempotency_key"]] = rec
    return out


def test_emails_parts_consent_unsubscribe_and_template_errors(settings, engine, inbox) -> None:  # type: ignore[no-untyped-def]
    with ApiThread(settings) as api:
        s = settings.model_copy(update={"public_base_url": api.url})
        api.app.state.settings = s
        store = Store(id=unique("store"), url="http://127.0.0.1:1", webhook_secret="whs", name="Ala's Shop",
                      settings={"smtp": inbox.smtp_settings("shop@example.com")})
        upsert_store(engine, store)
        consent.record(engine, store.id, granted=True, email="Fan@Example.com", source="checkout")
        ctx = {"order": {"id": 5, "number": "1005", "total": "99.50",
                         "billing": {"email": "fan@example.com", "first_name": "Ala"}, "customer_id": 3}}

        def mail(to_key: str, **params: Any) -> dict[str, Any]:
            return command(store_id=store.id, action_type="send_email", customer_key=to_key, params=params,
                           context=ctx, rule_id=9)

        receipt = mail("c3", subject="Order {{ order.number }} confirmed", text="Thanks {{ customer.first_name }}!",
                       html="<p>Thanks <b>{{ customer.first_name }}</b> &amp; co</p>")
        newsletter = mail("c3b", subject="News for {{ customer.first_name }}", marketing=True,
                          html="<h1>Hello</h1><p>Sale! <a href='{{ unsubscribe_url }}'>unsubscribe</a></p>")
        no_consent = mail("c4", to="stranger@example.com", subject="News", marketing=True, html="<p>Sale</p>")
        bad_template = mail("c5", subject="Order {{ order.nope.deeper }}", text="x")
        escape = mail("c6", subject="hi", html="{{ ''.__class__.__mro__[1].__subclasses__() }}")
        produce(s, [receipt, newsletter, no_consent, bad_template, escape])
        with WorkerThread(s):
            keys = [c["idempotency_key"] for c in (receipt, newsletter, no_consent, bad_template, escape)]
            logs = wait_for(lambda: (f := final_logs(s)) and all(k in f for k in keys) and f, 60, 0.3,
                            "final logs of the five emails")

            # 1. a transactional email: subject, text and HTML parts
            assert logs[receipt["idempotency_key"]]["status"] == "succeeded"
            got = wait_for(lambda: inbox.to("fan@example.com"), 10, 0.1, "the emails")
            assert all(m["To"] == "fan@example.com" for m in got), "the address as the order has it"
            by_subject = {m["Subject"]: m for m in got}
            m = by_subject["Order 1005 confirmed"]
            sender = m["From"].addresses[0]
            assert (sender.display_name, sender.addr_spec) == ("Ala's Shop", "shop@example.com"), m["From"]
            assert m.get_content_type() == "multipart/alternative"
            parts = {p.get_content_type(): p.get_content() for p in m.iter_parts()}
            assert parts["text/plain"].strip() == "Thanks Ala!"
            assert "<b>Ala</b>" in parts["text/html"]
            assert m["List-Unsubscribe"] is None, "no unsubscribe on transactional mail"

            # 2. a marketing email with consent: unsubscribe link + RFC 8058 headers
            n = by_subject["News for Ala"]
            link = n["List-Unsubscribe"].strip("<>")
            assert link.startswith(f"{api.url}/unsubscribe/")
            assert n["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            nparts = {p.get_content_type(): p.get_content() for p in n.iter_parts()}
            assert link in nparts["text/html"] and link in nparts["text/plain"]

            # 3. no consent: skipped, logged with the reason, nothing sent
            skipped = logs[no_consent["idempotency_key"]]
            assert skipped["status"] == "skipped"
            assert "no email marketing consent on record for stranger@example.com" in skipped["message"]
            assert inbox.to("stranger@example.com") == []

            # 4./5. template error and sandbox escape: failed with a clear message, worker alive
            bad = logs[bad_template["idempotency_key"]]
            assert bad["status"] == "failed" and "template error" in bad["message"] and "nope" in bad["message"]
            esc = logs[escape["idempotency_key"]]
            assert esc["status"] == "failed" and "sandbox" in esc["message"]
            dlq = {rec["error"][:40]: rec["reason"] for _, rec in read_topic(s, "automation.dlq")}
            assert sorted(dlq.values()) == ["action_error", "action_error"]

            # the unsubscribe link: GET shows a confirmation (no change), POST (one-click) withdraws
            page = httpx.get(link, timeout=10)
            assert page.status_code == 200 and "fan@example.com" in page.text
            assert consent.TableConsentChecker(s, engine).check(
                store.id, "email", email="fan@example.com", customer_key=None, context={}).granted
            one_click = httpx.post(link, content=b"List-Unsubscribe=One-Click",
                                   headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=10)
            assert one_click.status_code == 200 and "unsubscribed" in one_click.text
            tampered = link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB")
            assert httpx.post(tampered, timeout=10).status_code == 404

            # the next marketing email to the same customer is skipped: consent withdrawn
            again = mail("c3c", subject="More news", marketing=True, html="<p>more</p>")
            produce(s, [again])
            rec = wait_for(lambda: final_logs(s).get(again["idempotency_key"]), 30, 0.3, "the last email's log")
            assert rec["status"] == "skipped" and "withdrew" in rec["message"] and "unsubscribe_link" in rec["message"]
            assert len(inbox.to("fan@example.com")) == 2


def test_consent_api_records_and_lists(settings, engine) -> None:  # type: ignore[no-untyped-def]
    from tests.support import make_store

    store = make_store(engine)
    h = bearer(engine, store.id)
    with ApiThread(settings) as api:
        r = httpx.post(f"{api.url}/v1/consents", json={"email": "A@B.pl", "granted": True, "source": "checkout"},
                       headers=h, timeout=10)
        assert r.status_code == 201, r.text
        assert httpx.post(f"{api.url}/v1/consents", json={"granted": True}, headers=h, timeout=10).status_code == 422
        listed = httpx.get(f"{api.url}/v1/consents", params={"email": "a@b.pl"}, headers=h, timeout=10).json()
        assert [(c["email"], c["granted"], c["source"]) for c in listed] == [("a@b.pl", True, "checkout")]
    decision = consent.TableConsentChecker(settings, engine).check(store.id, "email", email="a@b.pl",
                                                                   customer_key=None, context={})
    assert decision.granted and "checkout" in decision.reason
    # a withdrawal through the API wins over the earlier consent; both stay in the history
    with ApiThread(settings) as api:
        r = httpx.post(f"{api.url}/v1/consents", json={"email": "a@b.pl", "granted": False, "source": "phone call"},
                       headers=h, timeout=10)
        assert r.status_code == 201, r.text
        listed = httpx.get(f"{api.url}/v1/consents", params={"email": "A@B.PL"}, headers=h, timeout=10).json()
        other = httpx.get(f"{api.url}/v1/consents", params={"email": "a@b.pl"}, timeout=10,
                          headers=bearer(engine, make_store(engine).id))
    assert sorted((c["granted"], c["source"]) for c in listed) == [(False, "phone call"), (True, "checkout")]
    assert other.status_code == 200 and other.json() == [], "another store sees none of it"
    withdrawn = consent.TableConsentChecker(settings, engine).check(store.id, "email", email="a@b.pl",
                                                                    customer_key=None, context={})
    assert not withdrawn.granted and "withdrew" in withdrawn.reason
