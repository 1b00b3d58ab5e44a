"""Loyalty tiers and points, configured per store in `stores.settings`:

    {"loyalty": {"points_per_unit": 1,             # points earned per whole unit of currency spent
                 "tiers": {"metric": "total_spent",  # or "order_count" / "points"
                           "levels": [{"name": "silver", "min": 500}, {"name": "gold", "min": 2000}],
                           "close_within": "10%"},   # default band for close_to_upgrade (amount or %)
                 "counted_statuses": ["processing", "completed"]}}

The consumer only ever raises a tier from these thresholds (tier_upgrade); lowering one is
a decision for a rule (tier_downgrade_risk → change_tier).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wooflow.consumer.state import Aggregates

DEFAULT_COUNTED = frozenset({"processing", "completed"})


@dataclass(frozen=True)
class Level:
    name: str
    min: Decimal


@dataclass(frozen=True)
class Loyalty:
    currency: str = ""
    points_per_unit: Decimal = Decimal(1)
    metric: str = "total_spent"
    levels: tuple[Level, ...] = ()
    close_within: str = "10%"
    counted_statuses: frozenset[str] = field(default=DEFAULT_COUNTED)
    configured: bool = False  # the store has loyalty settings: points and tiers are kept whatever its rules read

    def rank(self, tier: str) -> int:
        """0 = no tier; unknown tier names (set by hand) rank as 0 too."""
        for i, lv in enumerate(self.levels):
            if lv.name == tier:
                return i + 1
        return 0

    def tier_for(self, value: Decimal) -> str:
        best = ""
        for lv in self.levels:
            if value >= lv.min:
                best = lv.name
        return best

    def next_level(self, tier: str) -> Level | None:
        r = self.rank(tier)
        return self.levels[r] if r < len(self.levels) else None

    def level(self, tier: str) -> Level | None:
        r = self.rank(tier)
        return self.levels[r - 1] if r else None

    def metric_of(self, agg: Aggregates, currency: str = "") -> Decimal:
        if self.metric == "order_count":
            return Decimal(agg.order_count)
        if self.metric == "points":
            return Decimal(agg.points)
        return Decimal(str(agg.totals.get(currency or self.currency, "0")))

    def earned(self, total: Decimal) -> int:
        return int((total * self.points_per_unit).to_integral_value(rounding="ROUND_FLOOR")) if total > 0 else 0


def band(within: Any, target: Decimal) -> Decimal:
    """'10%' of the target, or an absolute amount."""
    s = str(within).strip()
    try:
        if s.endswith("%"):
            return target * Decimal(s[:-1]) / 100
        return Decimal(s)
    except InvalidOperation:
        return Decimal(0)


def loyalty_of(settings: dict[str, Any] | None, currency: str = "") -> Loyalty:
    cfg = (settings or {}).get("loyalty") or {}
    tiers = cfg.get("tiers") or {}
    levels = []
    for lv in tiers.get("levels") or []:
        try:
            levels.append(Level(str(lv["name"]), Decimal(str(lv["min"]))))
        except (KeyError, TypeError, InvalidOperation):
            continue
    levels.sort(key=lambda lv: lv.min)
    try:
        ppu = Decimal(str(cfg.get("points_per_unit", 1)))
    except InvalidOperation:
        ppu = Decimal(1)
    counted = cfg.get("counted_statuses")
    return Loyalty(currency=currency, points_per_unit=ppu, metric=str(tiers.get("metric") or "total_spent"),
                   levels=tuple(levels), close_within=str(tiers.get("close_within") or "10%"),
                   counted_statuses=frozenset(counted) if counted else DEFAULT_COUNTED, configured=bool(cfg))
