"""The tracking links against the API on a real port and a real PostgreSQL: an open and a
click are recorded once each; a link that was not in the message, a tampered, malformed
or expired token get a clear 4xx and record nothing; a burst from one address is
rate-limited while other addresses go on; a marketing email sent by a real worker to a
real SMTP server carries links that work."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, text

from tests.harness import ApiThread
from tests.support import make_store, read_topic, unique, wait_for
from wooflow import engagement
from wooflow.settings import Settings
from wooflow.stores import Store, StoreCache, upsert_store
from wooflow.workers.testing import WorkerThread, command, produce

pytestmark = pytest.mark.integration
HUMAN = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"}


@dataclass
class Tracked:
    api: ApiThread
    store: Store
    key: bytes
    engine: Engine

    def message(self, *, expires_in: int = 86_400, customer: str = "c7") -> engagement.Message:
        now = int(time.time())
        return engagement.Message(self.store.id, unique("m"), customer, 3, 0, now, now + expires_in)

    def open(self, token: str, **headers: str) -> httpx.Response:
        return httpx.get(f"{self.api.url}/t/o/{token}.gif", headers={**HUMAN, **headers}, timeout=10)

    def click(self, token: str, url: str, **headers: str) -> httpx.Response:
        return httpx.get(f"{self.api.url}/t/c/{token}?u={quote(url, safe='')}", headers={**HUMAN, **headers},
                         timeout=10)

    def rows(self, message_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(text("SELECT * FROM engagements WHERE message_id = :m "
                                                       "ORDER BY kind, link"), {"m": message_id}).mappings()]


@pytest.fixture
def tracked(settings: Settings, engine: Engine) -> Iterator[Tracked]:
    store = StoreCache(engine, ttl=0).get(make_store(engine).id)
    assert store is not None
    # a burst of 20 from one address, then one hit every 10 s
    s = settings.model_copy(update={"tracking_rate_per_s": 0.1, "tracking_burst": 20})
    with ApiThread(s) as api:
        yield Tracked(api, store, engagement.signing_key(s, store.link_key), engine)


def test_an_open_and_a_click_are_recorded_once_each(tracked: Tracked) -> None:
    m = tracked.message()
    pixel = engagement.sign(tracked.key, m)
    url = "https://shop.example/produkt/żółw?utm_source=wooflow&x=a+b"
    link = engagement.sign(tracked.key, m, 2, url)
    for _ in range(3):
        r = tracked.open(pixel, **{"X-Forwarded-For": "198.51.100.1"})
        assert r.status_code == 200 and r.headers["content-type"] == "image/gif" and r.content.startswith(b"GIF89a")
        assert "no-store" in r.headers["cache-control"]
        r = tracked.click(link, url, **{"X-Forwarded-For": "198.51.100.1"})
        assert r.status_code == 302 and r.headers["location"] == \
            "https://shop.example/produkt/%C5%BC%C3%B3%C5%82w?utm_source=wooflow&x=a+b"
    rows = tracked.rows(m.message_id)
    assert [(r["kind"], r["link"], r["machine"]) for r in rows] == [("click", 2, False), ("open", -1, False)]
    assert {(r["store_id"], r["rule_id"], r["step"], r["customer_key"]) for r in rows} == {(m.store_id, 3, 0, "c7")}
    # a scanner's hit is kept apart: it never hides a person's
    assert tracked.open(pixel, **{"User-Agent": "Mozilla/5.0 (compatible; Barracuda Sentinel)"}).status_code == 200
    assert [(r["kind"], r["machine"]) for r in tracked.rows(m.message_id)] == [
        ("click", False), ("open", False), ("open", True)]


def test_refused_links_answer_4xx_and_record_nothing(tracked: Tracked) -> None:
    m = tracked.message()
    url = "https://shop.example/sale"
    link = engagement.sign(tracked.key, m, 0, url)
    pixel = engagement.sign(tracked.key, m)

    def refused(r: httpx.Response, status: int, error: str) -> None:
        assert r.status_code == status, r.text
        if r.headers["content-type"].startswith("application/json"):
            assert r.json()["error"] == error and r.json()["message"]

    # a URL that was not in the message: never an open redirect
    refused(tracked.click(link, "https://evil.example/phish"), 404, "link_not_in_message")
    refused(tracked.click(link, url + "?"), 404, "link_not_in_message")
    refused(tracked.click(pixel, url), 404, "link_not_in_message")  # the pixel's token is no link
    r = httpx.get(f"{tracked.api.url}/t/o/{link}.gif", timeout=10)
    refused(r, 404, "link_not_in_message")
    # tampered: another message's payload under this mac, a flipped mac character, another key
    other = engagement.sign(tracked.key, tracked.message(customer="c8"), 0, url)
    refused(tracked.click(f"{other.split('.')[0]}.{link.split('.')[1]}", url), 403, "bad_signature")
    mac = link.split(".")[1]
    refused(tracked.click(f"{link.split('.')[0]}.{'B' if mac[0] == 'A' else 'A'}{mac[1:]}", url), 403,
            "bad_signature")
    refused(tracked.click(engagement.sign(b"k" * 32, m, 0, url), url), 403, "bad_signature")
    # malformed
    refused(tracked.click("not-a-token", url), 400, "malformed")
    refused(tracked.open("e30.e30"), 400, "malformed")
    # expired: a page that shows where the link pointed, no redirect
    old = tracked.message(expires_in=-5)
    r = tracked.click(engagement.sign(tracked.key, old, 0, url), url)
    assert r.status_code == 410 and "expired" in r.text and url in r.text and "location" not in r.headers
    refused(tracked.open(engagement.sign(tracked.key, old)), 410, "expired")
    refused(httpx.post(f"{tracked.api.url}/t/o/{pixel}.gif", timeout=10), 405, "method_not_allowed")
    assert tracked.rows(m.message_id) == [] and tracked.rows(old.message_id) == []
    # the genuine link still works
    assert tracked.click(link, url).status_code == 302 and len(tracked.rows(m.message_id)) == 1


def test_a_burst_from_one_address_is_rate_limited_others_go_on(tracked: Tracked) -> None:
    m = tracked.message()
    links = [engagement.sign(tracked.key, m, i, f"https://shop.example/p/{i}") for i in range(40)]
    started = time.monotonic()
    answers = [tracked.click(tok, f"https://shop.example/p/{i}", **{"X-Forwarded-For": "203.0.113.50"})
               for i, tok in enumerate(links)]
    refills = int((time.monotonic() - started) * 0.1) + 1  # tokens the bucket can have gained meanwhile
    statuses = [r.status_code for r in answers]
    assert statuses[:20] == [302] * 20, statuses  # the burst
    assert statuses.count(429) >= 20 - refills, statuses
    assert all(r.headers["retry-after"] == "1" and r.json()["error"] == "rate_limited"
               for r in answers if r.status_code == 429)
    r = tracked.click(links[-1], "https://shop.example/p/39", **{"X-Forwarded-For": "203.0.113.51"})
    assert r.status_code == 302, "another address is not limited"
    # every redirect was recorded, no refused hit was
    recorded = {r["link"] for r in tracked.rows(m.message_id)}
    assert recorded == {i for i, st in enumerate(statuses) if st == 302} | {39}


def test_with_a_tracking_secret_only_its_tokens_count(settings: Settings, engine: Engine) -> None:
    store = StoreCache(engine, ttl=0).get(make_store(engine).id)
    assert store is not None
    s = settings.model_copy(update={"tracking_secret": SecretStr("rotated-into-settings")})
    now = int(time.time())
    m = engagement.Message(store.id, unique("m"), "c1", 1, 0, now, now + 60)
    with ApiThread(s) as api:
        own = engagement.sign(engagement.signing_key(settings, store.link_key), m)
        assert httpx.get(f"{api.url}/t/o/{own}.gif", timeout=10).status_code == 403
        good = engagement.sign(engagement.signing_key(s, ""), m)
        assert httpx.get(f"{api.url}/t/o/{good}.gif", headers=HUMAN, timeout=10).status_code == 200


def test_a_marketing_email_carries_working_links_and_its_message_is_recorded(  # type: ignore[no-untyped-def]
        settings, engine, inbox) -> None:
    with ApiThread(settings) as api:
        s = settings.model_copy(update={"public_base_url": api.url})
        api.app.state.settings = s
        store = Store(id=unique("store"), url="http://127.0.0.1:1", webhook_secret="whs", name="Shop",
                      settings={"smtp": inbox.smtp_settings("shop@example.com"), "consent": {"policy": "opt_out"}})
        upsert_store(engine, store)
        ctx = {"order": {"id": 5, "number": "1005", "billing": {"email": "fan@example.com"}, "customer_id": 3}}
        news = command(store_id=store.id, action_type="send_email", customer_key="c3", rule_id=9, context=ctx,
                       params={"subject": "Sale", "marketing": True,
                               "html": "<p><a href='https://shop.example/sale?a=1&amp;b=2'>Sale</a></p>"})
        receipt = command(store_id=store.id, action_type="send_email", customer_key="c3", rule_id=9, context=ctx,
                          params={"subject": "Receipt", "html": "<p><a href='https://shop.example/o/5'>Order</a></p>"})
        produce(s, [news, receipt])
        with WorkerThread(s):
            got = wait_for(lambda: len(inbox.to("fan@example.com")) == 2 and inbox.to("fan@example.com"), 60, 0.2,
                           "the two emails")
        by_subject = {m["Subject"]: m for m in got}
        body = by_subject["Sale"].get_body(preferencelist=("html",)).get_content()
        receipt_body = by_subject["Receipt"].get_body(preferencelist=("html",)).get_content()
        assert "/t/" not in receipt_body and "https://shop.example/o/5" in receipt_body  # transactional: untracked
        click = re.search(r"href='([^']+/t/c/[^']+)'", body)
        pixel = re.search(r'src="([^"]+/t/o/[^"]+)"', body)
        assert click is not None and pixel is not None, body
        unsubscribe = by_subject["Sale"]["List-Unsubscribe"].strip("<>")
        assert unsubscribe in body, "the unsubscribe link is not rewritten"
        r = httpx.get(click.group(1).replace("&amp;", "&"), headers=HUMAN, timeout=10)
        assert r.status_code == 302 and r.headers["location"] == "https://shop.example/sale?a=1&b=2"
        assert httpx.get(pixel.group(1), headers=HUMAN, timeout=10).status_code == 200
        with engine.connect() as conn:
            msg = conn.execute(text("SELECT * FROM messages WHERE store_id = :s"), {"s": store.id}).mappings().all()
            hits = conn.execute(text("SELECT kind, link FROM engagements WHERE store_id = :s ORDER BY kind"),
                                {"s": store.id}).all()
        assert [(m["message_id"], m["rule_id"], m["customer_key"], m["links"]) for m in msg] == [
            (news["idempotency_key"], 9, "c3", ["https://shop.example/sale?a=1&b=2"])]
        assert [tuple(h) for h in hits] == [("click", 0), ("open", -1)]
        logs = {r["idempotency_key"]: r for _, r in read_topic(s, "automation.logs")}
        assert '"tracked": true' in logs[news["idempotency_key"]]["details_json"]
