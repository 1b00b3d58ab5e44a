"""The trigger registry: which triggers an incoming event fires, and their options.

A trigger is a `TriggerSpec`: the schema it listens to, `fires(ctx)` (did this event,
given the state wooflow keeps, fire it?), and an optional pydantic `Options` model with
`compile_options(options) -> (ctx -> bool)` that narrows it per rule (from→to,
thresholds, milestones...). Time- and behaviour-based triggers (abandoned cart, inactive
for N days, birthday...) are the scheduler's: scheduler/triggers.py registers them here
the same way, from the outside, when it is imported — by the scheduler itself, and by
every other process that compiles rules naming them (`wooflow rules` and `wooflow
replay` through their wiring, the API). This package never imports the scheduler.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator

from wooflow.consumer.tiers import Loyalty, band
from wooflow.schemas.codec import Record

if TYPE_CHECKING:
    from wooflow.consumer.state import Aggregates, Customer, Sub
    from wooflow.consumer.values import CustomerIn, OrderIn, ProductIn, SubscriptionIn

Check = Callable[["TriggerContext"], bool]


class Keep(IntEnum):
    """How much per-order and per-customer state a store's rules need the consumer to keep
    (each level includes the ones below it; consumer/needs.py derives it from the rules)."""

    NOTHING = 0    # no rows: every trigger and condition reads the event alone
    SEEN = 1       # an order row written once, at the order's first sight (`new_order`)
    ORDERS = 2     # + each order's status and recent transitions (`order_status_changed`)
    CUSTOMERS = 3  # + paid orders counted into customer aggregates, customer bookkeeping, guest merges
    HISTORY = 4    # + each customer's counted orders themselves (purchase-history fields, consumer/history.py)


@dataclass(slots=True)
class TriggerContext:
    """What the consumer knows when it evaluates one event: the event (of `schema`, raw from
    the hot path or decoded in full: consumer/values.py), its resource typed, and the state
    before and after applying it (`consumer/apply.py`)."""
    schema: str
    event: Record
    loyalty: Loyalty = field(default_factory=Loyalty)
    order: OrderIn | None = None      # the OrderEvent's order (None on order.deleted)
    profile: CustomerIn | None = None  # the CustomerEvent's customer
    product: ProductIn | None = None  # the ProductEvent's product
    subscription: SubscriptionIn | None = None  # the SubscriptionEvent's subscription
    first_seen: bool = False          # first time wooflow sees this resource (or a replay of that event)
    previous_status: str | None = None  # set when this event changed an order's (subscription's) status
    status: str | None = None
    paid: bool = False                # this event first saw the order paid (date_paid set)
    refund: tuple[Decimal, Decimal] | None = None  # the order's refunded total grew: (before, after)
    counted: bool = False             # the order counts as a paid order of the customer after this event
    # the customer's subscriptions by id, where a rule of the store reads them (None: not loaded)
    customer_subscriptions: Mapping[int, Sub] | None = None
    count_change: int = 0             # +1: the order became a paid order of the customer; -1: it stopped being one
    before: Aggregates | None = None  # the customer's aggregates before this event
    after: Aggregates | None = None
    order_total: Decimal | None = None
    currency: str = ""
    customer: Customer | None = None  # the customer's state, when the event has one
    stale: bool = False               # older than what wooflow already applied

    def __post_init__(self) -> None:
        # The resource of the event, typed: the event is a record of `schema` (decoded with
        # it), which schemas/types.py describes.
        if self.schema == "OrderEvent":
            self.order = self.order or cast("OrderIn | None", self.event.get("order"))
        elif self.schema == "CustomerEvent":
            self.profile = self.profile or cast("CustomerIn | None", self.event.get("customer"))
        elif self.schema == "ProductEvent":
            self.product = self.product or cast("ProductIn | None", self.event.get("product"))
        elif self.schema == "SubscriptionEvent":
            self.subscription = self.subscription or cast("SubscriptionIn | None", self.event.get("subscription"))


@dataclass(frozen=True)
class TriggerSpec:
    name: str
    schema: str
    description: str
    fires: Check
    options_model: type[BaseModel] | None = None
    compile: Callable[[Any], Check | None] | None = None  # validated options → extra check (None: none)
    group: str = "order"
    # the state `fires` and the options read; a trigger that does not say is given all of it
    keeps: Keep = Keep.CUSTOMERS
    # fires only on the event that first saw its resource: a later event of an order already
    # seen cannot fire it (the consumer and replay skip such events undecoded, see runner.py)
    first_sight: bool = False
    # "for each line item of the order": a rule of it runs once per line item its conditions
    # (with the `item.*` fields) hold for, each with its own idempotency key (engine.py)
    each_line_item: bool = False

    def compile_options(self, options: Mapping[str, object] | None) -> Check | None:
        if self.options_model is None:
            if options:
                raise ValueError(f"trigger {self.name} takes no options")
            return None
        opts = self.options_model.model_validate(options or {})
        return self.compile(opts) if self.compile else None


TRIGGERS: dict[str, TriggerSpec] = {}
_BY_SCHEMA: dict[str, list[TriggerSpec]] = {}


def register(spec: TriggerSpec) -> TriggerSpec:
    TRIGGERS[spec.name] = spec
    _BY_SCHEMA.setdefault(spec.schema, [])
    _BY_SCHEMA[spec.schema] = [t for t in _BY_SCHEMA[spec.schema] if t.name != spec.name] + [spec]
    return spec


def for_schema(schema: str) -> list[TriggerSpec]:
    return _BY_SCHEMA.get(schema, [])


def fired(ctx: TriggerContext, only: set[str] | frozenset[str] | None = None) -> list[str]:
    return [t.name for t in _BY_SCHEMA.get(ctx.schema, ()) if (only is None or t.name in only) and t.fires(ctx)]


# --- options models -----------------------------------------------------------------------

class _Opts(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _statuses(v: Any) -> list[str] | None:
    if v is None or v == "" or v == []:
        return None
    items = v if isinstance(v, list) else str(v).split(",")
    return [str(s).strip().lower().removeprefix("wc-") for s in items if str(s).strip()]


class StatusChangeOptions(_Opts):
    from_: list[str] | None = Field(None, alias="from",
                                    description="Previous status(es), e.g. 'pending' or 'pending,on-hold'")
    to: list[str] | None = Field(None, description="New status(es), e.g. 'completed'")

    @field_validator("from_", "to", mode="before")
    @classmethod
    def normalise_statuses(cls, v: Any) -> list[str] | None:
        return _statuses(v)


class HighValueOptions(_Opts):
    threshold: Decimal = Field(gt=0, description="Fires for paid orders whose total is at least this")
    currency: str | None = Field(None, description="Only orders in this currency (default: any)")


class MilestoneOptions(_Opts):
    counts: list[int] = Field(default_factory=lambda: [5, 10, 20], min_length=1,
                              description="Fire on the customer's Nth paid order, for each N listed")

    @field_validator("counts", mode="before")
    @classmethod
    def _counts(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [s.strip() for s in v.split(",") if s.strip()]
        if isinstance(v, int):
            return [v]
        return v

    @field_validator("counts")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(n < 1 for n in v):
            raise ValueError("milestones are positive order counts")
        return v


class TierUpgradeOptions(_Opts):
    to: str | None = Field(None, description="Only upgrades to this tier (default: any)")


class CloseToUpgradeOptions(_Opts):
    within: str | None = Field(None, description="Band below the next tier: an amount ('50') or a share ('10%'); "
                                                  "default: the store's loyalty.tiers.close_within")

    @field_validator("within", mode="before")
    @classmethod
    def _within(cls, v: Any) -> Any:
        if v is None:
            return None
        s = str(v).strip()
        try:
            Decimal(s[:-1] if s.endswith("%") else s)
        except Exception as exc:
            raise ValueError("within is an amount like '50' or a share like '10%'") from exc
        return s


class DowngradeRiskOptions(_Opts):
    margin: str = Field("0", description="Fire when the metric falls below the current tier's minimum plus this "
                                         "(amount or %)")


class NewCustomerOptions(_Opts):
    roles: list[str] | None = Field(None, description="Only these account roles (default: any role)")


class ProductSavedOptions(_Opts):
    actions: list[str] | None = Field(None, description="created / updated / restored (default: all)")


class NoteOptions(_Opts):
    note_type: Literal["any", "private", "customer"] = Field(
        "any", description="private notes, notes to the customer, or any")
    contains: str | None = Field(None, min_length=1, description="Only notes containing this text (case-insensitive)")


# --- AutomateWoo, customer-history and Polski Pro triggers -----------------------------------------------------

def _order(ctx: TriggerContext) -> bool:
    return ctx.order is not None and not ctx.stale


def _purchase(ctx: TriggerContext) -> bool:
    return ctx.count_change == 1


def _compile_status(o: StatusChangeOptions) -> Check | None:
    f, t = (frozenset(o.from_) if o.from_ else None), (frozenset(o.to) if o.to else None)
    if f is None and t is None:
        return None
    return lambda ctx: ((f is None or (ctx.previous_status or "").removeprefix("wc-") in f)
                        and (t is None or (ctx.status or "").removeprefix("wc-") in t))


def _compile_high_value(o: HighValueOptions) -> Check:
    threshold, currency = o.threshold, (o.currency or "").upper()
    return lambda ctx: (ctx.order_total is not None and ctx.order_total >= threshold
                        and (not currency or ctx.currency.upper() == currency))


def _compile_milestones(o: MilestoneOptions) -> Check:
    counts = frozenset(o.counts)
    return lambda ctx: ctx.after is not None and ctx.after.order_count in counts


def _tier_up(ctx: TriggerContext) -> bool:
    return (ctx.before is not None and ctx.after is not None
            and ctx.loyalty.rank(ctx.after.tier) > ctx.loyalty.rank(ctx.before.tier))


def _compile_tier_to(o: TierUpgradeOptions) -> Check | None:
    return (lambda ctx: ctx.after is not None and ctx.after.tier == o.to) if o.to else None


def _close(ctx: TriggerContext, agg: Aggregates, within: str) -> bool:
    lo = ctx.loyalty
    nxt = lo.next_level(agg.tier)
    if nxt is None:
        return False
    value = lo.metric_of(agg, ctx.currency)
    return value < nxt.min and nxt.min - value <= band(within, nxt.min)


def _compile_close(o: CloseToUpgradeOptions) -> Check:
    def check(ctx: TriggerContext) -> bool:
        within = o.within or ctx.loyalty.close_within
        assert ctx.before is not None and ctx.after is not None
        return _close(ctx, ctx.after, within) and not _close(ctx, ctx.before, within)
    return check


def _at_risk(ctx: TriggerContext, agg: Aggregates, margin: str) -> bool:
    level = ctx.loyalty.level(agg.tier)
    if level is None:
        return False
    return ctx.loyalty.metric_of(agg, ctx.currency) < level.min + band(margin, level.min)


def _compile_risk(o: DowngradeRiskOptions) -> Check:
    def check(ctx: TriggerContext) -> bool:
        assert ctx.before is not None and ctx.after is not None
        return _at_risk(ctx, ctx.after, o.margin) and not _at_risk(ctx, ctx.before, o.margin)
    return check


def _compile_roles(o: NewCustomerOptions) -> Check | None:
    if not o.roles:
        return None
    roles = frozenset(r.lower() for r in o.roles)
    return lambda ctx: ctx.profile is not None and ctx.profile["role"].lower() in roles


def _compile_product_actions(o: ProductSavedOptions) -> Check | None:
    if not o.actions:
        return None
    acts = frozenset(o.actions)
    return lambda ctx: ctx.event.get("action") in acts


def becomes(status: str) -> Check:
    """The order's status is `status` for the first time: it changed to it from the last status
    wooflow stored, or the order was first seen in it (created in it, or first delivered in it:
    WooCommerce builds a delivery's payload when it runs, so a new order may arrive already
    on-hold)."""
    def fires(ctx: TriggerContext) -> bool:
        if ctx.order is None or ctx.status != status:
            return False
        if ctx.previous_status is not None:
            return ctx.previous_status != status
        return ctx.first_seen
    return fires


def _note_added(ctx: TriggerContext) -> bool:
    return ctx.event.get("action") == "note_added" and ctx.event.get("note") is not None


def _compile_note(o: NoteOptions) -> Check | None:
    if o.note_type == "any" and not o.contains:
        return None
    kind, needle = o.note_type, (o.contains or "").lower()

    def check(ctx: TriggerContext) -> bool:
        note = cast("Mapping[str, Any]", ctx.event.get("note") or {})
        if kind != "any" and bool(note.get("customer_note")) != (kind == "customer"):
            return False
        return needle in str(note.get("note") or "").lower()
    return check


def _partial_refund(ctx: TriggerContext) -> bool:
    return ctx.refund is not None and ctx.order is not None and ctx.status != "refunded"


def is_renewal(ctx: TriggerContext) -> bool:
    """A WooCommerce Subscriptions renewal order: created by the subscription, with the
    subscription's id in `_subscription_renewal`."""
    o = ctx.order
    return o is not None and (o.get("created_via") == "subscription"
                              or "_subscription_renewal" in (o.get("meta") or {}))


_failed = becomes("failed")


def _subscription_changed(ctx: TriggerContext) -> bool:
    return ctx.previous_status is not None and ctx.previous_status != ctx.status and ctx.subscription is not None


register(TriggerSpec(
    "new_order", "OrderEvent", "An order is placed: the first time wooflow sees the order id (created or updated)",
    lambda ctx: ctx.first_seen and ctx.order is not None, keeps=Keep.SEEN, first_sight=True))
register(TriggerSpec(
    "order_status_changed", "OrderEvent",
    "An order's status changed from the last status wooflow stored (options: from, to)",
    lambda ctx: ctx.previous_status is not None and ctx.previous_status != ctx.status,
    StatusChangeOptions, _compile_status, keeps=Keep.ORDERS))
register(TriggerSpec(
    "first_purchase", "OrderEvent", "The customer's first paid order (status becomes processing/completed)",
    lambda ctx: ctx.count_change == 1 and ctx.before is not None and ctx.before.order_count == 0))
register(TriggerSpec(
    "repeat_purchase", "OrderEvent", "A paid order of a customer who already has one",
    lambda ctx: ctx.count_change == 1 and ctx.before is not None and ctx.before.order_count >= 1))
register(TriggerSpec(
    "high_value_order", "OrderEvent", "A paid order whose total is at least `threshold`",
    _purchase, HighValueOptions, _compile_high_value))
register(TriggerSpec(
    "order_count_milestone", "OrderEvent", "The customer's Nth paid order, N in `counts` (default 5, 10, 20)",
    _purchase, MilestoneOptions, _compile_milestones))
register(TriggerSpec(
    "tier_upgrade", "OrderEvent", "The customer reached a higher loyalty tier (store loyalty settings)",
    _tier_up, TierUpgradeOptions, _compile_tier_to, group="tier"))
register(TriggerSpec(
    "close_to_upgrade", "OrderEvent", "A paid order brought the customer within `within` of the next tier",
    _purchase, CloseToUpgradeOptions, _compile_close, group="tier"))
register(TriggerSpec(
    "tier_downgrade_risk", "OrderEvent",
    "A cancelled/refunded order left the customer below their tier's minimum (plus `margin`)",
    lambda ctx: ctx.count_change == -1, DowngradeRiskOptions, _compile_risk, group="tier"))
register(TriggerSpec(
    "new_customer", "CustomerEvent", "A customer account is created (WooCommerce user_register; any role unless "
    "`roles` narrows it)",
    lambda ctx: ctx.first_seen and ctx.profile is not None,
    NewCustomerOptions, _compile_roles, group="customer"))
register(TriggerSpec(
    "product_saved", "ProductEvent", "A product is created, updated or restored",
    lambda ctx: ctx.product is not None and ctx.event.get("action") in ("created", "updated", "restored"),
    ProductSavedOptions, _compile_product_actions, group="product", keeps=Keep.NOTHING))

# --- AutomateWoo's order triggers ---------------------------------------------------------
register(TriggerSpec(
    "order_paid", "OrderEvent", "An order is paid: the first time wooflow sees its date_paid set, whatever the "
    "status path (pending → processing, on-hold → completed, ...); once per order",
    lambda ctx: ctx.paid and ctx.order is not None, keeps=Keep.ORDERS))
for _status, _label in (("pending", "pending payment"), ("on-hold", "on hold"), ("cancelled", "cancelled")):
    register(TriggerSpec(
        f"order_{_status.replace('-', '_')}", "OrderEvent",
        f"An order becomes {_label}: changed to {_status} from the last status wooflow stored, or first seen in it",
        becomes(_status), keeps=Keep.ORDERS))
register(TriggerSpec(
    "order_refunded", "OrderEvent", "An order is refunded in full: its status becomes refunded",
    becomes("refunded"), keeps=Keep.ORDERS))
register(TriggerSpec(
    "order_partially_refunded", "OrderEvent", "An order's refunds grow while it is not refunded in full (REST "
    "refunds; order.updated fires on refunds); `refund.amount` and `refund.total_refunded` in the templates",
    _partial_refund, keeps=Keep.ORDERS))
register(TriggerSpec(
    "order_note_added", "OrderEvent", "A note is added to an order (the action.woocommerce_order_note_added or "
    "action.woocommerce_new_customer_note webhook, docs/triggers.md); options: note_type, contains",
    _note_added, NoteOptions, _compile_note, keeps=Keep.NOTHING))
for _base in ("new_order", "order_paid", "order_status_changed"):  # AutomateWoo's "– Each Line Item" variants
    register(replace(TRIGGERS[_base], name=f"{_base}_each_line_item", each_line_item=True,
                     description=f"{_base} ({TRIGGERS[_base].description[:1].lower()}"
                                 f"{TRIGGERS[_base].description[1:]}), once for each line item the conditions "
                                 "(item.*) hold for"))

# --- WooCommerce Subscriptions --------------------------------------------------------------
register(TriggerSpec(
    "subscription_created", "SubscriptionEvent", "A subscription is created (the first time wooflow sees it)",
    lambda ctx: ctx.first_seen and ctx.subscription is not None, group="subscription", keeps=Keep.NOTHING))
register(TriggerSpec(
    "subscription_status_changed", "SubscriptionEvent",
    "A subscription's status changed from the last status wooflow stored (options: from, to: active, on-hold, "
    "cancelled, pending-cancel, expired...)",
    _subscription_changed, StatusChangeOptions, _compile_status, group="subscription", keeps=Keep.NOTHING))
register(TriggerSpec(
    "subscription_renewal_payment_failed", "OrderEvent",
    "A renewal order's payment failed: a WooCommerce Subscriptions renewal order becomes failed (the "
    "subscription goes on-hold)",
    lambda ctx: is_renewal(ctx) and _failed(ctx), group="subscription", keeps=Keep.ORDERS))

