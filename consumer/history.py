"""A customer's purchase history: the paid orders behind AutomateWoo's customer rules.

`Aggregates` (state.py) keeps sums — order count, totals, first and last order — which
every store keeping customers pays for. Some rules need the orders themselves: the
products a customer ever bought, the dates of their first and last paid order, what they
spent over the last 365 days. A store whose rules read one of those fields keeps
`Keep.HISTORY` (consumer/needs.py): its customers' `History`, the list of their counted
orders (id, paid time, total, currency, product and variation ids), newest last, at most
`MAX_ORDERS` of them (older ones leave only their paid time behind, in `dropped_ms`).

A `History` is a value like `Aggregates`: counting or uncounting an order makes a new one,
so the context a trigger saw keeps the history it saw; the one from just before an order
was (un)counted travels in `order_state.before` ("h"), so replaying that event decides the
same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from wooflow.jsontypes import JSONObject, JSONValue

MAX_ORDERS = 1000
DAY_MS = 86_400_000
PERIOD_DAYS = 365  # the period of `order_count_last_365_days` and `total_spent_last_365_days`


@dataclass(frozen=True, slots=True)
class Paid:
    """One counted order."""

    order_id: int
    paid_ms: int          # date_paid, else date_created
    total: Decimal
    currency: str
    product_ids: tuple[int, ...]  # products and variations of its line items


@dataclass(frozen=True, slots=True)
class History:
    orders: tuple[Paid, ...] = ()
    dropped_ms: int | None = None  # the earliest paid time of the orders beyond MAX_ORDERS

    def counted(self, paid: Paid) -> History:
        rest = tuple(p for p in self.orders if p.order_id != paid.order_id)
        orders = tuple(sorted((*rest, paid), key=lambda p: (p.paid_ms, p.order_id)))
        dropped = self.dropped_ms
        if len(orders) > MAX_ORDERS:
            gone, orders = orders[:-MAX_ORDERS], orders[-MAX_ORDERS:]
            dropped = min([p.paid_ms for p in gone] + ([dropped] if dropped is not None else []))
        return History(orders, dropped)

    def uncounted(self, order_id: int) -> History:
        return History(tuple(p for p in self.orders if p.order_id != order_id), self.dropped_ms)

    def folded(self, other: History, sign: int = 1) -> History:
        """This history with another person's orders (a guest merged into the customer they
        became) added (sign=+1) or taken out again (-1)."""
        if sign < 0:
            gone = {p.order_id for p in other.orders}
            return History(tuple(p for p in self.orders if p.order_id not in gone), self.dropped_ms)
        out = self
        for p in other.orders:
            out = out.counted(p)
        if other.dropped_ms is not None:
            dropped = other.dropped_ms if out.dropped_ms is None else min(out.dropped_ms, other.dropped_ms)
            out = History(out.orders, dropped)
        return out

    # --- what the fields read ------------------------------------------------------------
    def products(self) -> list[int]:
        seen: dict[int, None] = {}
        for p in self.orders:
            seen.update(dict.fromkeys(p.product_ids))
        return list(seen)

    def first_paid_ms(self) -> int | None:
        times = [p.paid_ms for p in self.orders[:1]] + ([self.dropped_ms] if self.dropped_ms is not None else [])
        return min(times) if times else None

    def last_paid_ms(self) -> int | None:
        return self.orders[-1].paid_ms if self.orders else self.dropped_ms

    def within(self, now_ms: int, days: int = PERIOD_DAYS) -> list[Paid]:
        """The counted orders paid in the `days` days up to `now_ms`."""
        since = now_ms - days * DAY_MS
        return [p for p in self.orders if since < p.paid_ms <= now_ms]

    # --- stored form -------------------------------------------------------------------
    def to_json(self) -> JSONObject:
        out: JSONObject = {"o": [[p.order_id, p.paid_ms, str(p.total), p.currency, list(p.product_ids)]
                                 for p in self.orders]}
        if self.dropped_ms is not None:
            out["d"] = self.dropped_ms
        return out

    @classmethod
    def from_json(cls, d: JSONValue) -> History | None:
        if not isinstance(d, dict):
            return None
        orders = []
        for row in d.get("o") or []:
            if isinstance(row, list) and len(row) == 5 and isinstance(row[4], list):
                oid, paid, total, cur, pids = row
                orders.append(Paid(int(str(oid)), int(str(paid)), Decimal(str(total)), str(cur),
                                   tuple(int(str(x)) for x in pids)))
        dropped = d.get("d")
        return cls(tuple(orders), int(dropped) if isinstance(dropped, int) else None)
