"""Importing Polski Pro's automation rules: an export covering every trigger, filter field,
operator and action Polski Pro documents maps to equivalent wooflow rules; what cannot be
mapped is listed with its reasons and never created; the CLI writes nothing without
--apply, and importing again creates nothing twice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.rules_kit import customer_event, order_event
from tests.support import env_of, make_store, wooflow_cli
from wooflow.consumer.conditions import compile_tree
from wooflow.consumer.facts import LazyFacts
from wooflow.consumer.tiers import Loyalty
from wooflow.consumer.triggers import TriggerContext
from wooflow.ops.polski_pro import ExportError, load_export, plan_import

EXPORT = Path(__file__).with_name("data") / "polski_pro_rules.json"
# Polski Pro's filter fields and the operators it documents for each (its FilterField table)
DOCUMENTED = {
    "order_total": {"equals", "gt", "lt", "not_equals"}, "order_status": {"equals", "in", "not_in"},
    "item_count": {"gt", "lt", "equals"}, "billing_country": {"equals", "in", "not_in"},
    "shipping_country": {"equals", "in", "not_in"}, "geo_scope": {"equals"},
    "customer_email": {"equals", "contains"}, "payment_method": {"equals", "in"},
    "shipping_method": {"in", "not_in"}, "product_id": {"in", "not_in"}, "category": {"in", "not_in"},
}
TRIGGERS = {"new_order", "order_status_changed", "new_customer", "cart_abandoned", "product_saved"}
ACTIONS = {"send_email", "send_sms", "change_order_status", "add_order_note", "add_customer_tag", "webhook"}
MAPPABLE = ["#1 Big EU orders", "#2 Processing COD orders", "#3 Bulk buyers to DACH", "#4 Gmail sign-ups",
            "#5 Courier integration", "#6 Abandoned carts", "#7 New products to the PIM"]
UNMAPPABLE = ["#8 FreshMail newsletter", "#9 Odd filters", "#10 Subscription renewals", "#11 CRM sync"]


def _export() -> list[dict[str, Any]]:
    return json.loads(EXPORT.read_text())


@pytest.mark.unit
def test_the_export_covers_everything_polski_pro_documents() -> None:
    rules = _export()
    used = {(f["field"], f["operator"]) for r in rules for f in r["filters"]}
    assert {(f, op) for f, ops in DOCUMENTED.items() for op in ops} <= used
    assert {r.get("trigger", r.get("trigger_type")) for r in rules} >= TRIGGERS
    assert {a["type"] for r in rules for a in r["actions"]} >= ACTIONS
    assert {r["match_mode"] for r in rules} == {"all", "any"}


@pytest.mark.unit
def test_every_documented_rule_maps_and_the_rest_is_listed_with_reasons() -> None:
    plan = plan_import(load_export(EXPORT.read_text()))
    assert [m.source for m in plan.rules] == MAPPABLE
    assert [u.source for u in plan.unmappable] == UNMAPPABLE
    # every documented field and operator went through, as it was
    mapped = {(c["field"], c["operator"]) for m in plan.rules for c in m.spec.conditions.get("conditions", [])}
    assert {(f, op) for f, ops in DOCUMENTED.items() for op in ops} <= mapped
    by = {m.source: m for m in plan.rules}
    one = by["#1 Big EU orders"].spec
    assert (one.trigger, one.priority, one.group_label, one.enabled) == ("new_order", 5, "marketing", True)
    assert one.conditions["match"] == "all" and len(one.conditions["conditions"]) == 6
    assert [(a.type, a.params) for a in one.actions] == [
        ("send_email", {"subject": "Danke für Ihre Bestellung", "body": "<p>GDPR note</p>", "marketing": True})]
    two = by["#2 Processing COD orders"].spec
    assert two.conditions["match"] == "any"
    assert [c["value"] for c in two.conditions["conditions"][:3]] == \
        ["processing", "processing,on-hold", ["cancelled", "failed"]]  # wc- prefixes dropped
    assert two.actions[0].params == {"note": "Pobranie: sprawdź adres", "customer_note": False}
    three = by["#3 Bulk buyers to DACH"].spec
    assert three.trigger_options == {"from": ["pending"], "to": ["processing"]}
    assert three.actions[0].params == {"status": "wc-on-hold", "note": "check stock"}
    four = by["#4 Gmail sign-ups"]
    assert four.spec.trigger == "new_customer" and four.spec.enabled is True
    assert [(a.type, a.params) for a in four.spec.actions] == [
        ("add_customer_tag", {"tag": "gmail"}), ("send_sms", {"text": "Witaj {first_name}!", "marketing": True})]
    assert any("{first_name}" in n for n in four.notes)
    six = by["#6 Abandoned carts"]
    assert (six.spec.trigger, six.spec.enabled) == ("abandoned_cart", False) and "never fired" in six.notes[0]
    assert by["#7 New products to the PIM"].spec.enabled is False
    problems = {u.source: u.problems for u in plan.unmappable}
    assert "provider" in problems["#8 FreshMail newsletter"][0]
    assert len(problems["#9 Odd filters"]) == 3
    assert [p.split(":")[0] for p in problems["#9 Odd filters"]] == ["filters[0]", "filters[1]", "filters[2]"]
    assert "subscription_renewed" in problems["#10 Subscription renewals"][0]
    assert "getresponse_sync" in problems["#11 CRM sync"][0]
    assert len(plan.notes) == 3  # the catalog, consent and tags, said once


@pytest.mark.unit
def test_imported_filters_decide_like_polski_pro() -> None:
    """Polski Pro's semantics on real orders: Poland is `pl` (not `eu`); shipping falls back to
    billing; `in` takes comma-separated lists; order statuses without the wc- prefix."""
    by = {m.source: m.spec for m in plan_import(_export()).rules}

    def matches(spec: Any, ev: dict[str, Any], schema: str = "OrderEvent", status: str | None = None) -> bool:
        ctx = TriggerContext(schema, ev, Loyalty(), status=status)
        return compile_tree(spec.conditions)(LazyFacts(ctx))

    big = by["#1 Big EU orders"]
    assert matches(big, order_event("s", 1, total="250", country="DE"))
    assert not matches(big, order_event("s", 2, total="250", country="PL"))  # pl, not eu
    cod = by["#2 Processing COD orders"]
    assert matches(cod, order_event("s", 3, payment="bacs"), status="processing")
    assert not matches(cod, order_event("s", 4, payment="stripe"), status="cancelled")
    bulk = by["#3 Bulk buyers to DACH"]
    assert matches(bulk, order_event("s", 5, country="DE", items=[(1, 50)]))
    assert not matches(bulk, order_event("s", 6, country="DE", shipping_country="CH", items=[(1, 50)]))
    gmail = by["#4 Gmail sign-ups"]
    assert matches(gmail, customer_event("s", 7, email="ala@gmail.com"), "CustomerEvent")
    assert not matches(gmail, customer_event("s", 8, email="ala@wp.pl"), "CustomerEvent")


@pytest.mark.unit
@pytest.mark.parametrize("text, message", [
    ("{not json", "not JSON"), ('{"rules": 3}', "list of Polski Pro rules"), ("[1, 2]", "list of Polski Pro rules")])
def test_what_is_not_an_export_is_refused(text: str, message: str) -> None:
    with pytest.raises(ExportError, match=message):
        load_export(text)


@pytest.mark.e2e
def test_cli_writes_nothing_without_apply_and_nothing_twice(settings, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine)
    env = env_of(settings)

    def rules_of_store() -> list[tuple[str, str, bool]]:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(
                "SELECT name, trigger, enabled FROM rules WHERE store_id = :s ORDER BY id"), {"s": store.id})]

    dry = wooflow_cli("rules", "import", "--store", store.id, "--from", "polski-pro", str(EXPORT), env=env)
    assert dry.returncode == 1, dry.stdout + dry.stderr  # some rules cannot be imported
    assert "dry run: nothing written; --apply creates 7 rules" in dry.stdout
    for source in UNMAPPABLE:
        assert source in dry.stdout
    assert "order_weight" in dry.stdout and "getresponse_sync" in dry.stdout
    assert rules_of_store() == []
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM rule_audit WHERE store_id = :s"),
                            {"s": store.id}).scalar_one() == 0

    applied = wooflow_cli("rules", "import", "--store", store.id, "--from", "polski-pro", str(EXPORT), "--apply",
                          "--json", env=env)
    assert applied.returncode == 1, applied.stdout + applied.stderr
    report = json.loads(applied.stdout)
    assert [r["status"] for r in report["rules"]] == ["created"] * 7
    assert [u["source"] for u in report["unmappable"]] == UNMAPPABLE
    assert rules_of_store() == [
        ("Big EU orders", "new_order", True), ("Processing COD orders", "new_order", True),
        ("Bulk buyers to DACH", "order_status_changed", True), ("Gmail sign-ups", "new_customer", True),
        ("Courier integration", "new_order", True), ("Abandoned carts", "abandoned_cart", False),
        ("New products to the PIM", "product_saved", False)]
    with engine.connect() as conn:
        audits = conn.execute(text("SELECT actor, details->>'source_rule' FROM rule_audit WHERE store_id = :s "
                                   "ORDER BY id"), {"s": store.id}).all()
    assert [tuple(a) for a in audits] == [("import polski-pro", s) for s in MAPPABLE]

    again = wooflow_cli("rules", "import", "--store", store.id, "--from", "polski-pro", str(EXPORT), "--apply",
                        env=env)
    assert again.returncode == 1 and "created 0 rules" in again.stdout and "already present" in again.stdout
    assert len(rules_of_store()) == 7

    only_good = tmp_path / "good.json"
    only_good.write_text(json.dumps(_export()[:2]))
    other = make_store(engine)
    good = wooflow_cli("rules", "import", "--store", other.id, "--from", "polski-pro", str(only_good), env=env)
    assert good.returncode == 0 and "--apply creates 2 rules" in good.stdout, good.stdout + good.stderr
    for bad_args in (["--store", "nope", "--from", "polski-pro", str(EXPORT)],
                     ["--store", store.id, "--from", "automatewoo", str(EXPORT)],
                     ["--store", store.id, "--from", "polski-pro", str(tmp_path / "missing.json")]):
        bad = wooflow_cli("rules", "import", *bad_args, env=env)
        assert bad.returncode == 2 and "error:" in bad.stderr, bad_args
