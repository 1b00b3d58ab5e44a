"""What a holdout rule added: the treated group against its control group, with 95% intervals.

Per group the analytics read how many customers entered the rule, how many placed an order
inside the window after it (converted), and their net revenue per customer (in the store's
currency). Reported:

- conversion lift = p_treated − p_control, with the normal-approximation (Wald) interval for
  a difference of two independent proportions:
  ± z·sqrt(p_t(1−p_t)/n_t + p_c(1−p_c)/n_c);
- revenue-per-customer lift = mean_t − mean_c (every customer counts, with 0 if they bought
  nothing), with Welch's normal interval: ± z·sqrt(s_t²/n_t + s_c²/n_c), s² the sample
  variances;
- incremental revenue = that lift × the treated customers (interval scaled alike).

z = 1.959964 (95%). The normal approximation needs enough of both outcomes: the comparison
is `conclusive` only with at least 30 customers and 5 converted and 5 not converted in each
group; otherwise the estimates and intervals are still given and `note` says why they
cannot be trusted yet. `significant`: the conversion interval excludes 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054
MIN_CUSTOMERS = 30
MIN_OUTCOMES = 5
METHOD = "difference of proportions with a normal-approximation (Wald) 95% interval; revenue per customer with " \
         "Welch's normal 95% interval"


@dataclass(frozen=True, slots=True)
class Group:
    """One side of the comparison."""

    customers: int
    converted: int
    revenue: float  # net, summed over the group's customers
    revenue_sq: float  # the sum of each customer's net revenue squared

    @property
    def rate(self) -> float:
        return self.converted / self.customers if self.customers else 0.0

    @property
    def mean(self) -> float:
        return self.revenue / self.customers if self.customers else 0.0

    @property
    def variance(self) -> float:
        """Sample variance of revenue per customer."""
        n = self.customers
        if n < 2:
            return 0.0
        return max(0.0, (self.revenue_sq - n * self.mean ** 2) / (n - 1))


@dataclass(frozen=True, slots=True)
class Interval:
    estimate: float
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class Lift:
    conversion: Interval | None
    revenue_per_customer: Interval | None
    incremental_revenue: Interval | None
    conclusive: bool
    significant: bool
    note: str


def _interval(estimate: float, se: float, z: float) -> Interval:
    return Interval(estimate, estimate - z * se, estimate + z * se)


def compare(treated: Group, control: Group, z: float = Z95) -> Lift:
    if treated.customers < 2 or control.customers < 2:
        return Lift(None, None, None, False, False, "too few customers to compare (at least 2 in each group)")
    pt, pc = treated.rate, control.rate
    conversion = _interval(pt - pc, math.sqrt(pt * (1 - pt) / treated.customers + pc * (1 - pc) / control.customers),
                           z)
    se_mean = math.sqrt(treated.variance / treated.customers + control.variance / control.customers)
    per_customer = _interval(treated.mean - control.mean, se_mean, z)
    n = treated.customers
    incremental = Interval(per_customer.estimate * n, per_customer.low * n, per_customer.high * n)
    small = [name for name, g in (("treated", treated), ("control", control))
             if g.customers < MIN_CUSTOMERS or min(g.converted, g.customers - g.converted) < MIN_OUTCOMES]
    note = "" if not small else (
        f"sample too small to conclude ({' and '.join(small)}): the normal approximation needs at least "
        f"{MIN_CUSTOMERS} customers and {MIN_OUTCOMES} converted and {MIN_OUTCOMES} not converted in each group")
    significant = conversion.low > 0 or conversion.high < 0
    return Lift(conversion, per_customer, incremental, not small, significant and not small, note)
