"""Shipped workflow templates: valid rules with valid actions and renderable emails,
installable with `wooflow templates install` and through the API."""

from __future__ import annotations

import subprocess
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.harness import ApiThread, bearer
from tests.support import env_of, make_store, wooflow_cli
from wooflow.consumer.model import RuleSpec, delay_seconds
from wooflow.scheduler.templates import check_actions, load_templates, rule_spec
from wooflow.workers.templating import render

NAMES = {"welcome_series", "cart_recovery", "vip_upgrade", "win_back", "birthday", "card_expiry"}

CUSTOMER = {"id": 7, "email": "ala@example.com", "first_name": "Ala", "last_name": "Nowak"}
CONTEXTS: dict[str, dict[str, Any]] = {  # what each trigger's steps see (see scheduler/scan.py, workers/registry.py)
    "order": {"order": {"id": 12, "number": "12", "billing": {"email": "ala@example.com"}}, "customer": CUSTOMER},
    "cart": {"customer": CUSTOMER, "cart": {"items": [{"product_id": 3, "quantity": 2, "name": "Mug"}],
                                            "total": "39.80", "currency": "PLN", "recovery_url": "https://x/r/1"}},
    "card": {"customer": CUSTOMER, "card": {"expiry": "04/2026"}},
    "plain": {"customer": CUSTOMER},
}
TRIGGER_CONTEXT = {"first_purchase": "order", "tier_upgrade": "order", "abandoned_cart": "cart",
                   "card_expiring": "card", "customer_inactive": "plain", "birthday": "plain"}


@pytest.mark.unit
def test_every_template_is_a_valid_rule_with_valid_actions() -> None:
    templates = load_templates()
    assert set(templates) == NAMES
    for name, t in templates.items():
        spec = RuleSpec.model_validate(t.rule)
        assert check_actions(spec) == [], name
        assert t.title and t.description
        ctx = CONTEXTS[TRIGGER_CONTEXT[spec.trigger]] | {
            "store": {"name": "Shop", "url": "https://shop.example"}, "coupon": {"code": "WF-ABC"}}
        for a in spec.actions:
            if a.type == "send_email":  # every email has content and renders in the workers' sandbox
                assert a.params["subject"] and a.params["html"] and a.params["text"], name
                for part in ("subject", "html", "text"):
                    assert render(a.params[part], ctx, html=part == "html").strip(), (name, part)


@pytest.mark.unit
def test_template_shapes_match_the_seeds() -> None:
    def plan(name: str) -> list[tuple[int, str]]:
        return [(delay_seconds(a.delay), a.type) for a in rule_spec(name).actions]
    day, hour = 86400, 3600
    assert plan("welcome_series") == [(0, "send_email"), (3 * day, "send_email"), (7 * day, "apply_coupon"),
                                      (7 * day, "send_email"), (14 * day, "send_email")]
    assert plan("cart_recovery") == [(1 * hour, "send_email"), (24 * hour, "send_email"), (48 * hour, "apply_coupon"),
                                     (48 * hour, "send_email"), (7 * day, "send_email")]
    cart = rule_spec("cart_recovery")
    assert cart.actions[2].params["amount"] == 10 and {"type": "cart_recovered"} in cart.exit_conditions
    assert rule_spec("welcome_series").actions[2].params["amount"] == 10
    vip = rule_spec("vip_upgrade")
    assert [a.type for a in vip.actions] == ["apply_coupon", "send_email", "add_customer_tag", "create_admin_task"]
    assert vip.actions[0].params["amount"] == 20 and vip.actions[2].params["tag"] == "VIP"
    assert all(a.delay_s == 0 for a in vip.actions)
    assert rule_spec("win_back").trigger == "customer_inactive"
    assert rule_spec("birthday").trigger == "birthday" and rule_spec("card_expiry").trigger == "card_expiring"


def _cli(settings, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return wooflow_cli("templates", *args, env=env_of(settings), timeout=60)


@pytest.mark.e2e
def test_cli_lists_and_installs(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine)
    out = _cli(settings, "list")
    assert out.returncode == 0, out.stderr
    assert all(n in out.stdout for n in NAMES)
    out = _cli(settings, "install", "cart_recovery", "--store", store.id, "--name", "Carts (PL)")
    assert out.returncode == 0, out.stderr
    with engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM rules WHERE store_id = :s"), {"s": store.id}).mappings().one()
        audit = conn.execute(text("SELECT details FROM rule_audit WHERE rule_id = :r"), {"r": row["id"]}).scalar_one()
    assert f"as rule {row['id']}" in out.stdout
    assert (row["name"], row["trigger"], len(row["actions"])) == ("Carts (PL)", "abandoned_cart", 5)
    assert audit["template"] == "cart_recovery"
    bad = _cli(settings, "install", "nope", "--store", store.id)
    assert bad.returncode == 1 and "no template 'nope'" in bad.stderr
    bad = _cli(settings, "install", "birthday", "--store", "no-such-store")
    assert bad.returncode == 1 and "no store 'no-such-store'" in bad.stderr


@pytest.fixture
def api(settings):  # type: ignore[no-untyped-def]
    with ApiThread(settings) as server:
        yield server


@pytest.mark.integration
def test_api_lists_and_installs_for_the_callers_store(settings, engine, api) -> None:  # type: ignore[no-untyped-def]
    store, other = make_store(engine), make_store(engine)
    h = bearer(engine, store.id)
    assert httpx.get(f"{api.url}/v1/templates").status_code == 401
    listed = httpx.get(f"{api.url}/v1/templates", headers=h).json()["templates"]
    assert {t["name"] for t in listed} == NAMES
    welcome = next(t for t in listed if t["name"] == "welcome_series")
    assert [s["delay"] for s in welcome["steps"]] == ["immediately", "day 3", "day 7", "day 7", "day 14"]
    detail = httpx.get(f"{api.url}/v1/templates/vip_upgrade", headers=h).json()
    assert detail["rule"]["trigger_options"] == {"to": "gold"}
    assert httpx.get(f"{api.url}/v1/templates/nope", headers=h).status_code == 404

    r = httpx.post(f"{api.url}/v1/templates/win_back/install", headers=h,
                   json={"name": "Win-back 60", "trigger_options": {"days": 60}, "enabled": False})
    assert r.status_code == 201, r.text
    rule_id = r.json()["rule_id"]
    got = httpx.get(f"{api.url}/v1/rules/{rule_id}", headers=h).json()
    assert (got["name"], got["trigger_options"], got["enabled"], got["store_id"]) == (
        "Win-back 60", {"days": 60}, False, store.id)
    r = httpx.post(f"{api.url}/v1/templates/birthday/install", headers=h)  # no body: the template as shipped
    assert r.status_code == 201 and r.json()["store_id"] == store.id
    bad = httpx.post(f"{api.url}/v1/templates/win_back/install", headers=h, json={"trigger_options": {"days": 0}})
    assert bad.status_code == 422 and "trigger_options.days" in bad.text
    assert httpx.post(f"{api.url}/v1/templates/nope/install", headers=h).status_code == 404
    # installed for the caller's store only
    oh = bearer(engine, other.id)
    assert httpx.get(f"{api.url}/v1/rules/{rule_id}", headers=oh).status_code == 404
