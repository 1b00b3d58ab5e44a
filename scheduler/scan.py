"""The periodic scan: who qualifies for a cart, behaviour or calendar trigger right now.

Every `scheduler_scan_interval_s` one scheduler (a PostgreSQL advisory lock elects it;
the others skip the round) runs:
- carts: active carts with items and a reachable customer, idle for the store's
  `abandoned_cart_after` (store settings; a delay like "30m" / "hour 1" or minutes;
  default 15 minutes) become `abandoned` and fire `abandoned_cart` — in the same
  transaction, so a crash cannot mark a cart without starting its workflows;
- behaviour: product_viewed, category_browsing, search_without_purchase over
  `storefront_activity`;
- calendar: customer_inactive, first_purchase_anniversary, birthday, card_expiring over
  `customer_calendar`, subscription_renewal and subscription_trial_ending over
  `subscription_state` (the rule consumer keeps it from woo.subscriptions), in the store's
  timezone ("today" is the store's local date).
Candidates go to `Firer` (scheduler/synth.py), which fires each rule once per period.
The calendar triggers accept being late (`grace_days`) so a scheduler that was down over
midnight still sends today's birthday emails, once.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import date, datetime, timedelta, timezone
from datetime import time as dtime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, text

from wooflow import holdout, metrics
from wooflow.clock import Clock
from wooflow.consumer.model import delay_seconds
from wooflow.consumer.rules import CompiledRule, RuleCache
from wooflow.scheduler import triggers as T
from wooflow.scheduler.emitter import store_scope
from wooflow.scheduler.recovery import recovery_url
from wooflow.scheduler.synth import Candidate, Firer, synthetic_event_id
from wooflow.settings import Settings
from wooflow.stores import Store, StoreCache

log = logging.getLogger(__name__)

SCAN_LOCK = 7_120_531  # pg advisory lock key: one scanning scheduler at a time
DEFAULT_ABANDONED_AFTER_S = 15 * 60
REACHABLE_SQL = "(customer_key ~ '^c[0-9]+$' OR customer_key ~ '^g[0-9a-f]+$')"
CART_BATCH = 500


def abandoned_after_s(store: Store) -> int:
    raw = (store.settings or {}).get("abandoned_cart_after")
    if raw is None or raw == "":
        return DEFAULT_ABANDONED_AFTER_S
    if isinstance(raw, (int, float)):
        return max(60, int(raw * 60))
    try:
        return max(60, delay_seconds(str(raw)))
    except ValueError:
        try:
            return max(60, int(float(str(raw)) * 60))
        except ValueError:
            log.error("store %s: abandoned_cart_after %r is not a duration; using 15 minutes", store.id, raw)
            return DEFAULT_ABANDONED_AFTER_S


def local_midnight_utc(d: date, tz: ZoneInfo) -> datetime:
    """The UTC instant at which local date `d` starts in `tz`."""
    return datetime.combine(d, dtime(0, 0), tz).astimezone(timezone.utc)


def _customer_ctx(row: dict[str, Any]) -> dict[str, Any]:
    return {"customer": {"customer_key": row.get("customer_key"), "id": row.get("customer_id"),
                         "email": row.get("email") or "", "first_name": row.get("first_name") or "",
                         "last_name": row.get("last_name") or ""}}


def _birthdays_on(days: list[date]) -> dict[tuple[int, int], date]:
    """(month, day) → the local date it is celebrated on. Feb 29 birthdays are
    celebrated on Feb 28 in common years."""
    out: dict[tuple[int, int], date] = {}
    for d in days:
        out[(d.month, d.day)] = d
        if d.month == 2 and d.day == 28 and not _leap(d.year):
            out[(2, 29)] = d
    return out


def _leap(y: int) -> bool:
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


_RULE_STORES = text("SELECT DISTINCT store_id, trigger FROM rules WHERE enabled AND trigger = ANY(CAST(:t AS text[]))")

_CART_STORES = text("SELECT DISTINCT store_id FROM carts WHERE status = 'active'")

_DUE_CARTS = text(f"""
SELECT c.*, k.first_name AS k_first_name, k.last_name AS k_last_name, k.customer_id AS k_customer_id,
       k.email AS k_email
FROM carts c
LEFT JOIN customer_calendar k ON k.store_id = c.store_id AND k.customer_key = c.customer_key
WHERE c.store_id = :store AND c.status = 'active' AND c.last_activity_at <= :cutoff
  AND c.customer_key IS NOT NULL AND jsonb_array_length(c.items) > 0
  AND {REACHABLE_SQL.replace('customer_key', 'c.customer_key')}
ORDER BY c.last_activity_at
LIMIT :limit
FOR UPDATE OF c SKIP LOCKED
""")

_ABANDON = text("""
UPDATE carts SET status = 'abandoned', abandoned_at = :now, abandon_event_id = :event_id, updated_at = now()
WHERE store_id = :store AND session_id = :session
""")


class Scanner:
    def __init__(self, settings: Settings, db: Engine, rules: RuleCache, firer: Firer, clock: Clock,
                 stores: StoreCache) -> None:
        self.settings = settings
        self.db = db
        self.rules = rules
        self.firer = firer
        self.clock = clock
        self.stores = stores

    # --- the round --------------------------------------------------------------------
    def scan_once(self, now: datetime | None = None) -> dict[str, int] | None:
        """One scan (None when another scheduler holds the scan lock)."""
        scope = store_scope(self.settings)
        # schedulers of the same store scope take turns; different scopes scan side by side
        key = SCAN_LOCK if scope is None else SCAN_LOCK + zlib.crc32(",".join(sorted(scope)).encode())
        with self.db.connect() as lock_conn:
            if not lock_conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
                return None
            try:
                return self._scan(now or self.clock.now())
            finally:
                lock_conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                lock_conn.commit()

    def _scan(self, now: datetime) -> dict[str, int]:
        self.rules.refresh()
        with self.db.connect() as conn:
            pairs = conn.execute(_RULE_STORES, {"t": list(T.ALL)}).all()
        scope = store_scope(self.settings)
        by_trigger: dict[str, list[str]] = defaultdict(list)
        for store_id, trigger in pairs:
            if scope is None or store_id in scope:
                by_trigger[trigger].append(store_id)
        stats: dict[str, int] = {}
        t0 = time.perf_counter()
        with self.db.begin() as conn:  # orders and exposures recorded at the same instant (wooflow/holdout.py)
            stats["holdout_refreshed"] = holdout.refresh_recent(conn)
        stats["abandoned_cart"] = self.scan_carts(now)
        metrics.scheduler_scan_seconds.labels("carts").observe(time.perf_counter() - t0)
        for trigger in T.BEHAVIOUR_TRIGGERS + T.TIME_TRIGGERS:
            t0 = time.perf_counter()
            n = 0
            for store_id in by_trigger.get(trigger, ()):
                store = self.stores.get(store_id)
                if store is None:
                    continue
                for rule in self.rules.for_trigger(store_id, trigger):
                    try:
                        n += self.scan_rule(store, rule, trigger, now)
                    except Exception:  # one bad rule must not stop the others
                        log.exception("scan of rule %s (%s) failed", rule.id, trigger)
            stats[trigger] = n
            metrics.scheduler_scan_seconds.labels(trigger).observe(time.perf_counter() - t0)
        self.purge(now)
        return stats

    # --- carts ------------------------------------------------------------------------
    def scan_carts(self, now: datetime, store_id: str | None = None) -> int:
        fired = 0
        scope = store_scope(self.settings)
        with self.db.connect() as conn:
            stores = [store_id] if store_id else [r[0] for r in conn.execute(_CART_STORES)
                                                  if scope is None or r[0] in scope]
        for store_id in stores:
            store = self.stores.get(store_id)
            if store is None:
                continue
            cutoff = now - timedelta(seconds=abandoned_after_s(store))
            while True:
                with self.db.begin() as conn:
                    rows = [dict(r) for r in conn.execute(_DUE_CARTS, {"store": store_id, "cutoff": cutoff,
                                                                        "limit": CART_BATCH}).mappings()]
                    if not rows:
                        break
                    fired += self._abandon(conn, store, rows, now)
                if len(rows) < CART_BATCH:
                    break
        return fired

    def _abandon(self, conn: Connection, store: Store, rows: list[dict[str, Any]], now: datetime) -> int:
        rules = self.rules.for_trigger(store.id, "abandoned_cart")
        cands: list[Candidate] = []
        for r in rows:
            period = f"cart:{r['session_id']}:{r['last_activity_at'].isoformat()}"
            event_id = synthetic_event_id(store.id, r["customer_key"], "abandoned_cart", period)
            conn.execute(_ABANDON, {"store": store.id, "session": r["session_id"], "now": now, "event_id": event_id})
            metrics.carts_total.labels(store.id, "abandoned").inc()
            email = r["email"] or r["k_email"] or ""
            cart = {"session_id": r["session_id"], "items": r["items"], "item_count": sum(
                int(i.get("quantity") or 0) for i in r["items"]), "total": str(r["total"] or "0"),
                "currency": r["currency"] or store.currency, "email": email,
                "recovery_url": recovery_url(self.settings, r["token"]), "token": r["token"]}
            customer = {"customer_key": r["customer_key"], "id": r["customer_id"] or r["k_customer_id"],
                        "email": email, "first_name": r["first_name"] or r["k_first_name"] or "",
                        "last_name": r["k_last_name"] or ""}
            cands.append(Candidate(store.id, r["customer_key"], period, r["last_activity_at"], r["session_id"],
                                   {"cart": cart, "customer": customer}, "cart", r["session_id"]))
        fired = 0
        for rule in rules:
            try:
                opts = T.validate_options("abandoned_cart", rule.spec.trigger_options)
            except ValueError as exc:
                log.error("rule %s: %s", rule.id, exc)
                continue
            mine = [c for c in cands if _worth_it(c.context["cart"]["total"], opts)]
            fired += len(self.firer.fire(conn, store, rule, "abandoned_cart", mine, now))
        return fired

    # --- behaviour and calendar -------------------------------------------------------
    def scan_rule(self, store: Store, rule: CompiledRule, trigger: str, now: datetime) -> int:
        try:
            opts = T.validate_options(trigger, rule.spec.trigger_options)
        except ValueError as exc:
            log.error("rule %s: %s", rule.id, exc)
            return 0
        tz = ZoneInfo(store.timezone or "UTC")
        with self.db.begin() as conn:
            cands = QUALIFIERS[trigger](conn, store, rule, opts, now, tz)
            return len(self.firer.fire(conn, store, rule, trigger, cands, now))

    # --- housekeeping -------------------------------------------------------------------
    def purge(self, now: datetime) -> None:
        cutoff = now - timedelta(days=self.settings.activity_retention_days)
        with self.db.begin() as conn:
            conn.execute(text("""
                DELETE FROM storefront_activity WHERE event_id IN (
                    SELECT event_id FROM storefront_activity WHERE occurred_at < :cutoff LIMIT 10000)
            """), {"cutoff": cutoff})


def _worth_it(total: Any, opts: Any) -> bool:
    """The abandoned_cart trigger's `min_total` (none: every cart)."""
    return opts.min_total is None or float(total or 0) >= float(opts.min_total)


_CUSTOMERS_CART = text("""
SELECT status, last_activity_at, total, jsonb_array_length(items) AS items FROM carts
WHERE store_id = :store AND customer_key = :key ORDER BY last_activity_at DESC LIMIT 1
""")


def cart_verdict(conn: Connection, store: Store, customer_key: str, opts: Any, now: datetime) -> tuple[bool, str]:
    """Would the next cart scan abandon this customer's latest cart and fire `abandoned_cart`
    (with options `opts`)? Read-only: the rules API's dry run."""
    cart = conn.execute(_CUSTOMERS_CART, {"store": store.id, "key": customer_key}).mappings().first()
    if cart is None:
        return False, "wooflow knows no cart of this customer (storefront cart events)"
    if cart["status"] != "active" or not cart["items"]:
        return False, f"the customer's latest cart is {cart['status'] if cart['items'] else 'empty'}"
    if not _worth_it(cart["total"], opts):
        return False, f"the cart's total {cart['total']} is below the trigger's min_total {opts.min_total}"
    due = cart["last_activity_at"] + timedelta(seconds=abandoned_after_s(store))
    if due > now:
        return False, f"the cart counts as abandoned from {due.isoformat()} if nothing happens until then"
    return True, "the next scan marks the customer's cart abandoned and fires the trigger"


# --- behaviour and calendar: who qualifies, per trigger ------------------------------
# Read-only candidate queries (a rule's options, the store's timezone, `now`), shared by the
# scan, which fires them, and the rules API's dry run, which only reports them.
# `who` narrows a query to one customer key (the dry run); the scan asks for everyone.
Qualifier = Callable[..., list[Candidate]]


def _one_customer(alias: str) -> str:
    return f"(CAST(:who AS text) IS NULL OR {alias}.customer_key = :who)"


def _calendar(conn: Connection, store: Store, who: str | None, where: str, **params: Any) -> Iterable[Any]:
    """`customer_calendar` rows of the store (or of `who`) that match `where`."""
    return conn.execute(text(f"""
        SELECT k.* FROM customer_calendar k
        WHERE k.store_id = :store AND {_one_customer("k")} AND {where}
    """), {"store": store.id, "who": who, **params}).mappings()


def _product_viewed(conn: Connection, store: Store, rule: CompiledRule, o: Any, now: datetime,
                    tz: ZoneInfo, who: str | None = None) -> list[Candidate]:
    return _views(conn, store, rule, "product_viewed", "subject", o.times, o.within, o.cooldown,
                  o.product_id, now, who)


def _category_browsing(conn: Connection, store: Store, rule: CompiledRule, o: Any, now: datetime,
                       tz: ZoneInfo, who: str | None = None) -> list[Candidate]:
    return _views(conn, store, rule, "category_browsing", "category", o.times, o.within, o.cooldown,
                  o.category_id, now, who)


def _views(conn: Connection, store: Store, rule: CompiledRule, trigger: str, column: str, times: int,
           within: str, cooldown: str | None, only: int | None, now: datetime, who: str | None) -> list[Candidate]:
    since = now - timedelta(seconds=T.seconds(within))
    cool_since = now - timedelta(seconds=T.seconds(cooldown or within))
    kinds = ["product_viewed"] if trigger == "product_viewed" else ["category_viewed", "product_viewed"]
    rows = conn.execute(text(f"""
        SELECT a.customer_key, a.{column} AS subject, count(*) AS n, max(a.occurred_at) AS last_at,
               k.customer_id, k.email, k.first_name, k.last_name
        FROM storefront_activity a
        LEFT JOIN customer_calendar k ON k.store_id = a.store_id AND k.customer_key = a.customer_key
        WHERE a.store_id = :store AND a.kind = ANY(CAST(:kinds AS text[])) AND a.occurred_at > :since
          AND {_one_customer("a")}
          AND a.occurred_at <= :now AND a.{column} <> '' AND (CAST(:only AS text) IS NULL OR a.{column} = :only)
          AND {REACHABLE_SQL.replace('customer_key', 'a.customer_key')}
          AND NOT EXISTS (SELECT 1 FROM trigger_firings f WHERE f.rule_id = :rule AND f.customer_key = a.customer_key
                          AND f.subject = a.{column} AND f.fired_at > :cool_since)
        GROUP BY a.customer_key, a.{column}, k.customer_id, k.email, k.first_name, k.last_name
        HAVING count(*) >= :times
    """), {"store": store.id, "who": who, "kinds": kinds, "since": since, "now": now,
           "only": str(only) if only else None, "rule": rule.id, "cool_since": cool_since, "times": times}).mappings()
    what = "product" if trigger == "product_viewed" else "category"
    out = []
    for r in rows:
        ctx = _customer_ctx(dict(r)) | {what: {"id": int(r["subject"]) if str(r["subject"]).isdigit()
                                               else r["subject"], "views": int(r["n"])}}
        out.append(Candidate(store.id, r["customer_key"], f"{r['subject']}@{r['last_at'].isoformat()}",
                             r["last_at"], str(r["subject"]), ctx, what, str(r["subject"])))
    return out


def _search_without_purchase(conn: Connection, store: Store, rule: CompiledRule, o: Any, now: datetime,
                             tz: ZoneInfo, who: str | None = None) -> list[Candidate]:
    wait = timedelta(seconds=T.seconds(o.wait))
    cooldown = timedelta(seconds=T.seconds(o.cooldown))
    rows = conn.execute(text(f"""
        SELECT a.customer_key, max(a.occurred_at) AS last_at,
               (array_agg(a.subject ORDER BY a.occurred_at DESC))[1:5] AS queries,
               k.customer_id, k.email, k.first_name, k.last_name
        FROM storefront_activity a
        LEFT JOIN customer_calendar k ON k.store_id = a.store_id AND k.customer_key = a.customer_key
        WHERE a.store_id = :store AND a.kind = 'search' AND a.occurred_at <= :until AND a.occurred_at > :since
          AND {_one_customer("a")}
          AND (k.last_order_at IS NULL OR k.last_order_at < a.occurred_at)
          AND {REACHABLE_SQL.replace('customer_key', 'a.customer_key')}
          AND NOT EXISTS (SELECT 1 FROM trigger_firings f WHERE f.rule_id = :rule AND f.customer_key = a.customer_key
                          AND f.fired_at > :cool_since)
        GROUP BY a.customer_key, k.customer_id, k.email, k.first_name, k.last_name
    """), {"store": store.id, "who": who, "until": now - wait, "since": now - wait - cooldown, "rule": rule.id,
           "cool_since": now - cooldown}).mappings()
    return [Candidate(store.id, r["customer_key"], f"search@{r['last_at'].isoformat()}", r["last_at"], "search",
                      _customer_ctx(dict(r)) | {"search": {"queries": list(r["queries"] or []),
                                                           "last_query": (r["queries"] or [""])[0]}})
            for r in rows]


def _customer_inactive(conn: Connection, store: Store, rule: CompiledRule, o: Any, now: datetime,
                       tz: ZoneInfo, who: str | None = None) -> list[Candidate]:
    today = now.astimezone(tz).date()
    # inactive for N days ⇔ the last order's local date is on or before today − N
    cutoff = local_midnight_utc(today - timedelta(days=o.days - 1), tz)
    rows = _calendar(conn, store, who, """k.last_order_at IS NOT NULL AND k.last_order_at < :cutoff
          AND NOT EXISTS (SELECT 1 FROM trigger_firings f WHERE f.rule_id = :rule
                          AND f.customer_key = k.customer_key AND f.period = 'order:' || k.last_order_id)""",
                     cutoff=cutoff, rule=rule.id)
    out = []
    for r in rows:
        last_local = r["last_order_at"].astimezone(tz).date()
        ctx = _customer_ctx(dict(r)) | {"inactive": {"days": (today - last_local).days,
                                                     "last_order_at": r["last_order_at"],
                                                     "last_order_id": r["last_order_id"]}}
        out.append(Candidate(store.id, r["customer_key"], f"order:{r['last_order_id']}", now, "", ctx))
    return out


def _calendar_days(today: date, offset: int, grace: int) -> list[date]:
    return [today + timedelta(days=offset - i) for i in range(grace + 1)]


def _first_purchase_anniversary(conn: Connection, store: Store, rule: CompiledRule, o: Any,
                                now: datetime, tz: ZoneInfo, who: str | None = None) -> list[Candidate]:
    today = now.astimezone(tz).date()
    targets = _birthdays_on(_calendar_days(today, 0, o.grace_days))
    if not targets:
        return []
    rows = conn.execute(text(f"""
        SELECT k.*, EXTRACT(MONTH FROM k.first_order_at AT TIME ZONE :tz)::int AS m,
               EXTRACT(DAY FROM k.first_order_at AT TIME ZONE :tz)::int AS d,
               EXTRACT(YEAR FROM k.first_order_at AT TIME ZONE :tz)::int AS y
        FROM customer_calendar k
        WHERE k.store_id = :store AND k.first_order_at IS NOT NULL
          AND {_one_customer("k")}
          AND (EXTRACT(MONTH FROM k.first_order_at AT TIME ZONE :tz)::int,
               EXTRACT(DAY FROM k.first_order_at AT TIME ZONE :tz)::int)
              IN (SELECT * FROM unnest(CAST(:ms AS int[]), CAST(:ds AS int[])))
    """), {"store": store.id, "who": who, "tz": store.timezone or "UTC", "ms": [m for m, _ in targets],
           "ds": [d for _, d in targets]}).mappings()
    out = []
    for r in rows:
        on = targets[(r["m"], r["d"])]
        years = on.year - r["y"]
        if years < 1:
            continue
        ctx = _customer_ctx(dict(r)) | {"anniversary": {"years": years, "first_order_at": r["first_order_at"],
                                                        "date": on.isoformat()}}
        out.append(Candidate(store.id, r["customer_key"], str(on.year), now, "", ctx))
    return _not_fired(conn, rule, out)


def _birthday(conn: Connection, store: Store, rule: CompiledRule, o: Any, now: datetime,
              tz: ZoneInfo, who: str | None = None) -> list[Candidate]:
    today = now.astimezone(tz).date()
    # a birthday N days ahead: the target dates are today + N (and a few days back, if late)
    targets = _birthdays_on(_calendar_days(today, o.days_before, o.grace_days))
    rows = _calendar(conn, store, who, """k.birth_month IS NOT NULL
          AND (k.birth_month, k.birth_day) IN (SELECT * FROM unnest(CAST(:ms AS int[]), CAST(:ds AS int[])))""",
                     ms=[m for m, _ in targets], ds=[d for _, d in targets])
    out = []
    for r in rows:
        on = targets[(r["birth_month"], r["birth_day"])]
        ctx = _customer_ctx(dict(r)) | {"birthday": {"date": on.isoformat(), "days_before": o.days_before}}
        out.append(Candidate(store.id, r["customer_key"], str(on.year), now, "", ctx))
    return _not_fired(conn, rule, out)


def _subscription_renewal(conn: Connection, store: Store, rule: CompiledRule, o: Any, now: datetime,
                          tz: ZoneInfo, who: str | None = None) -> list[Candidate]:
    return _subscriptions_due(conn, store, rule, "next_payment_at", "renewal", o.days_before, now, tz, who)


def _subscription_trial_ending(conn: Connection, store: Store, rule: CompiledRule, o: Any, now: datetime,
                               tz: ZoneInfo, who: str | None = None) -> list[Candidate]:
    return _subscriptions_due(conn, store, rule, "trial_end_at", "trial", o.days_before, now, tz, who)


def _subscriptions_due(conn: Connection, store: Store, rule: CompiledRule, column: str, kind: str, days: int,
                       now: datetime, tz: ZoneInfo, who: str | None) -> list[Candidate]:
    """Active subscriptions (`subscription_state`, kept by the rule consumer from
    woo.subscriptions) whose date `column` falls on a local day within [today, today + N]:
    a reminder N days ahead, or late the same week if the rule came later; once per
    subscription and date (the period). A subscription cancelled, on hold or expired is
    not active: no reminder."""
    today = now.astimezone(tz).date()
    rows = conn.execute(text(f"""
        SELECT s.subscription_id, s.customer_key, s.email, s.{column} AS due_at, s.billing_period, s.billing_interval,
               s.total, s.currency, s.product_ids, k.customer_id, k.first_name, k.last_name, k.email AS k_email
        FROM subscription_state s
        LEFT JOIN customer_calendar k ON k.store_id = s.store_id AND k.customer_key = s.customer_key
        WHERE s.store_id = :store AND s.status = 'active' AND {_one_customer("s")}
          AND s.{column} >= :start AND s.{column} < :end
    """), {"store": store.id, "who": who, "start": local_midnight_utc(today, tz),
           "end": local_midnight_utc(today + timedelta(days=days + 1), tz)}).mappings()
    out = []
    for r in rows:
        day = r["due_at"].astimezone(tz).date()
        row = dict(r) | {"email": r["email"] or r["k_email"] or ""}
        if row["customer_id"] is None and str(r["customer_key"]).startswith("c"):
            row["customer_id"] = int(str(r["customer_key"])[1:]) if str(r["customer_key"])[1:].isdigit() else None
        sid = int(r["subscription_id"])
        ctx = _customer_ctx(row) | {"subscription": {
            "id": sid, f"{kind}_at": r["due_at"], f"{kind}_date": day.isoformat(), "days_left": (day - today).days,
            "billing_period": r["billing_period"], "billing_interval": r["billing_interval"],
            "total": str(r["total"]), "currency": r["currency"], "product_ids": list(r["product_ids"] or [])}}
        out.append(Candidate(store.id, r["customer_key"], f"{kind}:{sid}:{day.isoformat()}", now, str(sid), ctx,
                             "subscription", str(sid)))
    return _not_fired(conn, rule, out)


def _card_expiring(conn: Connection, store: Store, rule: CompiledRule, o: Any, now: datetime,
                   tz: ZoneInfo, who: str | None = None) -> list[Candidate]:
    today = now.astimezone(tz).date()
    rows = _calendar(conn, store, who, "k.card_expiry >= :today AND k.card_expiry <= :until",
                     today=today, until=today + timedelta(days=o.days_before))
    out = []
    for r in rows:
        exp: date = r["card_expiry"]
        ctx = _customer_ctx(dict(r)) | {"card": {"expiry": f"{exp.month:02d}/{exp.year}", "expires_on": exp.isoformat(),
                                                 "days_left": (exp - today).days}}
        out.append(Candidate(store.id, r["customer_key"], f"card:{exp.isoformat()[:7]}", now, "", ctx))
    return _not_fired(conn, rule, out)


def _not_fired(conn: Connection, rule: CompiledRule, cands: list[Candidate]) -> list[Candidate]:
    """Drop candidates whose period already fired (saves the rule evaluation)."""
    if not cands:
        return cands
    done = {(r[0], r[1]) for r in conn.execute(text("""
        SELECT customer_key, period FROM trigger_firings
        WHERE rule_id = :rule AND customer_key = ANY(CAST(:keys AS text[]))
    """), {"rule": rule.id, "keys": [c.customer_key for c in cands]})}
    return [c for c in cands if (c.customer_key, c.period) not in done]



QUALIFIERS: dict[str, Qualifier] = {
    "product_viewed": _product_viewed, "category_browsing": _category_browsing,
    "search_without_purchase": _search_without_purchase, "customer_inactive": _customer_inactive,
    "first_purchase_anniversary": _first_purchase_anniversary, "birthday": _birthday,
    "subscription_renewal": _subscription_renewal, "subscription_trial_ending": _subscription_trial_ending,
    "card_expiring": _card_expiring,
}
