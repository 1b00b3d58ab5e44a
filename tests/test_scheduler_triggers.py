"""Calendar triggers, evaluated by the scheduler's scan in the store's timezone: each fires
just after local midnight of its day (not a minute before, even when UTC is already on
that date or still on the previous one) and once per period per customer."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import text

from tests.pipeline import add_rule
from tests.support import make_store, unique
from wooflow.clock import FrozenClock
from wooflow.consumer.engine import RuleEngine
from wooflow.consumer.rules import RuleCache
from wooflow.scheduler.activity import record_order
from wooflow.scheduler.customer_calendar import record_customer
from wooflow.scheduler.dates import meta_dates, parse_birthday, parse_card_expiry
from wooflow.scheduler.scan import Scanner
from wooflow.scheduler.synth import Firer
from wooflow.stores import StoreCache

EMAIL = [{"type": "add_points", "params": {"points": 1}}]


def utc(*a: int) -> datetime:
    return datetime(*a, tzinfo=timezone.utc)


class Harness:
    def __init__(self, settings, engine, tz: str, trigger: str, options: dict[str, Any] | None = None,  # type: ignore[no-untyped-def]
                 **rule: Any) -> None:
        self.engine = engine
        self.store = make_store(engine, timezone=tz)
        self.rule_id = add_rule(engine, self.store.id, {"name": trigger, "trigger": trigger,
                                                        "trigger_options": options or {}, "actions": EMAIL, **rule})
        self.trigger = trigger
        rules = RuleCache(engine)
        rules.refresh(force=True)
        self.rules = rules
        self.scanner = Scanner(settings, engine, rules, Firer(RuleEngine(rules)), FrozenClock(), StoreCache(engine, 0))

    def scan(self, now: datetime) -> int:
        rule = self.rules.get(self.rule_id)
        assert rule is not None
        return self.scanner.scan_rule(self.scanner.stores.get(self.store.id), rule, self.trigger, now)  # type: ignore[arg-type]

    def runs(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(text(
                "SELECT s.event_id, s.customer_key, s.due_at, s.command, f.period FROM scheduled_steps s "
                "JOIN trigger_firings f ON f.event_id = s.event_id AND f.rule_id = s.rule_id "
                "WHERE s.rule_id = :r ORDER BY s.created_at"), {"r": self.rule_id}).mappings()]

    def customer(self, ckey: str, **cols: Any) -> None:
        names = ", ".join(cols)
        values = ", ".join(f":{k}" for k in cols)
        with self.engine.begin() as conn:
            conn.execute(text(f"INSERT INTO customer_calendar (store_id, customer_key, email, first_name, {names}) "
                              f"VALUES (:store, :ckey, :email, 'Ala', {values})"),
                         {"store": self.store.id, "ckey": ckey, "email": f"{ckey}@example.com", **cols})

    def subscription(self, sid: int, ckey: str, status: str, **dates: datetime) -> None:
        """A subscription as the rule consumer keeps it (subscription_state)."""
        cols = ", ".join(dates)
        values = ", ".join(f":{k}" for k in dates)
        with self.engine.begin() as conn:
            conn.execute(text(f"INSERT INTO subscription_state (store_id, subscription_id, customer_key, email, "
                              f"first_event_id, status, {cols}) VALUES (:store, :sid, :ckey, :email, 'e', :status, "
                              f"{values})"), {"store": self.store.id, "sid": sid, "ckey": ckey, "status": status,
                                              "email": f"{ckey}@example.com", **dates})

    def customer_meta(self, number: int, meta: dict[str, str]) -> None:
        """A customer `c<number>` updated in WooCommerce with these meta values, as recorded."""
        ev = {"store_id": self.store.id, "customer_key": f"c{number}", "action": "updated",
              "customer": {"id": number, "email": f"c{number}@example.com", "meta": meta}}
        with self.engine.begin() as conn:
            record_customer(conn, ev)


def crossing(h: Harness, boundary: datetime) -> None:
    """Nothing a minute before the store's local midnight, one run a minute after, and
    nothing more later in the period."""
    assert h.scan(boundary - timedelta(minutes=1)) == 0
    assert h.scan(boundary + timedelta(minutes=1)) == 1
    assert h.scan(boundary + timedelta(hours=5)) == 0
    assert h.scan(boundary + timedelta(days=1, hours=1)) == 0
    assert len(h.runs()) == 1


@pytest.mark.integration
def test_customer_inactive_counts_days_in_the_store_timezone(settings, engine) -> None:  # type: ignore[no-untyped-def]
    h = Harness(settings, engine, "Asia/Tokyo", "customer_inactive", {"days": 30})
    # 16:00 UTC on Jan 10 is already Jan 11 in Tokyo: day 30 starts at Tokyo midnight of Feb 10
    h.customer("c1", last_order_at=utc(2026, 1, 10, 16, 0), last_order_id=5, first_order_at=utc(2025, 5, 1))
    crossing(h, utc(2026, 2, 9, 15, 0))
    run = h.runs()[0]
    assert run["period"] == "order:5" and run["customer_key"] == "c1"
    # ordering again starts a new inactivity period: it fires again 30 days after that order
    with engine.begin() as conn:
        conn.execute(text("UPDATE customer_calendar SET last_order_at = :t, last_order_id = 9 WHERE store_id = :s"),
                     {"t": utc(2026, 2, 20, 3, 0), "s": h.store.id})
    assert h.scan(utc(2026, 3, 21, 14, 59)) == 0
    assert h.scan(utc(2026, 3, 21, 15, 1)) == 1
    assert [r["period"] for r in h.runs()] == ["order:5", "order:9"]


@pytest.mark.integration
def test_first_purchase_anniversary_on_the_local_date(settings, engine) -> None:  # type: ignore[no-untyped-def]
    h = Harness(settings, engine, "America/New_York", "first_purchase_anniversary")
    # 03:00 UTC on Mar 1 2025 was Feb 28, 22:00 in New York: the anniversary is Feb 28
    h.customer("c2", first_order_at=utc(2025, 3, 1, 3, 0), last_order_at=utc(2025, 3, 1, 3, 0), last_order_id=1)
    crossing(h, utc(2026, 2, 28, 5, 0))  # EST: local midnight is 05:00 UTC
    assert h.runs()[0]["period"] == "2026"
    assert h.scan(utc(2027, 2, 28, 5, 1)) == 1  # and next year again
    assert "years" in h.runs()[1]["command"]["context_json"]


@pytest.mark.integration
def test_birthday_from_customer_meta_once_a_year(settings, engine) -> None:  # type: ignore[no-untyped-def]
    h = Harness(settings, engine, "Pacific/Auckland", "birthday")
    ev = {"store_id": h.store.id, "customer_key": "c3", "action": "updated",
          "customer": {"id": 3, "email": "c3@example.com", "first_name": "Ola", "last_name": "K",
                       "meta": {"birthday": '"1990-01-15"'}}}
    with engine.begin() as conn:
        record_customer(conn, ev)  # what the activity reader does with woo.customers
    # Auckland is UTC+13 in January: Jan 15 starts at 11:00 UTC on Jan 14
    crossing(h, utc(2026, 1, 14, 11, 0))
    run = h.runs()[0]
    assert run["period"] == "2026" and '"first_name":"Ola"' in run["command"]["context_json"]
    assert h.scan(utc(2027, 1, 14, 11, 1)) == 1


@pytest.mark.integration
def test_birthday_days_before_and_leap_day(settings, engine) -> None:  # type: ignore[no-untyped-def]
    h = Harness(settings, engine, "UTC", "birthday", {"days_before": 3})
    h.customer("c4", birth_month=2, birth_day=29)
    # Feb 29 is celebrated on Feb 28 in 2027; three days before is Feb 25
    crossing(h, utc(2027, 2, 25, 0, 0))
    assert '"date":"2027-02-28"' in h.runs()[0]["command"]["context_json"]


@pytest.mark.integration
def test_subscription_renewal_reminder_before_the_local_renewal_date(settings, engine) -> None:  # type: ignore[no-untyped-def]
    h = Harness(settings, engine, "America/Los_Angeles", "subscription_renewal", {"days_before": 3})
    h.subscription(41, "c5", "active", next_payment_at=utc(2026, 6, 10, 2, 0))
    h.subscription(42, "c6", "cancelled", next_payment_at=utc(2026, 6, 10, 2, 0))  # no reminder for it
    # 02:00 GMT on Jun 10 is Jun 9 in Los Angeles; 3 days before is Jun 6, which starts at 07:00 UTC
    crossing(h, utc(2026, 6, 6, 7, 0))
    run = h.runs()[0]
    assert run["period"] == "renewal:41:2026-06-09" and run["customer_key"] == "c5"
    assert '"renewal_date":"2026-06-09"' in run["command"]["context_json"]
    # the next payment moves a month on (a renewal was paid): one more reminder, for the new date
    with engine.begin() as conn:
        conn.execute(text("UPDATE subscription_state SET next_payment_at = :t WHERE store_id = :s"),
                     {"t": utc(2026, 7, 10, 2, 0), "s": h.store.id})
    assert h.scan(utc(2026, 7, 6, 7, 1)) == 1
    assert [r["period"] for r in h.runs()] == ["renewal:41:2026-06-09", "renewal:41:2026-07-09"]


@pytest.mark.integration
def test_subscription_trial_ending_reminder(settings, engine) -> None:  # type: ignore[no-untyped-def]
    h = Harness(settings, engine, "Europe/Warsaw", "subscription_trial_ending", {"days_before": 2})
    h.subscription(43, "c9", "active", trial_end_at=utc(2026, 3, 12, 10, 0))
    h.subscription(44, "c10", "on-hold", trial_end_at=utc(2026, 3, 12, 10, 0))
    # the trial ends on Mar 12 in Warsaw; two days before is Mar 10, which starts at 23:00 UTC on Mar 9
    crossing(h, utc(2026, 3, 9, 23, 0))
    assert h.runs()[0]["period"] == "trial:43:2026-03-12"


@pytest.mark.integration
def test_card_expiring_in_the_month_before_expiry(settings, engine) -> None:  # type: ignore[no-untyped-def]
    h = Harness(settings, engine, "Europe/Warsaw", "card_expiring", {"days_before": 30})
    h.customer_meta(6, {"wooflow_card_expiry": '"04/26"'})
    # the card works until Apr 30; 30 days before is Mar 31, which starts at 22:00 UTC (CEST)
    crossing(h, utc(2026, 3, 30, 22, 0))
    assert h.runs()[0]["period"] == "card:2026-04"
    assert '"expiry":"04/2026"' in h.runs()[0]["command"]["context_json"]


@pytest.mark.integration
def test_conditions_and_frequency_apply_to_synthesised_triggers(settings, engine) -> None:  # type: ignore[no-untyped-def]
    h = Harness(settings, engine, "UTC", "birthday",
                conditions={"match": "all", "conditions": [{"field": "order_count", "operator": "gt", "value": 0}]})
    h.customer("c7", birth_month=5, birth_day=17)
    h.customer("c8", birth_month=5, birth_day=17)
    with engine.begin() as conn:  # only c7 has orders (the rule engine's customer state)
        conn.execute(text("INSERT INTO customer_state (store_id, customer_key, order_count) VALUES (:s, 'c7', 2)"),
                     {"s": h.store.id})
    assert h.scan(utc(2026, 5, 17, 8, 0)) == 1
    assert [r["customer_key"] for r in h.runs()] == ["c7"]


@pytest.mark.integration
def test_orders_feed_the_calendar_and_the_first_order_wins(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine)
    ckey = "g" + unique("")[:12].ljust(12, "0")

    def order(oid: int, created: datetime, status: str = "processing") -> dict[str, Any]:
        return {"store_id": store.id, "customer_key": ckey, "action": "created",
                "order": {"id": oid, "status": status, "date_created": created, "customer_id": 0, "total": "10.00",
                          "currency": "PLN", "billing": {"email": "x@example.com", "first_name": "X"}}}
    with engine.begin() as conn:
        record_order(conn, order(2, utc(2026, 2, 1)))
        record_order(conn, order(1, utc(2026, 1, 1)))  # late delivery of an older order
        record_order(conn, order(3, utc(2026, 3, 1), "failed"))  # not a purchase
        record_order(conn, order(2, utc(2026, 2, 1)))  # replay
        row = conn.execute(text("SELECT * FROM customer_calendar WHERE store_id = :s"),
                           {"s": store.id}).mappings().one()
    assert (row["first_order_at"], row["last_order_at"], row["last_order_id"]) == (utc(2026, 1, 1), utc(2026, 2, 1), 2)


@pytest.mark.unit
@pytest.mark.parametrize("raw,expected", [
    ("1990-05-17", (5, 17)), ("--05-17", (5, 17)), ("17.05.1990", (5, 17)), ("17/05", (5, 17)),
    ({"month": 2, "day": 29}, (2, 29)), ("1990-02-30", None), ("", None), ("soon", None),
])
def test_birthday_formats(raw: Any, expected: Any) -> None:
    assert parse_birthday(raw) == expected


@pytest.mark.unit
def test_card_expiry_formats_and_meta_keys() -> None:
    assert str(parse_card_expiry("04/26")) == "2026-04-30"
    assert str(parse_card_expiry("2028-02")) == "2028-02-29"
    assert str(parse_card_expiry({"month": 12, "year": 2027})) == "2027-12-31"
    assert parse_card_expiry("13/26") is None
    dates = meta_dates({"my_bday": '"1985-12-24"', "birthday": '"1990-01-01"'}, {"birthday": "my_bday"})
    assert (dates["birth_month"], dates["birth_day"]) == (12, 24)  # the store's own meta key wins
