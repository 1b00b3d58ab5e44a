"""After the faults: drain the pipeline, then hold what arrived against the ledger.

Draining waits for each stage in turn, every wait a condition with a deadline: the
store's webhook queue idle, the browser's refused batches accepted again, a complete
poller pass after that, the bridge's outbox empty, the rule consumers and the scheduler's
activity reader caught up; then the simulated clock jumps two hours (every delayed step
due, every open cart abandoned) and the run waits until the whole pipeline is quiet —
no lag in any group, no deferred command, no claim still running, no step pending — twice
in a row.

The checks: every *must* effect exactly once, nothing beyond the *may* ones (notes and
coupons in the store, emails at the SMTP server, deliveries at the webhook receiver,
each webhook signed); one final `execution_logs` row per idempotency key, and one for
every finished claim; dead letters for the injected poison only (and for every poison,
by every stage that reads its topic); the outbox empty; no lag; no secret in any role's
log.
"""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from wooflow.clock import FileClock
from wooflow.kafka.lag import role_subscription
from wooflow.ops.chaos import plan as P
from wooflow.ops.chaos import traffic as T
from wooflow.ops.chaos.world import Mail, Mailbox, Receiver
from wooflow.settings import Settings

Say = Callable[[str], None]
FINAL = ("succeeded", "skipped", "failed", "dead_lettered")
GROUP_ROLES = ("rules", "workers", "sink", "scheduler")
# Which stages read each poison's topic: each must dead-letter it (and nothing else may).
POISON_STAGES = {"woo.orders": {"rules", "scheduler"}, "woo.customers": {"rules", "scheduler"},
                 "woo.storefront": {"rules", "scheduler"}, "automation.commands": {"workers"},
                 "automation.logs": {"sink"}, "unknown_action": {"workers"}}


class DrainTimeout(RuntimeError):
    pass


def wait(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = cond()
        except Exception as exc:  # a service coming back: ask again
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise DrainTimeout(f"{what}: not within {timeout:.0f}s (last answer: {last!r})")


# --- the pipeline's state ------------------------------------------------------------------


def lags(s: Settings) -> dict[str, int]:
    """Lag of every consuming role's group (messages not yet committed)."""
    from wooflow.kafka.groups import lag

    out = {}
    for role in GROUP_ROLES:
        sub = role_subscription(role, s)
        assert sub is not None
        out[role] = sum(p.lag for p in lag(s, sub.group, list(sub.topics), timeout=10))
    return out


def backlog(engine: Engine, store_id: str, clock_now: datetime) -> dict[str, int]:
    """What still waits in PostgreSQL for the store."""
    q = {
        "outbox": "SELECT count(*) FROM bridge_outbox WHERE store_id = :s",
        "deferred": "SELECT count(*) FROM deferred_commands WHERE store_id = :s",
        "claims_open": "SELECT count(*) FROM action_executions WHERE store_id = :s AND status IN ('running', "
                       "'retry_wait')",
        "steps_due": "SELECT count(*) FROM scheduled_steps WHERE store_id = :s AND status = 'pending' "
                     "AND due_at <= :now",
        "carts_open": "SELECT count(*) FROM carts WHERE store_id = :s AND status = 'active' AND customer_key IS NOT "
                      "NULL AND jsonb_array_length(items) > 0",
    }
    with engine.connect() as conn:
        return {k: int(conn.execute(text(sql), {"s": store_id, "now": clock_now}).scalar_one()) for k, sql in q.items()}


def polled_since(engine: Engine, store_id: str, since: datetime) -> bool:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT polled_at FROM bridge_poller_state WHERE store_id = :s"),
                            {"s": store_id}).scalars().all()
    return bool(rows) and all(r >= since for r in rows)


@dataclass
class Drain:
    settings: Settings
    engine: Engine
    store_id: str
    clock: FileClock
    say: Say
    timeline: dict[str, float] = field(default_factory=dict)
    last_state: dict[str, int] = field(default_factory=dict)  # what the quiet wait last saw busy

    def run(self, store: Any, traffic: T.Traffic, timeout: float) -> None:
        t0 = time.monotonic()

        def left() -> float:
            return max(5.0, timeout - (time.monotonic() - t0))

        def step(name: str) -> None:
            self.timeline[name] = round(time.monotonic() - t0, 1)
            self.say(f"drain   {self.timeline[name]:6.1f}s  {name}")

        wait(lambda: store.wait_idle(1.0), left(), "the store's webhook deliveries")
        step("webhook deliveries done")
        try:
            wait(lambda: traffic.retry_refused() == 0, min(60.0, left()), "refused storefront batches")
        except DrainTimeout:
            self.say(f"drain   {traffic.give_up()} storefront batches never accepted: their carts are no must")
        step("storefront batches accepted")
        after = datetime.now(timezone.utc)
        wait(lambda: polled_since(self.engine, self.store_id, after), left(), "a poller pass after the traffic")
        step("poller pass complete")
        wait(lambda: backlog(self.engine, self.store_id, self.clock.now())["outbox"] == 0, left(), "the outbox")
        wait(lambda: (lg := lags(self.settings))["rules"] == 0 and lg["scheduler"] == 0, left(),
             "rule consumers and the activity reader to catch up")
        step("events consumed")
        self.clock.set(datetime.now(timezone.utc) + timedelta(hours=2))
        step("clock +2h: delayed steps due, open carts abandoned")
        self.quiet(left())
        step("pipeline quiet")

    def quiet(self, timeout: float) -> None:
        streak = [0]

        def calm() -> bool:
            now = self.clock.now()
            state = {**backlog(self.engine, self.store_id, now), **lags(self.settings)}
            streak[0] = streak[0] + 1 if not any(state.values()) else 0
            if streak[0] == 0:
                self.last_state = state
            return streak[0] >= 2

        wait(calm, timeout, "the pipeline to go quiet", interval=1.0)


# --- the comparison --------------------------------------------------------------------------


@dataclass
class Effects:
    expected: int = 0  # must
    optional: int = 0  # may
    observed: int = 0
    lost: int = 0
    duplicated: int = 0  # distinct effects beyond one
    repeated: int = 0  # the same email / delivery again (same Message-ID / Idempotency-Key)
    repeated_twice: int = 0  # effects repeated more than once: beyond what the README allows
    unexpected: int = 0
    by_kind: dict[str, dict[str, int]] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def note(self, kind: str, what: str, n: int = 1, example: str = "") -> None:
        k = self.by_kind.setdefault(kind, Counter())
        k[what] += n
        if example and len(self.examples) < 40:
            self.examples.append(f"{what} {kind}: {example}")


def compare(ledger: T.Ledger, store: Any, mailbox: Mailbox, receiver: Receiver) -> Effects:
    e = Effects()
    with store.lock:
        notes = Counter(n.note for n in store.notes.values() if n.note.startswith("chaos:"))
        coupons = [(c.code.upper(), [x.lower() for x in c.email_restrictions]) for c in store.coupons.values()
                   if c.code.upper().startswith(f"{T.COUPON_PREFIX}-")]
    mails = mailbox.got.by_subject()
    hooks = receiver.got.by_subject()
    coupon_mails: dict[str, list[tuple[Mail, str]]] = defaultdict(list)
    for subject, ms in mails.items():
        m = re.match(r"^(chaos:coupon:\d+):(.*)$", subject)
        if m:
            coupon_mails[m.group(1)] += [(x, m.group(2)) for x in ms]
    matched_mail: set[str] = set()
    codes = {code for code, _ in coupons}
    coupons_due: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # email → [must, may]
    for x in ledger.all():
        e.expected += x.must
        e.optional += not x.must
        if x.kind in (T.ORDER, T.LATER):
            _judge(e, x, notes.get(x.subject, 0), 0)
        elif x.kind == T.HOOK:
            posted = hooks.get(x.subject, [])
            keys = {d.key for d in posted}
            _judge(e, x, len(keys), len(posted) - len(keys))
            for d in posted:
                if not d.signed:
                    e.note(x.kind, "unsigned", example=x.subject)
        elif x.kind == T.COUPON_MAIL:
            with_code = coupon_mails.get(x.subject, [])
            ids = {m.message_id for m, _ in with_code}
            _judge(e, x, len(ids), len(with_code) - len(ids))
            matched_mail.add(x.subject)
            for _, code in with_code:
                if code.upper() not in codes:
                    e.note(x.kind, "code not in the store", example=f"{x.subject} {code}")
            coupons_due[x.email.lower()][0 if x.must else 1] += 1
        else:
            sent = mails.get(x.subject, [])
            ids = {m.message_id for m in sent}
            _judge(e, x, len(ids), len(sent) - len(ids))
            matched_mail.add(x.subject)
    _coupons(e, coupons, coupons_due)
    known = {x.subject for x in ledger.all()}
    for text_, n in notes.items():
        if text_ not in known:
            e.unexpected += n
            e.note("note", "unexpected", n, text_)
    for subject, ms in mails.items():
        base = re.sub(r"^(chaos:coupon:\d+):.*$", r"\1", subject)
        if subject.startswith("chaos:") and base not in matched_mail:
            e.unexpected += len(ms)
            e.note("email", "unexpected", len(ms), subject)
    for subject, ds in hooks.items():
        if subject not in known:
            e.unexpected += len(ds)
            e.note("webhook", "unexpected", len(ds), subject)
    return e


def _judge(e: Effects, x: T.Expect, distinct: int, repeats: int) -> None:
    e.observed += distinct
    e.note(x.kind, "expected" if x.must else "optional")
    if distinct == 0 and x.must:
        e.lost += 1
        e.note(x.kind, "lost", example=x.subject)
    if distinct > 1:
        e.duplicated += distinct - 1
        e.note(x.kind, "duplicated", distinct - 1, example=x.subject)
    if repeats:
        e.repeated += repeats
        e.note(x.kind, "repeated", repeats, example=x.subject)
    if repeats > distinct:  # "repeated at most once" (README): one copy per distinct effect at most
        e.repeated_twice += 1
        e.note(x.kind, "repeated more than once", example=x.subject)


def _coupons(e: Effects, coupons: list[tuple[str, list[str]]], due: dict[str, list[int]]) -> None:
    """Coupons are restricted to the customer's email: per email, at least the must ones,
    at most must + may."""
    have: Counter[str] = Counter(emails[0] if emails else "" for _, emails in coupons)
    e.note("coupon", "expected", sum(m for m, _ in due.values()))
    for email in set(have) | set(due):
        must, may = due.get(email, [0, 0])
        got = have.get(email, 0)
        e.observed += got
        if got < must:
            e.lost += must - got
            e.note("coupon", "lost", must - got, email)
        extra = got - (must + may)
        if extra > 0 and must + may:
            e.duplicated += extra
            e.note("coupon", "duplicated", extra, email)
        elif extra > 0:
            e.unexpected += extra
            e.note("coupon", "unexpected", extra, email)
    e.expected += sum(m for m, _ in due.values())


# --- the pipeline's own records -------------------------------------------------------------


def execution_log_problems(engine: Engine, store_id: str, poison: Iterable[P.Poison]) -> list[str]:
    """One final execution log per idempotency key, and one for every finished claim (a
    poison command of an unknown action is logged without ever being claimed)."""
    problems = []
    args = {"s": store_id, "f": list(FINAL), "poison": [p.key for p in poison]}
    with engine.connect() as conn:
        twice = conn.execute(text(
            "SELECT idempotency_key, count(*) FROM execution_logs WHERE store_id = :s AND NOT dry_run "
            "AND status = ANY(:f) GROUP BY 1 HAVING count(*) > 1"), args).all()
        logged = set(conn.execute(text(
            "SELECT DISTINCT idempotency_key FROM execution_logs WHERE store_id = :s AND NOT dry_run "
            "AND status = ANY(:f) AND event_id <> ALL(:poison)"), args).scalars())
        finished = set(conn.execute(text(
            "SELECT idempotency_key FROM action_executions WHERE store_id = :s AND status = ANY(:f)"),
            {"s": store_id, "f": list(FINAL)}).scalars())
    if twice:
        problems.append(f"{len(twice)} idempotency keys with more than one final execution log, e.g. {twice[:3]}")
    if finished - logged:
        problems.append(f"{len(finished - logged)} finished claims without an execution log, e.g. "
                        f"{sorted(finished - logged)[:3]}")
    if logged - finished:
        problems.append(f"{len(logged - finished)} execution logs without a finished claim, e.g. "
                        f"{sorted(logged - finished)[:3]}")
    return problems


@dataclass
class DeadLetters:
    total: int = 0
    poison: dict[str, list[str]] = field(default_factory=dict)  # key → stages that dead-lettered it
    other: Counter[str] = field(default_factory=Counter)  # stage/reason → count, anything not poison
    examples: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def dead_letters(s: Settings, poisoned: Iterable[P.Poison]) -> DeadLetters:
    from wooflow.dlq import Filters, read_dlq

    out = DeadLetters()
    keys = {p.key: p for p in poisoned}
    for rec in read_dlq(s, Filters(), timeout=30):
        out.total += 1
        key = (rec.get("key") or b"").decode("utf-8", "replace")
        if key in keys:
            out.poison.setdefault(key, []).append(rec["stage"])
            continue
        out.other[f"{rec['stage']}/{rec['reason']}"] += 1
        if len(out.examples) < 10:
            out.examples.append(f"{rec['stage']}/{rec['reason']} from {rec['source_topic']}: {rec['error'][:300]}")
    for key, p in keys.items():
        stages = set(out.poison.get(key, []))
        if stages != POISON_STAGES[p.target]:
            out.problems.append(f"poison {key} on {p.target}: dead-lettered by {sorted(stages) or 'nobody'}, "
                                f"expected {sorted(POISON_STAGES[p.target])}")
    if out.other:
        out.problems.append(f"{sum(out.other.values())} dead letters that are not poison: {dict(out.other)}")
    return out


def secrets_in_logs(log_dir: Path, secrets: dict[str, str]) -> dict[str, list[str]]:
    """secret name → the log files that contain it."""
    found: dict[str, list[str]] = {}
    for path in sorted(log_dir.glob("*.log")):
        data = path.read_bytes()
        for name, value in secrets.items():
            if value and value.encode() in data:
                found.setdefault(name, []).append(path.name)
    return found
