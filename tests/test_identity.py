"""One person per shopper: the bridge's keying (pure), the consumer's merge arithmetic
(pure), and the merge against the real PostgreSQL — the fold, its tombstone, the races
with a guest batch, re-routing, replays, and the readers that follow a guest to the
customer it became (activity tables, consent, worker points). No Kafka, no processes;
tests/test_identity_e2e.py runs the whole pipeline."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from tests.pipeline import add_rule
from tests.support import make_store, wait_for
from wooflow.consumer.batch import BatchProcessor, Item
from wooflow.consumer.engine import RuleEngine
from wooflow.consumer.history import History, Paid
from wooflow.consumer.merge import (
    email_of,
    firing_changes,
    fold_agg,
    fold_customer,
    fold_firing,
    fold_views,
    guest_key,
    refold_customer,
)
from wooflow.consumer.rules import RuleCache
from wooflow.consumer.state import Aggregates, Customer, Firing
from wooflow.consumer.tiers import Level, Loyalty
from wooflow.producers.identity import ACCOUNT, ORDER, Found, Identities
from wooflow.producers.keys import email_hash
from wooflow.producers.normalise import Event, StoreInfo, normalise, normalise_action, plan_action

NOW = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
S = "s1"
INFO = StoreInfo(S, "UTC", "PLN")


def order(oid: int, cid: int, email: str, *, status: str = "processing", total: str = "50.00",
          minute: int = 0, topic: str = "order.created", info: StoreInfo = INFO) -> Event:
    payload = {"id": oid, "status": status, "currency": "PLN", "total": total, "customer_id": cid,
               "billing": {"email": email, "country": "PL"}, "line_items": [],
               "date_created_gmt": f"2026-03-01T10:{minute:02d}:00",
               "date_modified_gmt": f"2026-03-01T10:{minute:02d}:30"}
    return normalise(info, topic, payload, source="webhook", received_at=NOW)[0]


def customer(cid: int, email: str, info: StoreInfo = INFO) -> Event:
    payload = {"id": cid, "email": email, "date_created_gmt": "2026-03-01T09:00:00",
               "date_modified_gmt": "2026-03-01T09:00:00"}
    return normalise(info, "customer.created", payload, source="webhook", received_at=NOW)[0]


def deleted(oid: int, state: dict[str, Any] | None = None) -> Event:
    return normalise(INFO, "order.deleted", {"id": oid}, source="webhook", received_at=NOW, deleted_state=state)[0]


def g(email: str) -> str:
    return f"g{email_hash(email)}"


def keys(events: list[Event]) -> list[str]:
    return [e.record["customer_key"] for e in events]


# --- the bridge's keying ---------------------------------------------------------------------

@pytest.mark.unit
def test_a_guest_order_of_an_accounts_email_is_keyed_by_the_account() -> None:
    ids = Identities()
    batch = [customer(7, "Ala@Example.com"), order(501, 0, "ala@example.com ")]
    assert ids.lookup(batch).emails == {(S, email_hash("ala@example.com"))}  # nothing cached yet
    ids.found(Found())  # the database knows nothing either
    out, facts = ids.settle(batch)
    assert keys(out) == ["c7", "c7"]
    assert out[1].key == f"{S}:c7" and out[1].event_id == batch[1].event_id
    assert facts.identities == {(S, email_hash("ala@example.com")): (7, ACCOUNT)}
    assert facts.owners == {(S, 501): "c7"}
    ids.committed(facts)
    # the next batch needs no lookup: the account is cached, so is the order's owner
    later = [order(502, 0, "ALA@example.com"), deleted(501)]
    assert not ids.lookup(later)
    out, facts = ids.settle(later)
    assert keys(out) == ["c7", "c7"] and facts.owners == {(S, 502): "c7"}


@pytest.mark.unit
def test_deletions_and_failed_read_backs_take_the_orders_owner() -> None:
    ids = Identities()
    first, _ = ids.settle([order(601, 0, "guest@example.com")])
    ids.committed(_)
    assert keys(first) == [g("guest@example.com")]
    plan = plan_action("woocommerce_order_status_completed", 601)
    assert plan is not None
    readback_failed = normalise_action(INFO, plan, None, source="webhook", received_at=NOW)
    assert readback_failed.record["customer_key"] == "anon-o601"  # what normalisation alone can tell
    events = [deleted(601), readback_failed]
    assert not ids.lookup(events).orders  # the owner is cached
    out, _ = ids.settle(events)
    assert keys(out) == [g("guest@example.com")] * 2
    assert {e.key for e in out} == {first[0].key}
    # an order never seen: its REST state decides, else the documented fallback
    unseen = [deleted(700), deleted(701, {"id": 701, "customer_id": 3, "billing": {"email": "x@example.com"}})]
    need = ids.lookup(unseen)
    assert need.orders == {(S, 700), (S, 701)}
    ids.found(Found())
    out, facts = ids.settle(unseen)
    assert keys(out) == ["anon-o700", "c3"]
    assert facts.owners == {(S, 700): "anon-o700", (S, 701): "c3"}


@pytest.mark.unit
def test_an_owner_found_in_the_database_and_a_guest_owner_who_registered_since() -> None:
    ids = Identities()
    events = [deleted(801), deleted(802)]
    assert ids.lookup(events).orders == {(S, 801), (S, 802)}
    ids.found(Found(identities={(S, email_hash("b@example.com")): 12},
                    owners={(S, 801): "c5", (S, 802): g("b@example.com")}))
    out, _ = ids.settle(events)
    assert keys(out) == ["c5", "c12"]
    assert Found.of_rows([("o", S, "9", "c1"), ("i", S, "abc", "4")]) == \
        Found(identities={(S, "abc"): 4}, owners={(S, 9): "c1"})


@pytest.mark.unit
def test_a_billing_email_never_takes_an_accounts_email_and_is_not_trusted_from_cache() -> None:
    ids = Identities()
    _, facts = ids.settle([customer(7, "e@example.com")])
    ids.committed(facts)
    _, facts = ids.settle([order(1, 9, "e@example.com")])  # customer 9 typed 7's email at checkout
    assert facts.identities == {}
    out, _ = ids.settle([order(2, 0, "e@example.com")])
    assert keys(out) == ["c7"]
    # a billing email alone is written (source order), but only the database's answer keys guests
    ids2 = Identities()
    _, facts = ids2.settle([order(3, 9, "f@example.com")])
    assert facts.identities == {(S, email_hash("f@example.com")): (9, ORDER)}
    ids2.committed(facts)
    _, facts = ids2.settle([order(4, 9, "f@example.com")])
    assert facts.identities == {}  # known to be written
    guest = [order(5, 0, "f@example.com")]
    assert ids2.lookup(guest).emails == {(S, email_hash("f@example.com"))}
    ids2.found(Found(identities={(S, email_hash("f@example.com")): 9}))
    assert keys(ids2.settle(guest)[0]) == ["c9"]


@pytest.mark.unit
def test_an_order_first_seen_as_a_guests_follows_the_registration() -> None:
    ids = Identities()
    _, facts = ids.settle([order(901, 0, "h@example.com")])
    ids.committed(facts)
    out, facts = ids.settle([customer(44, "h@example.com"), order(901, 0, "h@example.com", topic="order.updated",
                                                                 minute=5), deleted(901)])
    assert keys(out) == ["c44", "c44", "c44"]
    assert facts.owners == {(S, 901): "c44"}
    # two stores never share an identity
    other = StoreInfo("s2", "UTC", "PLN")
    assert keys(ids.settle([order(1, 0, "h@example.com", info=other)])[0]) == [g("h@example.com")]


# --- the consumer's merge arithmetic ---------------------------------------------------------

def agg(n: int, total: str, f: int | None, last: int | None, p: int = 0, tier: str = "") -> Aggregates:
    return Aggregates(n, {"PLN": Decimal(total)} if total else {}, p, f, last, tier)


@pytest.mark.unit
def test_folding_aggregates_adds_orders_and_widens_first_and_last() -> None:
    c = agg(1, "100", 5_000, 5_000, p=10)
    gst = Aggregates(2, {"PLN": Decimal("30"), "EUR": Decimal("7")}, 3, 1_000, 9_000, "")
    both = fold_agg(c, gst)
    assert both == Aggregates(3, {"PLN": Decimal("130"), "EUR": Decimal("7")}, 13, 1_000, 9_000, "")
    back = fold_agg(both, gst, -1)
    assert (back.order_count, back.totals, back.points) == (1, {"PLN": Decimal("100"), "EUR": Decimal("0")}, 10)
    assert (back.first_order_ms, back.last_order_ms) == (1_000, 9_000)  # only ever widened
    assert fold_agg(Aggregates(), gst) == gst
    assert fold_views({"42": 2, "cat:3": 1}, {"42": 1, "7": 4}) == {"42": 3, "cat:3": 1, "7": 4}
    # the purchase history (a store keeping one): the guest's paid orders join the customer's
    mine, theirs = Paid(1, 5_000, Decimal("100"), "PLN", (11,)), Paid(2, 1_000, Decimal("30"), "PLN", (12,))
    with_history = fold_agg(Aggregates(history=History((mine,))), Aggregates(history=History((theirs,))))
    assert with_history.history == History((theirs, mine))
    assert fold_agg(with_history, Aggregates(history=History((theirs,))), -1).history == History((mine,))
    assert fold_agg(Aggregates(), Aggregates(history=History((theirs,)))).history == History((theirs,))
    assert fold_views({"42": 3}, {"42": 1}, -1) == {"42": 2}


@pytest.mark.unit
def test_folding_a_customer_takes_the_higher_tier_or_what_the_sum_reaches() -> None:
    lo = Loyalty(currency="PLN", levels=(Level("silver", Decimal(100)), Level("gold", Decimal(300))))
    c = Customer(S, "c1", agg(1, "150", 2_000, 2_000, tier="silver"), view_counts={"42": 1})
    gst = Customer(S, "g1", agg(2, "200", 1_000, 1_500, p=20, tier="silver"), email="a@example.com",
                   view_counts={"42": 2})
    fold_customer(c, gst, lo)
    assert c.agg.order_count == 3 and c.agg.totals == {"PLN": Decimal("350")} and c.agg.tier == "gold"
    assert c.tier_raised and c.dirty and c.view_counts == {"42": 3} and c.email == "a@example.com"
    assert c.points_delta == 0  # points move in the database, from the guest row as it is at save
    low = Customer(S, "c2", agg(0, "", None, None))
    fold_customer(low, Customer(S, "g2", agg(1, "10", 1, 1, tier="gold")), lo)
    assert low.agg.tier == "gold"  # a guest's tier set by hand above its totals is kept


@pytest.mark.unit
def test_refolding_at_save_replaces_what_was_read_by_what_the_guest_row_holds() -> None:
    then = Customer(S, "g", agg(1, "40", 1_000, 1_000, p=4))
    now = Customer(S, "g", agg(2, "90", 1_000, 8_000, p=9))
    c = Customer(S, "c", fold_agg(agg(1, "10", 5_000, 5_000), then.agg))
    refold_customer(c, then, now)  # a guest order saved between the read and the merge
    assert (c.agg.order_count, c.agg.totals, c.agg.last_order_ms, c.points_delta) == \
        (3, {"PLN": Decimal("100")}, 8_000, 9)
    lost = Customer(S, "c", fold_agg(agg(1, "10", 5_000, 5_000), then.agg))
    refold_customer(lost, then, None)  # another customer merged this guest first
    assert (lost.agg.order_count, lost.agg.totals, lost.points_delta) == (1, {"PLN": Decimal("10")}, 0)
    tomb = Customer(S, "c", agg(1, "10", 5_000, 5_000))
    refold_customer(tomb, None, None)  # no guest row at all: only the tombstone
    assert tomb.agg == agg(1, "10", 5_000, 5_000)


@pytest.mark.unit
def test_folding_frequency_limits_keeps_once_per_customer_once() -> None:
    gf = Firing(3, "gX", S, "e1", "e2", 2_000, 2)
    copied = fold_firing(None, gf, "c1")
    assert (copied.customer_key, copied.first_event_id, copied.last_event_id, copied.fired, copied.dirty) == \
        ("c1", "e1", "e2", 2, True)
    mine = Firing(3, "c1", S, "k1", "k1", 1_000, 1)
    both = fold_firing(mine, gf, "c1")
    assert (both.first_event_id, both.last_event_id, both.last_fired_ms, both.fired) == ("k1", "e2", 2_000, 3)
    newer_mine = fold_firing(Firing(3, "c1", S, "k1", "k9", 9_000, 1), gf, "c1")
    assert (newer_mine.last_event_id, newer_mine.last_fired_ms) == ("k9", 9_000)
    then = {3: gf}
    now = {3: Firing(3, "gX", S, "e1", "e5", 5_000, 3), 4: Firing(4, "gX", S, "e6", "e6", 6_000, 1)}
    changes = {f.rule_id: (f.last_event_id, f.fired) for f in firing_changes(then, now)}
    assert changes == {3: ("e5", 1), 4: ("e6", 1)}
    assert firing_changes(now, now) == []


@pytest.mark.unit
def test_only_a_stores_own_word_links_an_email() -> None:
    o = order(1, 3, "a@example.com").record
    c = customer(3, "b@example.com").record
    assert email_of("OrderEvent", o) == "a@example.com" and email_of("CustomerEvent", c) == "b@example.com"
    assert email_of("StorefrontEvent", {"email": "c@example.com"}) is None  # typed by anyone
    assert email_of("OrderEvent", deleted(1).record) is None
    assert guest_key(" A@Example.com") == g("a@example.com")


# --- the merge against PostgreSQL ------------------------------------------------------------

ONCE = {"name": "once per person", "trigger": "new_order", "frequency": {"once_per_customer": True},
        "actions": [{"type": "add_order_note", "params": {"note": "wooflow: once"}}]}
FIRST = {"name": "first", "trigger": "first_purchase",
         "actions": [{"type": "add_order_note", "params": {"note": "wooflow: first"}}]}
REPEAT = {"name": "repeat", "trigger": "repeat_purchase",
          "actions": [{"type": "add_order_note", "params": {"note": "wooflow: repeat"}}]}


class World:
    """A store with the three rules, and a processor the way the rule consumer runs it."""

    def __init__(self, engine: Any) -> None:
        self.db = engine
        self.store = make_store(engine)
        self.info = StoreInfo(self.store.id, "UTC", "PLN")
        self.rules: dict[str, int] = {str(r["name"]): add_rule(engine, self.store.id, r) for r in (ONCE, FIRST, REPEAT)}
        cache = RuleCache(engine, fallback_interval=0)
        cache.refresh(force=True)
        self.processor = BatchProcessor(RuleEngine(cache), engine, lambda _s: Loyalty())

    def items(self, *events: Event) -> list[Item]:
        return [Item(e.schema, e.record) for e in events]

    def run(self, *events: Event, save: bool = True, **kw: Any) -> Any:
        out = self.processor.run(self.items(*events), now=NOW, **kw)
        if save:
            with self.db.begin() as conn:
                out.lost = out.state.save(conn)
        return out

    def state(self, key: str) -> dict[str, Any]:
        return state_row(self.db, self.store.id, key)

    def firings(self, key: str) -> dict[int, int]:
        with self.db.connect() as conn:
            return dict(conn.execute(text("SELECT rule_id, fired FROM rule_firings WHERE customer_key = :k AND "
                                          "store_id = :s"), {"k": key, "s": self.store.id}).all())

    def order(self, *a: Any, **kw: Any) -> Event:
        return order(*a, info=self.info, **kw)

    def customer(self, cid: int, email: str) -> Event:
        return customer(cid, email, info=self.info)


def state_row(engine: Any, store_id: str, key: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM customer_state WHERE store_id = :s AND customer_key = :k"),
                           {"s": store_id, "k": key}).mappings().first()
    return dict(row) if row else {}


def rules_fired(w: World, out: Any) -> list[str]:
    names = {v: k for k, v in w.rules.items()}
    return sorted({names[c["rule_id"]] for _, c in [*out.commands, *out.planned] if c["rule_id"] in names})


@pytest.mark.integration
def test_a_guest_folds_into_the_customer_once_and_its_late_events_are_rerouted(engine) -> None:  # type: ignore[no-untyped-def]
    w = World(engine)
    e = "merge@example.com"
    assert rules_fired(w, w.run(w.order(1, 0, e, total="40.00"))) == ["first", "once per person"]
    assert rules_fired(w, w.run(w.order(2, 0, e, total="60.00", minute=1))) == ["repeat"]
    assert w.state(g(e))["order_count"] == 2
    with engine.begin() as conn:  # what actions did to the guest: a tag, bonus points
        conn.execute(text("UPDATE customer_state SET tags = '{vip}', points = points + 5 WHERE store_id = :s AND "
                          "customer_key = :k"), {"s": w.store.id, "k": g(e)})

    linked = w.run(w.customer(7, e))
    assert linked.rerouted == []
    c = w.state("c7")
    assert (c["order_count"], c["totals"], c["engine"]["g"]) == (2, {"PLN": "100.0000"}, [g(e)])
    assert c["tags"] == ["vip"] and c["points"] == 100 + 5  # a point per unit spent (default loyalty) + the bonus
    assert w.state(g(e))["merged_into"] == "c7"
    assert w.firings("c7") == {w.rules["once per person"]: 1}  # frequency-limited rules keep firings

    # a guest event produced before the link, met after it: not applied, re-routed
    late = w.order(3, 0, e, total="10.00", minute=2)
    out = w.run(late)
    assert [(it.event["event_id"], target) for it, target in out.rerouted] == [(late.event_id, "c7")]
    assert out.commands == [] and w.state(g(e))["order_count"] == 2
    # ... where it counts for the customer, once per customer holding across the merge
    moved = Event(late.topic, f"{w.store.id}:c7", late.schema, {**late.record, "customer_key": "c7"})
    out = w.run(moved)
    assert rules_fired(w, out) == ["repeat"] and out.skipped_by_frequency == 1
    assert w.state("c7")["order_count"] == 3
    again = w.run(moved)  # a re-delivery changes nothing, emits the same keys
    assert w.state("c7")["order_count"] == 3
    assert {c["idempotency_key"] for _, c in again.commands} == {c["idempotency_key"] for _, c in out.commands}
    # the link is remembered: later events of the customer do not look again
    assert w.run(w.order(4, 7, e, minute=3), save=False).state.merges == {}


@pytest.mark.integration
def test_the_customer_side_of_a_merge_that_races_a_guest_batch(engine) -> None:  # type: ignore[no-untyped-def]
    w = World(engine)
    e = "race@example.com"
    w.run(w.order(11, 0, e, total="40.00"))
    # the customer's batch reads the guest (one order), then a guest batch saves a second
    cside = w.run(w.customer(8, e), save=False)
    w.run(w.order(12, 0, e, total="60.00", minute=1))
    assert w.state(g(e))["order_count"] == 2
    with engine.begin() as conn:
        assert cside.state.save(conn) == {}
    c = w.state("c8")
    assert (c["order_count"], c["totals"]) == (2, {"PLN": "100.0000"}), "the merge folds the guest as it is then"
    assert w.firings("c8") == {w.rules["once per person"]: 1}


@pytest.mark.integration
def test_the_guest_side_of_a_merge_that_races_it(engine) -> None:  # type: ignore[no-untyped-def]
    w = World(engine)
    e = "late@example.com"
    w.run(w.order(21, 0, e, total="40.00"))
    gside = w.run(w.order(22, 0, e, total="60.00", minute=1), save=False)  # read before the merge
    w.run(w.customer(9, e))
    with engine.begin() as conn:
        lost = gside.state.save(conn)
    assert lost == {(w.store.id, g(e)): "c9"}, "the guest batch gives its key back, to be re-routed"
    assert w.state(g(e))["order_count"] == 1
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM order_state WHERE store_id = :s AND order_id = 22"),
                            {"s": w.store.id}).scalar() == 0, "its order waits for the re-routed event"
    assert w.state("c9")["order_count"] == 1
    # a guest with no row at all when the customer looked still gets a tombstone
    fresh = "fresh@example.com"
    w.run(w.customer(10, fresh))
    assert w.state(g(fresh))["merged_into"] == "c10"
    assert w.run(w.order(23, 0, fresh), save=False).rerouted[0][1] == "c10"


@pytest.mark.integration
def test_a_replay_applies_a_merged_guests_events_to_the_customer(engine) -> None:  # type: ignore[no-untyped-def]
    w = World(engine)
    e = "replay@example.com"
    first = w.order(31, 0, e, total="40.00")
    w.run(first)
    w.run(w.customer(11, e))
    w.processor.reroute = False  # what `wooflow replay` sets
    out = w.run(w.order(32, 0, e, total="5.00", minute=1), save=False, dry_run=True, plan_only=True)
    assert out.rerouted == []
    assert {it.event["customer_key"] for it, _ in out.planned} == {"c11"}
    assert rules_fired(w, out) == ["repeat"]
    # the guest event that fired "once" and "first" replays to the same keys, not to new decisions
    out = w.run(first, save=False, dry_run=True, plan_only=True)
    assert rules_fired(w, out) == ["first", "once per person"]


# --- readers that follow the guest ------------------------------------------------------------

@pytest.mark.integration
def test_the_scheduler_moves_a_guests_activity_to_the_customer(engine) -> None:  # type: ignore[no-untyped-def]
    from wooflow.scheduler.guests import People

    store = make_store(engine)
    e = "carts@example.com"
    gk = g(e)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO carts (store_id, session_id, customer_key, email, status, last_activity_at,"
                          " token) VALUES (:s, 'sess1', :g, :e, 'abandoned', now(), :t)"),
                     {"s": store.id, "g": gk, "e": e, "t": f"tok-{store.id}"})
        conn.execute(text("INSERT INTO storefront_activity (event_id, store_id, customer_key, session_id, kind, "
                          "subject, occurred_at) VALUES (:id, :s, :g, 'sess1', 'product_viewed', '42', now())"),
                     {"id": f"ev-{store.id}", "s": store.id, "g": gk})
        conn.execute(text("INSERT INTO customer_calendar (store_id, customer_key, email, first_order_at, "
                          "last_order_at, last_order_id) VALUES (:s, :g, :e, '2026-01-01', '2026-02-01', 5)"),
                     {"s": store.id, "g": gk, "e": e})
        conn.execute(text("INSERT INTO customer_calendar (store_id, customer_key, email, first_order_at, "
                          "last_order_at, last_order_id, birth_month, birth_day) "
                          "VALUES (:s, 'c5', :e, '2026-01-15', '2026-01-20', 6, 5, 17)"), {"s": store.id, "e": e})
        conn.execute(text("INSERT INTO attributions (store_id, rule_id, order_id, customer_key, event_id, revenue, "
                          "ordered_at) VALUES (:s, 1, 9, :g, 'e', 10, now())"), {"s": store.id, "g": gk})
        conn.execute(text("INSERT INTO trigger_firings (rule_id, customer_key, period, store_id, trigger, event_id, "
                          "fired_at) VALUES (:r, :g, 'p1', :s, 'abandoned_cart', 'e1', now()), "
                          "(:r, :g, 'p2', :s, 'abandoned_cart', 'e2', now()), "
                          "(:r, 'c5', 'p2', :s, 'abandoned_cart', 'e3', now())"),
                     {"s": store.id, "g": gk, "r": uuid.uuid4().int % 10**12})  # the table's key is not per store
        conn.execute(text("INSERT INTO customer_identities (store_id, email_hash, customer_id, source) "
                          "VALUES (:s, :h, 5, 'account'), (:s, :h2, 6, 'account')"),
                     {"s": store.id, "h": email_hash(e), "h2": email_hash("other@example.com")})
    people = People()
    ev = customer(5, e, StoreInfo(store.id, "UTC", "PLN")).record
    guest_view = {"store_id": store.id, "customer_key": g("other@example.com"), "event_type": "product_viewed"}
    with engine.begin() as conn:
        people.prepare(conn, [("CustomerEvent", ev), ("StorefrontEvent", guest_view)])
        assert people.person(conn, "StorefrontEvent", guest_view)[0]["customer_key"] == "c6"
        _, link = people.person(conn, "CustomerEvent", ev)
        people.linked(link)
        assert people.person(conn, "CustomerEvent", ev)[1] is None  # moved once
    with engine.connect() as conn:
        q = "SELECT {} FROM {} WHERE store_id = :s AND customer_key = :k"
        one = {"s": store.id}
        assert conn.execute(text(q.format("count(*)", "carts")), one | {"k": "c5"}).scalar() == 1
        assert conn.execute(text(q.format("count(*)", "storefront_activity")), one | {"k": "c5"}).scalar() == 1
        cal = conn.execute(text(q.format("first_order_at::date::text, last_order_id, birth_month",
                                         "customer_calendar")), one | {"k": "c5"}).one()
        assert tuple(cal) == ("2026-01-01", 5, 5)  # the guest's first and (later) last order, the customer's birthday
        assert conn.execute(text(q.format("count(*)", "customer_calendar")), one | {"k": gk}).scalar() == 0
        assert conn.execute(text(q.format("count(*)", "attributions")), one | {"k": "c5"}).scalar() == 1
        # the guest's firing of a period the customer has not fired moves; the other stays behind
        assert sorted(conn.execute(text(q.format("period", "trigger_firings")), one | {"k": "c5"}).scalars()) == \
            ["p1", "p2"]


@pytest.mark.integration
def test_consent_given_as_a_guest_counts_for_the_customer(engine, settings) -> None:  # type: ignore[no-untyped-def]
    from wooflow.people import canonical
    from wooflow.workers.consent import TableConsentChecker, record

    store = make_store(engine)
    gk = g("consent@example.com")
    record(engine, store.id, granted=True, customer_key=gk, source="checkout")
    checker = TableConsentChecker(settings, engine)
    assert not checker.check(store.id, "email", email=None, customer_key="c77", context={}).granted
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO customer_state (store_id, customer_key, merged_into) VALUES (:s, :g, 'c77')"),
                     {"s": store.id, "g": gk})
        assert canonical(conn, [(store.id, gk), (store.id, "c77")]) == {(store.id, gk): "c77"}
    assert checker.check(store.id, "email", email=None, customer_key="c77", context={}).granted
    record(engine, store.id, granted=False, customer_key="c77", source="unsubscribe_link")
    assert not checker.check(store.id, "email", email=None, customer_key=gk, context={}).granted


@pytest.mark.integration
def test_points_and_tags_for_a_merged_guest_land_on_the_customer(engine, settings) -> None:  # type: ignore[no-untyped-def]
    from wooflow.workers.testing import WorkerThread, command, produce

    store = make_store(engine)
    gk = g("points@example.com")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO customer_state (store_id, customer_key, merged_into) VALUES (:s, :g, 'c88')"),
                     {"s": store.id, "g": gk})
    produce(settings, [command(store_id=store.id, action_type="add_points", params={"points": 7}, customer_key=gk),
                       command(store_id=store.id, action_type="add_customer_tag", customer_key=gk,
                               params={"tag": "vip", "mirror": False})])
    with WorkerThread(settings):
        wait_for(lambda: (row := state_row(engine, store.id, "c88")) and row["points"] == 7 and row["tags"] == ["vip"],
                 30, 0.2, "points and the tag on the customer")
    assert (state_row(engine, store.id, gk)["points"], state_row(engine, store.id, gk)["tags"]) == (0, [])
