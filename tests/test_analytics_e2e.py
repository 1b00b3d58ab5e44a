"""Analytics end to end: a simulated store, the bridge, the rule consumer, a worker, the log
sink and the scheduler as processes on the real broker and PostgreSQL, the admin API on a
port, a real SMTP server, and a workflow clock the test moves by days.

A first purchase sends a marketing email. Fetching its pixel and one of its links records
an open and a click (a link that was not in the message records nothing); an order a day
later is credited to the message with its revenue, one placed after the window is not, a
partial refund reduces the credited revenue, and replaying the order topic through the
scheduler's activity reader changes nothing."""

from __future__ import annotations

import html
import re
from contextlib import ExitStack
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
from sqlalchemy import Engine

from tests.harness import bearer
from tests.pipeline import add_rule
from tests.support import env_of, wait_for, wait_until_consumed, wooflow_cli
from tests.test_workflows_e2e import Workflows
from wooflow.kafka import topics
from wooflow.settings import Settings

pytestmark = pytest.mark.e2e
ADDR = "ala@example.com"
BROWSER = {"User-Agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5 Safari"}
THANKS = {"name": "Thank-you with offers", "trigger": "first_purchase",
          "actions": [{"type": "send_email", "params": {
              "subject": "Thanks, {{ customer.first_name }}", "marketing": True,
              "html": "<html><body><p>New in: <a href=\"{{ store.url }}/product/mug?utm_source=wooflow&amp;c=1\">"
                      "the mug</a> and <a href='https://blog.example/tips'>tips</a>.</p></body></html>"}}]}


def summary(w: Workflows, token: dict[str, str]) -> dict[str, Any]:
    r = httpx.get(f"{w.api.url}/v1/analytics/summary", headers=token, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_opens_clicks_and_an_order_credited_to_the_email_refunds_and_replays(  # type: ignore[no-untyped-def]
        settings: Settings, engine: Engine, logs_dir: Path) -> None:
    with ExitStack() as stack:
        w = Workflows(settings, engine, logs_dir, stack,
                      store_settings={"consent": {"policy": "opt_out"}, "analytics": {"window_days": 7}})
        rule_id = add_rule(engine, w.store.id, THANKS)
        w.start()
        token = bearer(engine, w.store.id)
        try:
            product = w.sim.store.create_product("Mug", "49.00")

            def order(total_qty: int = 1) -> Any:
                return w.sim.store.create_order(line_items=[{"product_id": product.id, "quantity": total_qty}],
                                                billing={"email": ADDR, "first_name": "Ala", "country": "PL"},
                                                status="processing")

            order()  # the first purchase: the email goes out
            mail = wait_for(lambda: w.inbox.to(ADDR), 90, 0.2, "the thank-you email")[0]
            body = mail.get_body(preferencelist=("html",)).get_content()
            pixel = re.search(r'<img src="([^"]+/t/o/[^"]+)"', body)
            links = [html.unescape(u) for u in re.findall(r'href="([^"]+/t/c/[^"]+)"', body)]
            links += [html.unescape(u) for u in re.findall(r"href='([^']+/t/c/[^']+)'", body)]
            assert pixel is not None and len(links) == 2, body
            mug = f"{w.sim.url}/product/mug?utm_source=wooflow&c=1"

            # the pixel and a link, fetched as a mail client and a person would
            assert httpx.get(html.unescape(pixel.group(1)), headers=BROWSER, timeout=10).status_code == 200
            click = httpx.get(links[0], headers=BROWSER, timeout=10)
            assert click.status_code == 302 and click.headers["location"] == mug
            forged = links[0].split("?u=")[0] + "?u=" + quote("https://evil.example/", safe="")
            assert httpx.get(forged, headers=BROWSER, timeout=10).status_code == 404
            hits = w.query("SELECT kind, link, machine FROM engagements WHERE store_id = :s ORDER BY kind")
            assert [(h["kind"], h["link"], h["machine"]) for h in hits] == [("click", 0, False), ("open", -1, False)]
            assert urlsplit(links[1]).path.startswith("/t/c/")

            # a day later she orders again: credited to the email, with the order's total
            w.at(timedelta(days=1))
            inside = order(2)
            w.at(timedelta(days=2))
            w.sim.store.refund_order(inside.id, "30.00", "one mug broke")
            # eleven days after the click: outside the 7-day window
            w.at(timedelta(days=11))
            outside = order(3)
            # processed: the refund (on the credited row) and the late order (the customer's calendar)
            wait_for(lambda: w.query("SELECT 1 FROM message_conversions WHERE store_id = :s AND refunded > 0"), 90,
                     0.2, "the refund on the credited order")
            wait_for(lambda: w.query("SELECT 1 FROM customer_calendar WHERE store_id = :s AND last_order_id = :o",
                                     o=outside.id), 90, 0.2, "the late order through the activity reader")
            credited = w.query("SELECT * FROM message_conversions WHERE store_id = :s")
            assert [(c["order_id"], c["rule_id"], c["touch"], c["revenue"], c["refunded"]) for c in credited] == [
                (inside.id, rule_id, "click", Decimal(inside.total), Decimal(30))]
            assert outside.id not in {c["order_id"] for c in credited}

            got = summary(w, token)
            ours = next(r for r in got["rules"] if r["rule_id"] == rule_id)
            assert (ours["sends"], ours["opened"], ours["clicked"], ours["conversions"]) == (1, 1, 1, 1)
            assert Decimal(ours["revenue"]["PLN"]) == Decimal(inside.total) - 30
            assert Decimal(ours["refunded"]["PLN"]) == Decimal(30)

            # a replay of the order topic through the activity reader changes nothing
            w.roles["scheduler"].stop()
            env = env_of(w.settings, WOOFLOW_TOPIC_PREFIX=w.settings.topic_prefix)
            reset = wait_for(lambda: (r := wooflow_cli("offsets", "reset", "--group", w.scheduler_group, "--topic",
                                                       topics.ORDERS, "--to-datetime", "6h", "--execute",
                                                       env=env)).returncode == 0 and r, 60, 1,
                             "the offsets reset (refused while the stopped scheduler is still a member)")
            assert "reset" in reset.stdout
            w.roles["scheduler"].start()
            wait_until_consumed(w.settings, w.scheduler_group, (topics.ORDERS,), timeout=120)
            assert w.query("SELECT * FROM message_conversions WHERE store_id = :s") == credited
            assert summary(w, token)["rules"] == got["rules"]
        except AssertionError:
            print(w.role_logs())
            raise
