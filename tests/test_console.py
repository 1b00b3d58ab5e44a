"""The web console in a real headless Chromium (tests/browser.py) against the admin API on
a loopback port: field errors from the API's 422 next to their inputs, a dry run's
rendered email, one store's token seeing nothing of another's, a dead letter redriven
once however often the button is pressed — and, end to end, a rule built in the console
running on a simulated store's order and showing up in the console's log view.

Each test saves a screenshot of the pages it visits under docs/console/ and asserts that
the browser reported no console error (beyond the HTTP statuses the test provoked)."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import TopicPartition
from sqlalchemy import Engine, delete, insert, select

from tests.browser import NARROW, Console, chromium
from tests.harness import ApiThread
from tests.pipeline import Pipeline, add_rule
from tests.rules_kit import SCHEMA_TOPIC, ConsumerThread, EventProducer, order_event, product_event
from tests.support import make_sim_store, make_store, unique, wait_for, wait_until_consumed, wait_until_pipeline_idle
from tests.test_analytics_api import DAY1, DAY2, seed
from tests.test_analytics_api import RULE as ANALYTICS_RULE
from tests.test_analytics_api import log as log_record
from tests.test_workflows_v2 import T0, start_runs
from wooflow.api.auth import create_token, hash_token
from wooflow.db.tables import api_tokens, execution_logs, holdout_exposures, message_conversions, rules
from wooflow.dlq import encode, record_of_unsent
from wooflow.kafka import topics
from wooflow.kafka.consumer import make_reader
from wooflow.kafka.producer import Producer
from wooflow.schemas.codec import get_codec
from wooflow.settings import Settings
from wooflow.simulator.server import SimulatorServer
from wooflow.sink.runner import LogSink
from wooflow.workers.testing import RoleThread


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture
def api(settings: Settings) -> Iterator[ApiThread]:
    server = ApiThread(settings)
    with server:
        yield server


def log_rows(engine: Engine, store_id: str, rule_id: int, n: int, status: str = "succeeded") -> list[str]:
    now = datetime.now(timezone.utc)
    rows = [{"log_id": unique("log"), "idempotency_key": unique("k"), "store_id": store_id,
             "customer_key": f"c{i}", "rule_id": rule_id, "event_id": unique("e"), "step": 0,
             "action_type": "add_order_note", "status": status, "message": f"note on order {i} of {store_id}",
             "executed_at": now - timedelta(minutes=i)} for i in range(n)]
    with engine.begin() as conn:
        conn.execute(insert(execution_logs), rows)
    return [str(r["log_id"]) for r in rows]


def rule_state(engine: Engine, rule_id: int) -> tuple[bool, int]:
    with engine.connect() as conn:
        row = conn.execute(select(rules.c.enabled, rules.c.version).where(rules.c.id == rule_id)).one()
    return bool(row.enabled), int(row.version)


def _read_by_the_rule_consumer(settings: Settings, schema: str, events: list[dict[str, Any]]) -> None:
    """The events on their topic as the bridge puts them there, and a rule consumer run until
    it has processed them all (what it records of them is then in PostgreSQL)."""
    producer = EventProducer(settings)
    for event in events:
        producer.send(schema, event)
    producer.flush()
    with ConsumerThread(settings):
        wait_until_consumed(settings, settings.rules_group, [SCHEMA_TOPIC[schema]])


NOTE_RULE = {"name": "Note on orders", "trigger": "new_order",
             "actions": [{"type": "add_order_note", "params": {"note": "hello"}}]}


# ---- served as a page of the API ------------------------------------------------------------

@pytest.mark.integration
def test_the_console_is_served_at_the_root_with_a_content_security_policy(api: ApiThread) -> None:
    page = httpx.get(f"{api.url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = dict(d.strip().split(" ", 1) for d in page.headers["content-security-policy"].split(";"))
    # one script, inline, allowed by its hash; and the chart library the analytics page
    # fetches, allowed by its own: nothing else
    script = page.text.split("<script>", 1)[1].split("</script>", 1)[0]
    charts = httpx.get(f"{api.url}/console/vendor/uPlot.iife.min.js")
    assert charts.status_code == 200 and charts.headers["content-type"].startswith("text/javascript")
    assert csp["script-src"].split() == [_sha256(script), _sha256(charts.text)] and page.text.count("<script") == 1
    assert csp["default-src"] == "'none'" and csp["frame-ancestors"] == "'none'"
    assert page.headers["x-content-type-options"] == "nosniff"
    for code in (script, charts.text):
        assert "innerHTML" not in code and "eval(" not in code  # API values only ever become text
    assert ".uplot" in page.text  # the library's stylesheet, inline
    again = httpx.get(f"{api.url}/", headers={"If-None-Match": page.headers["etag"]})
    assert again.status_code == 304
    assert httpx.get(f"{api.url}/console/vendor/uPlot.iife.min.js",
                     headers={"If-None-Match": charts.headers["etag"]}).status_code == 304
    for other in ("console/console.js", "console/vendor/uPlot.min.css", "console/vendor/uPlot.LICENSE"):
        assert httpx.get(f"{api.url}/{other}").status_code == 404  # nothing else is served


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# ---- in the browser --------------------------------------------------------------------------

@pytest.mark.integration
def test_an_invalid_rule_shows_each_api_error_next_to_its_field(browser: Any, api: ApiThread, engine: Engine) -> None:
    store = make_store(engine)
    with Console(browser, api.url) as c:
        c.sign_in(create_token(engine, store.id, "console"))
        c.open("#/rules/new", ready="rule")
        p = c.page
        p.get_by_label("Name").fill("Broken rule")
        # a nested group whose condition has an empty list, and a delay nobody can parse
        p.get_by_role("button", name="Add group").click()
        c.condition("conditions.conditions[0].conditions[0]", "billing_country", "in")
        p.locator("[data-path='actions[0].delay']").fill("the day after tomorrow")
        p.locator("[data-path='actions[0].params.note']").fill("a note")
        p.get_by_role("button", name="Create rule").click()
        p.wait_for_selector(".error-summary")

        value_path = "conditions.conditions[0].conditions[0].value"
        value_error = p.locator(f".field-error[data-error-for='{value_path}']")
        assert value_error.inner_text() == "in needs a non-empty value"
        # next to the field: the message follows the condition row holding the input, which is marked invalid
        row = p.locator(".cond[data-cond='conditions.conditions[0].conditions[0]']")
        assert row.evaluate("r => r.nextElementSibling.dataset.errorFor") == value_path
        value_input = p.locator(f"[data-path='{value_path}']")
        assert value_input.get_attribute("aria-invalid") == "true"
        assert value_input.get_attribute("aria-describedby") == value_error.get_attribute("id")
        delay_error = p.locator(".field-error[data-error-for='actions[0].delay']")
        assert "the day after tomorrow" in delay_error.inner_text()
        assert p.locator("[data-path='actions[0].delay']").evaluate(
            "i => i.closest('.field').nextElementSibling.dataset.errorFor") == "actions[0].delay"
        assert "2 problems" in p.locator(".error-summary").inner_text()
        c.shoot("rule-editor-errors")

        # fixed, the same form saves, and the errors are gone
        p.locator(f"[data-path='{value_path}']").select_option(["PL", "DE"])  # countries, offered by name
        p.locator("[data-path='actions[0].delay']").fill("day 1")
        p.get_by_role("button", name="Create rule").click()
        c.wait_ready("rule")
        p.wait_for_selector("text=Saved: version 1.")
        assert p.locator(".field-error").count() == 0
        c.assert_clean(expected_http=(422,))


@pytest.mark.integration
def test_a_dry_run_picked_through_search_shows_the_rendered_email(browser: Any, api: ApiThread, settings: Settings,
                                                                  engine: Engine) -> None:
    with SimulatorServer(seed=11) as sim:
        store = make_sim_store(engine, sim)
        product = sim.store.create_product("Teapot", "80.00")
        order = sim.store.create_order(line_items=[{"product_id": product.id, "quantity": 1}], status="processing",
                                       billing={"email": "ala@example.com", "first_name": "Ala", "country": "PL"})
        rule_id = add_rule(engine, store.id, {
            "name": "Thank-you email", "trigger": "new_order",
            "conditions": {"match": "all", "conditions": [{"field": "billing_country", "operator": "equals",
                                                           "value": "PL"}]},
            "actions": [{"type": "send_email", "params": {
                "subject": "Thanks, {{ order.billing.first_name }}!",
                "html": '<h1 style="color:#2f5ea8">Thank you, {{ order.billing.first_name }}</h1>'
                        "<p>Order {{ order.number }} is on its way.</p>"}}]})
        # the rule consumer reads the order's event and records it: what the search finds
        _read_by_the_rule_consumer(settings, "OrderEvent", [
            order_event(store.id, order.id, email="ala@example.com", total="80.00")])
        with Console(browser, api.url) as c:
            c.sign_in(create_token(engine, store.id, "console"))
            c.open("#/dry-run", ready="dry-run")
            p = c.page
            assert p.get_by_label("Rule").input_value() == str(rule_id)
            p.wait_for_selector(f".choice[data-subject='order_id:{order.id}']")  # the newest orders, at once
            search = p.get_by_label("Find an order or customer")
            search.fill("nobody@example.com")
            p.wait_for_selector("fieldset.found[data-query='nobody@example.com']")
            assert "Nothing found" in p.locator("fieldset.found").inner_text()
            p.get_by_role("button", name="Run dry run").click()  # nothing picked: said next to the search
            assert "pick one" in p.locator(".field-error[data-error-for='subject']").inner_text()
            search.fill("ALA@example.com")
            search.press("Enter")
            p.wait_for_selector("fieldset.found[data-query='ALA@example.com']")
            choices = p.locator("fieldset.found .choice")
            assert choices.count() == 1 and f"Order #{order.id}" in choices.first.inner_text()
            # by keyboard: from the Search button, Tab to the choice, Space picks it, Enter runs
            p.get_by_role("button", name="Search").focus()
            p.keyboard.press("Tab")
            p.keyboard.press("Space")
            assert choices.first.get_by_role("radio").is_checked()
            p.keyboard.press("Enter")
            p.wait_for_selector(".dry-result[data-done]")
            assert p.locator(".email-preview .subject").inner_text() == "Thanks, Ala!"
            frame = p.frame_locator("iframe.email")
            assert frame.locator("h1").inner_text() == "Thank you, Ala"
            assert f"Order {order.id} is on its way." in frame.locator("p").inner_text()
            assert p.locator("iframe.email").get_attribute("sandbox") == ""  # no scripts, no same origin
            assert "Thank you, Ala" in p.locator(".email-text").inner_text()
            assert "This rule would run." in p.locator(".dry-result").inner_text()
            assert "billing_country is 'PL'" in p.locator(".verdict").first.inner_text()
            p.locator("iframe.email").scroll_into_view_if_needed()  # a frame out of view is not painted
            c.shoot("dry-run")
            c.assert_clean()


def _named_product(store_id: str, product_id: int, categories: dict[int, str], tags: dict[int, str]) -> dict[str, Any]:
    """A product event as the bridge makes it, with its categories' and tags' names."""
    event = product_event(store_id, product_id, categories=tuple(categories), tags=tuple(tags))
    event["product"]["categories"] = [{"id": i, "name": n, "slug": n.lower()} for i, n in categories.items()]
    event["product"]["tags"] = list(tags.values())
    return event


@pytest.mark.integration
def test_the_category_and_tag_pickers_offer_the_catalogs_names_and_save_their_ids(
        browser: Any, api: ApiThread, settings: Settings, engine: Engine) -> None:
    store, other = make_store(engine), make_store(engine)
    _read_by_the_rule_consumer(settings, "ProductEvent", [  # the stores' products, into their catalogs
        _named_product(store.id, 1, {12: "Teapots", 15: "Kitchen"}, {3: "Gift ideas"}),
        _named_product(store.id, 2, {15: "Kitchen"}, {}),
        _named_product(other.id, 1, {99: "Not ours"}, {98: "Theirs"})])
    with Console(browser, api.url) as c:
        c.sign_in(create_token(engine, store.id, "console"))
        c.open("#/rules/new", ready="rule")
        p = c.page
        p.get_by_label("Name").fill("Teapot buyers")
        for _ in range(3):
            p.locator("[data-group='conditions']").get_by_role("button", name="Add condition").last.click()
        c.condition("conditions.conditions[0]", "category", "in")
        categories = p.locator("[data-path='conditions.conditions[0].value']")
        wait_for(lambda: categories.locator("option").count() == 2, 10, 0.1, "the catalog's categories")
        assert categories.locator("option").all_inner_texts() == ["Kitchen (15)", "Teapots (12)"]
        categories.select_option(label="Teapots (12)")
        c.condition("conditions.conditions[1]", "product_tag", "contains")
        tags = p.locator("[data-path='conditions.conditions[1].value']")
        wait_for(lambda: tags.locator("option").count() == 2, 10, 0.1, "the catalog's tags")
        assert tags.locator("option").all_inner_texts() == ["choose…", "Gift ideas (3)"]
        tags.select_option(label="Gift ideas (3)")
        c.condition("conditions.conditions[2]", "first_order_date", "within_last_days", "30")
        assert p.get_by_label("Value (days)").input_value() == "30"
        p.locator("[data-path='actions[0].params.note']").fill("teapot buyer")
        p.get_by_role("button", name="Create rule").click()
        c.wait_ready("rule")
        p.wait_for_selector("text=Saved: version 1.")
        rule_id = int(c.page.url.rsplit("/", 1)[1])
        with engine.connect() as conn:
            saved = conn.execute(select(rules.c.conditions).where(rules.c.id == rule_id)).scalar_one()
        assert [(x["field"], x["operator"], x["value"]) for x in saved["conditions"]] == [
            ("category", "in", ["12"]), ("product_tag", "contains", "3"), ("first_order_date", "within_last_days", 30)]
        # read back: the names again, the saved ids chosen
        categories = p.locator("[data-path='conditions.conditions[0].value']")
        wait_for(lambda: categories.locator("option").count() == 2, 10, 0.1, "the categories again")
        assert categories.evaluate("s => [...s.selectedOptions].map(o => o.textContent)") == ["Teapots (12)"]
        c.shoot("rule-editor-pickers")
        c.assert_clean()


WORKFLOW = {
    "name": "Welcome, then by engagement", "trigger": "new_order", "goals": [{"type": "ordered"}],
    "holdout_percent": 5, "when_disabled": "finish",
    "actions": [{"type": "send_email", "id": "welcome", "params": {"subject": "Welcome", "html": "<p>Hi</p>"}},
                {"type": "branch", "condition": {"type": "email_opened", "within": "24h"},
                 "yes": {"steps": []},
                 "no": {"steps": [{"type": "send_email", "params": {"subject": "Missed it?", "html": "<p>Hi</p>"}}],
                        "then": "end"}},
                {"type": "create_admin_task", "params": {"title": "Call them"}, "delay": "day 3"}],
}


@pytest.mark.integration
def test_a_workflows_steps_are_edited_as_json_with_errors_on_their_step_and_its_versions_show_their_runs(
        browser: Any, api: ApiThread, engine: Engine) -> None:
    store = make_store(engine)
    rule_id = add_rule(engine, store.id, WORKFLOW)
    start_runs(engine, rule_id, store.id, ["ga", "gb"], T0)  # two runs in flight on version 1
    with Console(browser, api.url) as c:
        c.sign_in(create_token(engine, store.id, "console"))
        c.open(f"#/rules/{rule_id}", ready="rule")
        p = c.page
        # what the form cannot show is the step's JSON: the email with an id, the branch
        branch = p.locator("[data-path='actions[1]']")
        assert json.loads(p.locator("[data-path='actions[0]']").input_value())["id"] == "welcome"
        assert json.loads(branch.input_value())["no"]["then"] == "end"
        assert p.locator("[data-path='actions[2].type']").input_value() == "create_admin_task"  # a plain step: a form
        assert [r.get_attribute("data-version") for r in p.locator("table.versions tbody tr").all()] == ["1"]
        assert p.locator("tr[data-version='1'] td[data-col='runs']").inner_text() == "2"
        assert p.locator("tr[data-version='1'] td[data-col='active']").inner_text() == "2"

        edited = json.loads(branch.input_value())
        edited["no"]["steps"][0]["delay"] = "whenever"
        branch.fill(json.dumps(edited, indent=1))
        p.get_by_role("button", name="Save rule").click()
        error = p.locator(".field-error[data-error-for='actions[1].no.steps[0].delay']")
        error.wait_for()
        assert error.inner_text().startswith("no.steps[0].delay: ")  # the path inside the step
        assert p.locator("fieldset[data-step='1'] .field-error").count() == 1  # on the branch's step, not another
        assert branch.get_attribute("aria-invalid") == "true"
        c.shoot("workflow-editor-errors")

        edited["no"]["steps"][0]["delay"] = "hour 2"
        branch.fill(json.dumps(edited, indent=1))
        p.get_by_role("button", name="Save rule").click()
        p.wait_for_selector("text=Saved: version 2.")
        assert [r.get_attribute("data-version") for r in p.locator("table.versions tbody tr").all()] == ["2", "1"]
        assert "current" in p.locator("tr[data-version='2']").inner_text()
        assert p.locator("tr[data-version='2'] td[data-col='runs']").inner_text() == "0"  # runs stay on theirs
        assert p.locator("tr[data-version='1'] td[data-col='runs']").inner_text() == "2"
        c.shoot("workflow-editor")
        # switched off in the list: only `enabled` changes (goals, holdout, what disabling does kept)
        c.open("#/rules")
        p.get_by_label("Enabled: Welcome, then by engagement").uncheck()
        wait_for(lambda: rule_state(engine, rule_id) == (False, 3), 20, 0.1, "the workflow switched off")
        c.assert_clean(expected_http=(422,))
    with engine.connect() as conn:
        saved = conn.execute(select(rules.c.actions, rules.c.goals, rules.c.holdout_percent, rules.c.when_disabled)
                             .where(rules.c.id == rule_id)).one()
    assert saved.actions[1]["no"]["steps"][0]["delay"] == "hour 2" and saved.actions[0]["id"] == "welcome"
    assert (saved.goals, float(saved.holdout_percent), saved.when_disabled) == ([{"type": "ordered"}], 5.0, "finish")


@pytest.mark.integration
def test_a_revoked_token_is_refused_and_the_console_goes_back_to_sign_in(browser: Any, api: ApiThread,
                                                                        engine: Engine) -> None:
    store = make_store(engine)
    add_rule(engine, store.id, {**NOTE_RULE, "name": "Still here"})
    token = create_token(engine, store.id, "console")
    with Console(browser, api.url) as c:
        c.sign_in(token)
        p = c.page
        assert "Still here" in p.locator("table.rules").inner_text()
        with engine.begin() as conn:  # revoked
            assert conn.execute(delete(api_tokens).where(api_tokens.c.token_hash == hash_token(token))).rowcount == 1
        p.get_by_role("link", name="Execution logs").click()
        c.wait_ready("signin")
        assert "The API refused the token: sign in again." in p.locator("[role='alert']").inner_text()
        assert p.locator("#nav").is_hidden() and p.locator("table.logs").count() == 0
        assert p.evaluate("sessionStorage.getItem('wooflow.console')") is None
        # signing in with it again is refused too
        p.get_by_label("API token").fill(token)
        p.get_by_role("button", name="Sign in").click()
        p.wait_for_selector(".field-error[data-error-for='token']")
        assert "invalid bearer token" in p.locator(".field-error").inner_text()
        c.assert_clean(expected_http=(401,))


@pytest.mark.integration
def test_a_store_token_sees_nothing_of_another_store(browser: Any, api: ApiThread, engine: Engine) -> None:
    a, b = make_store(engine), make_store(engine)
    rule_a = add_rule(engine, a.id, {**NOTE_RULE, "name": "Rule of A"})
    rule_b = add_rule(engine, b.id, {**NOTE_RULE, "name": "Rule of B"})
    logs_a = log_rows(engine, a.id, rule_a, 3)
    logs_b = log_rows(engine, b.id, rule_b, 3, status="failed")
    token_a = create_token(engine, a.id, "console")
    with Console(browser, api.url) as c:
        p = c.page
        p.goto(f"{api.url}/#/signin")
        c.wait_ready("signin")
        # a token the API does not know is refused next to the token field
        p.get_by_label("API token").fill("wf_not-a-token")
        p.get_by_role("button", name="Sign in").click()
        p.wait_for_selector(".field-error[data-error-for='token']")
        assert "invalid bearer token" in p.locator(".field-error").inner_text()
        # A's token naming B's store is refused at sign-in, next to the store field
        p.get_by_label("API token").fill(token_a)
        p.get_by_label("Store id").fill(b.id)
        p.get_by_role("button", name="Sign in").click()
        p.wait_for_selector(".field-error[data-error-for='store']")
        assert "not found" in p.locator(".field-error").inner_text()

        c.sign_in(token_a)
        assert p.locator("table.rules").inner_text().count("Rule of A") == 1
        assert "Rule of B" not in p.locator("main").inner_text()
        # switched off in the list: the rule is saved disabled, its version one up
        p.get_by_label("Enabled: Rule of A").uncheck()
        wait_for(lambda: rule_state(engine, rule_a) == (False, 2), 20, 0.1, "rule A switched off")
        c.open(f"#/rules/{rule_b}", ready="rule")
        assert f"rule {rule_b} not found" in p.locator("main").inner_text()
        c.open("#/logs")
        text = p.locator("main").inner_text()
        assert all(f"of {a.id}" in text for _ in logs_a) and text.count(f"of {a.id}") == 3
        assert b.id not in text and "failed" not in p.locator("table.logs").inner_text()
        c.open(f"#/logs/{logs_b[0]}", ready="log")
        assert "not found" in p.locator("main").inner_text()
        c.open(f"#/logs?rule_id={rule_b}")
        assert "No entries match." in p.locator("main").inner_text()
        c.open("#/analytics")
        per_rule = p.locator("table.analytics-rules").inner_text()
        assert "Rule of A" in per_rule and "Rule of B" not in per_rule
        assert p.locator(f"tr[data-rule='{rule_b}']").count() == 0
        c.open(f"#/analytics/{rule_b}", ready="rule-analytics")
        assert f"rule {rule_b} not found" in p.locator("main").inner_text()
        assert p.locator("figure.chart").count() == 0
        # operations (lag, dead letters) are for operators: no link, and the page says why
        assert p.locator("#nav a[data-nav='ops']").is_hidden()
        c.open("#/ops")
        assert "operator token" in p.locator("main").inner_text()
        # the token went in no URL the browser asked for, and Sign out forgets it
        assert c.requests and not [u for u in c.requests if token_a in u]
        assert token_a in p.evaluate("sessionStorage.getItem('wooflow.console')")
        p.get_by_role("button", name="Sign out").click()
        c.wait_ready("signin")
        assert p.evaluate("sessionStorage.length") == 0
        p.goto(f"{api.url}/#/rules")
        p.reload()  # a fresh load of the tab knows no token: the sign-in form
        c.wait_ready("signin")
        assert p.locator("table.rules").count() == 0
        c.assert_clean(expected_http=(401, 403, 404))


def _exposures(engine: Engine, store_id: str, rule_id: int, held_out: bool, customers: int, converted: int) -> None:
    """Customers who entered a holdout rule on DAY1, as the rule consumer records them, with
    their orders in the window after as the activity reader brings them up (50 PLN each)."""
    rows = [{"rule_id": rule_id, "customer_key": unique("c"), "store_id": store_id, "held_out": held_out,
             "event_id": unique("e"), "exposed_at": DAY1, "orders": int(i < converted),
             "revenue": Decimal(50 if i < converted else 0)} for i in range(customers)]
    with engine.begin() as conn:
        conn.execute(insert(holdout_exposures), rows)


def _painted(page: Any, selector: str) -> int:
    """How many pixels the charts' canvases under `selector` have drawn on."""
    return int(page.evaluate("""sel => [...document.querySelectorAll(sel + ' canvas')].map(c => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }).reduce((a, b) => a + b, 0)""",
                             selector))


def _pp(x: float) -> str:
    return f"{'+' if x >= 0 else '−'}{abs(x * 100):.1f} pp"


@pytest.mark.integration
def test_the_analytics_page_charts_each_rules_funnel_revenue_and_lift_from_real_data(
        browser: Any, api: ApiThread, settings: Settings, engine: Engine, tmp_path: Path) -> None:
    store = make_store(engine)
    rule = add_rule(engine, store.id, {"name": "Welcome", **ANALYTICS_RULE, "holdout_percent": 20})
    small = add_rule(engine, store.id, {"name": "Small test", **ANALYTICS_RULE, "holdout_percent": 20})
    logs = [log_record(store.id, rule, 0, "send_email", "succeeded", DAY1, f"c{i}") for i in range(3)]
    logs += [log_record(store.id, rule, 0, "send_email", "skipped", DAY1),
             log_record(store.id, rule, 1, "create_admin_task", "succeeded", DAY2),
             log_record(store.id, rule, 0, "send_email", "succeeded", DAY2)]
    codec, producer = get_codec(), Producer(settings)
    for rec in logs + logs[:2]:  # two of them delivered twice: counted once
        producer.produce(settings.topic(topics.LOGS), codec.encode("ExecutionLog", rec), key=rec["store_id"])
    producer.flush(30)
    with RoleThread(LogSink(settings), "sink"):
        wait_until_consumed(settings, settings.sink_group, [topics.LOGS])
    seed(settings, engine, store.id, rule, tmp_path)  # opens and clicks through the tracker; a PLN order on DAY2
    with engine.begin() as conn:  # and a euro order on DAY1, credited to the same rule
        conn.execute(insert(message_conversions).values(
            store_id=store.id, order_id=7, message_id=unique("m"), rule_id=rule, step=0, customer_key="c2",
            touch="open", touched_at=DAY1, ordered_at=DAY1, currency="EUR", revenue=Decimal("10.00"),
            refunded=Decimal(0), voided=False, order_modified=DAY1))
    _exposures(engine, store.id, rule, False, 200, 60)
    _exposures(engine, store.id, rule, True, 50, 5)
    _exposures(engine, store.id, small, False, 12, 3)
    _exposures(engine, store.id, small, True, 4, 1)
    days = {"since": DAY1.date().isoformat(), "until": DAY2.date().isoformat()}
    token = create_token(engine, store.id, "console")
    report = httpx.get(f"{api.url}/v1/analytics/rules/{rule}", params=days,
                       headers={"Authorization": f"Bearer {token}"}).json()
    with Console(browser, api.url) as c:
        c.sign_in(token)
        c.open(f"#/analytics?since={days['since']}&until={days['until']}")
        p = c.page
        row = p.locator(f"tr[data-rule='{rule}']")
        stages = {s: row.locator(f"td[data-stage='{s}']").inner_text()
                  for s in ("Triggered", "Executed", "Delivered", "Opened", "Clicked", "Converted")}
        assert stages == {"Triggered": "6", "Executed": "5", "Delivered": "4", "Opened": "2", "Clicked": "2",
                          "Converted": "2"}
        revenue = row.locator("td[data-col='revenue']").inner_text()
        assert "64.50" in revenue and "PLN" in revenue and "10.00" in revenue
        lift = report["holdout"]["conversion_lift"]
        assert row.locator("td[data-col='lift']").inner_text() == (
            f"{_pp(lift['estimate'])[:-3]} pp [{_pp(lift['low'])[:-3]}, {_pp(lift['high'])[:-3]}]")
        assert "sample too small" in p.locator(f"tr[data-rule='{small}'] td[data-col='lift']").inner_text()
        wait_for(lambda: _painted(p, "figure[data-chart='funnel']") > 500, 10, 0.1, "the store's funnel drawn")
        c.shoot("analytics")

        row.get_by_role("link", name="Welcome").click()
        c.wait_ready("rule-analytics")
        funnel = p.locator("figure[data-chart='funnel']")
        counts = [funnel.locator(f"tr[data-stage='{s}'] td[data-col='count']").inner_text() for s in stages]
        assert counts == [str(x) for x in (sum(report["executions"].values()), report["executions"]["succeeded"],
                                           report["sends"], report["opened"], report["clicked"],
                                           report["conversions"])] == list(stages.values())
        revenue_days = p.locator("figure[data-chart='revenue'] table.revenue tbody tr")
        assert [r.get_attribute("data-day") for r in revenue_days.all()] == [days["since"], days["until"]]
        assert "10.00" in revenue_days.nth(0).locator("td[data-currency='EUR']").inner_text()
        assert "64.50" in revenue_days.nth(1).locator("td[data-currency='PLN']").inner_text()
        wait_for(lambda: min(_painted(p, f"figure[data-chart='{chart}']") for chart in ("funnel", "revenue")) > 500,
                 10, 0.1, "the funnel and revenue charts drawn")
        interval = p.locator("figure[data-lift='conversion'] figcaption").inner_text()
        assert interval == (f"Conversion rate: {_pp(lift['estimate'])} (95% interval {_pp(lift['low'])} to "
                            f"{_pp(lift['high'])})")
        assert p.locator("figure[data-lift='conversion'] svg circle").count() == 1
        assert p.locator(".lift .sample").count() == 0 and report["holdout"]["conclusive"]
        c.shoot("analytics-rule")

        c.open(f"#/analytics/{small}?since={days['since']}&until={days['until']}", ready="rule-analytics")
        assert p.locator(".lift .sample").inner_text().startswith("Sample too small — sample too small to conclude")
        assert "No revenue credited in this period." in p.locator("main").inner_text()
        c.assert_clean()
    with Console(browser, api.url, viewport=NARROW) as phone:
        phone.sign_in(token)
        phone.open(f"#/analytics/{rule}?since={days['since']}&until={days['until']}", ready="rule-analytics")
        wait_for(lambda: _painted(phone.page, "figure[data-chart='revenue']") > 500, 10, 0.1, "drawn at 390 px")
        assert phone.page.evaluate("document.documentElement.scrollWidth") <= 390
        phone.shoot("analytics-rule-390px")
        phone.assert_clean()


def _redrives_of(settings: Settings, topic: str, dlq_id: str) -> int:
    """How many messages on `topic` carry the redrive header of `dlq_id` (read to the end)."""
    consumer = make_reader(settings, unique("redrives"))
    try:
        parts = [TopicPartition(topic, p) for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions]
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        found, seen = 0, dict.fromkeys(ends, 0)
        while any(seen[p] < ends[p] for p in ends):
            for m in consumer.consume(100, 0.5):
                if m.error():
                    continue
                partition, offset = m.partition(), m.offset()
                assert partition is not None and offset is not None
                seen[partition] = offset + 1
                found += dict(m.headers() or []).get("wooflow-redrive") == dlq_id.encode()
        return found
    finally:
        consumer.close()


@pytest.mark.integration
def test_an_operator_sees_the_lag_per_role_and_the_redrive_button_redrives_a_dead_letter_once(
        browser: Any, api: ApiThread, settings: Settings, engine: Engine) -> None:
    store = make_store(engine)
    source = settings.topic(topics.ORDERS)
    letter = record_of_unsent(stage="bridge", reason="message_too_large", error="the broker refused it",
                              store_id=store.id, topic=source, key="c1", value=b'{"not": "an event"}',
                              event_id=unique("ev"), seq=1)
    producer = Producer(settings)
    producer.produce(*encode(get_codec(settings.schema_registry_url), settings, letter))
    producer.flush()
    for i in range(3):  # orders nobody has read yet: the rule consumers' group is 3 behind
        producer.produce(source, b"{}", key=f"{store.id}:c{i}")
    producer.flush()
    operator = create_token(engine, None, "operator")
    with Console(browser, api.url) as c:
        c.sign_in(operator, store=store.id)
        c.open("#/ops")
        p = c.page
        lag = p.locator("tr[data-role='rules'] td[data-col='lag']")
        assert lag.inner_text() == "3" and settings.rules_group in p.locator("tr[data-role='rules']").inner_text()
        assert {r.get_attribute("data-role") for r in p.locator("table.lag > tbody > tr").all()} == {
            "rules", "workers", "sink", "scheduler"}
        row = p.locator(f"tr[data-dlq='{letter['dlq_id']}']")
        assert "message_too_large" in row.inner_text()
        c.shoot("operations")
        row.get_by_role("button", name="Redrive").dblclick()
        row.get_by_role("status").wait_for()
        assert row.get_by_role("status").inner_text().startswith("redriven ")
        # the API itself, pressed twice at once more: still once
        partition, offset = str(row.locator("a").get_attribute("href")).split("/")[-2:]
        answers: list[httpx.Response] = []
        url = f"{api.url}/v1/dlq/{partition}/{offset}/redrive"
        presses = [threading.Thread(target=lambda: answers.append(httpx.post(
            url, headers={"Authorization": f"Bearer {operator}"}, timeout=30))) for _ in range(2)]
        for t in presses:
            t.start()
        for t in presses:
            t.join()
        assert sorted((r.status_code, r.json()["redriven"]) for r in answers) == [(200, False), (200, False)]
        assert _redrives_of(settings, source, letter["dlq_id"]) == 1
        c.open("#/ops")
        assert row.get_by_role("button", name="Redrive").count() == 0 and "redriven" in row.inner_text()
        assert lag.inner_text() == "4"  # the letter is back on its topic, for the rule consumers
        c.open(f"#/dlq/{partition}/{offset}", ready="letter")
        assert '"not": "an event"' in p.locator("main").inner_text()
        c.assert_clean()
    # a store token is not an operator's
    r = httpx.get(f"{api.url}/v1/dlq", headers={"Authorization": f"Bearer {create_token(engine, store.id)}"})
    assert r.status_code == 403


@pytest.mark.integration
def test_two_redrives_at_once_produce_the_letter_once(api: ApiThread, settings: Settings, engine: Engine) -> None:
    store = make_store(engine)
    source = settings.topic(topics.ORDERS)
    letter = record_of_unsent(stage="bridge", reason="message_too_large", error="x", store_id=store.id,
                              topic=source, key="c1", value=b"payload", event_id=unique("ev"), seq=2)
    producer = Producer(settings)
    producer.produce(*encode(get_codec(settings.schema_registry_url), settings, letter))
    producer.flush()
    h = {"Authorization": f"Bearer {create_token(engine, None)}"}
    found = httpx.get(f"{api.url}/v1/dlq", params={"store": store.id}, headers=h, timeout=30).json()["letters"]
    assert [x["dlq_id"] for x in found] == [letter["dlq_id"]]
    url = f"{api.url}/v1/dlq/{found[0]['partition']}/{found[0]['offset']}/redrive"
    go = threading.Barrier(4)
    answers: list[bool] = []

    def press() -> None:
        go.wait()
        answers.append(httpx.post(url, headers=h, timeout=30).json()["redriven"])

    presses = [threading.Thread(target=press) for _ in range(4)]
    for t in presses:
        t.start()
    for t in presses:
        t.join()
    assert sorted(answers) == [False, False, False, True]
    assert _redrives_of(settings, source, letter["dlq_id"]) == 1


# ---- end to end ------------------------------------------------------------------------------

def _build_rule_in_console(c: Console) -> None:
    """new_order with total > 100 AND (country in PL, DE OR email contains 'vip') → a note."""
    c.open("#/rules/new", ready="rule")
    p = c.page
    p.get_by_label("Name").fill("Big orders from PL/DE or VIPs")
    p.locator("[data-path='trigger']").select_option("new_order")
    p.get_by_role("button", name="Add condition").last.click()
    c.condition("conditions.conditions[0]", "order_total", "gt", "100")
    p.locator("[data-group='conditions']").get_by_role("button", name="Add group").last.click()
    c.condition("conditions.conditions[1].conditions[0]", "billing_country", "in", ["PL", "DE"])
    p.locator("[data-group='conditions.conditions[1]']").get_by_role("button", name="Add condition").click()
    c.condition("conditions.conditions[1].conditions[1]", "customer_email", "contains", "vip")
    p.locator("[data-path='actions[0].type']").select_option("add_order_note")
    p.locator("[data-path='actions[0].params.note']").fill("wooflow: console rule on {{ order.number }}")
    p.get_by_role("button", name="Create rule").click()
    c.wait_ready("rule")
    p.wait_for_selector("text=Saved: version 1.")


@pytest.mark.e2e
def test_a_rule_built_in_the_console_runs_on_an_order_and_its_action_shows_in_the_log_view(
        browser: Any, settings: Settings, engine: Engine, logs_dir: Any) -> None:
    with ExitStack() as stack:
        api = stack.enter_context(ApiThread(settings))
        c = stack.enter_context(Console(browser, api.url))

        def build(p: Pipeline) -> None:  # before the roles start: no order races the rule's load
            c.sign_in(create_token(engine, p.store.id, "console"))
            _build_rule_in_console(c)

        p = Pipeline(settings, engine, logs_dir, stack, before_start=build)
        rule_id = int(c.page.url.rsplit("/", 1)[1])
        c.shoot("rule-editor")
        product = p.sim.store.create_product("Armchair", "180.00")
        match = p.sim.store.create_order(line_items=[{"product_id": product.id, "quantity": 1}], status="processing",
                                         billing={"email": "ola@example.com", "first_name": "Ola", "country": "PL"})
        miss = p.sim.store.create_order(line_items=[{"product_id": product.id, "quantity": 1}], status="processing",
                                        billing={"email": "jo@example.com", "first_name": "Jo", "country": "US"})
        try:
            wait_for(lambda: p.wooflow_notes(match.id), 90, 0.3, "the note on the matching order")
            wait_for(lambda: [r for r in p.log_rows() if r["status"] == "succeeded"], 30, 0.3, "the execution log")
            wait_until_pipeline_idle(settings)
        except AssertionError:
            print(p.role_logs())
            raise
        assert p.wooflow_notes(match.id) == [f"wooflow: console rule on {match.id}"]
        assert p.wooflow_notes(miss.id) == []  # everything was processed: the US order matched nothing

        c.open("#/logs")
        rows = c.page.locator("table.logs tbody tr")
        assert rows.count() == 1
        row = rows.first
        assert row.get_attribute("data-status") == "succeeded"
        assert f"#{rule_id}" in row.inner_text() and "add_order_note" in row.inner_text()
        c.shoot("logs")
        row.locator("a").first.click()
        c.wait_ready("log")
        detail = c.page.locator("main").inner_text()
        assert "add_order_note" in detail and str(match.id) in detail and '"status": "succeeded"' in detail
        c.shoot("log-detail")
        c.open("#/analytics")
        assert c.page.locator(f"tr[data-rule='{rule_id}']").inner_text().split("\t")[:3] == [
            "Big orders from PL/DE or VIPs", "1", "1"]  # triggered, executed
        c.open("#/rules")
        assert "Big orders from PL/DE or VIPs" in c.page.locator("table.rules").inner_text()
        c.shoot("rules")
        c.open("#/templates")
        assert c.page.locator(".card").count() >= 6
        c.shoot("templates")
        c.assert_clean()
        with Console(c.page.context.browser, api.url, viewport=NARROW) as phone:
            phone.sign_in(create_token(engine, p.store.id, "phone"))
            phone.open(f"#/rules/{rule_id}", ready="rule")
            # readable at 390 px: nothing is wider than the screen (wide tables scroll in their box)
            assert phone.page.evaluate("document.documentElement.scrollWidth") <= 390
            phone.shoot("rule-editor-390px")
            for route in ("#/rules", "#/logs", "#/analytics", "#/templates", "#/dry-run"):
                phone.open(route)
                assert phone.page.evaluate("document.documentElement.scrollWidth") <= 390, route
            phone.shoot("dry-run-390px")
            phone.assert_clean()
