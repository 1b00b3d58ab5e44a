"""Internal records of the simulated store.

These are *storage* shapes, close to what WooCommerce keeps in its tables
(money as exact decimals, dates as UTC unix seconds).  The REST v3 JSON is
rendered from them by :mod:`wooflow.simulator.representations`, so a record is
never handed out to a client and the rendering rules live in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

ZERO = Decimal("0")

BILLING_KEYS = (
    "first_name", "last_name", "company", "address_1", "address_2",
    "city", "state", "postcode", "country", "email", "phone",
)
# Orders' shipping addresses gained `phone` in WooCommerce 5.6; no email.
SHIPPING_KEYS = (
    "first_name", "last_name", "company", "address_1", "address_2",
    "city", "state", "postcode", "country", "phone",
)

# Statuses WooCommerce treats as "paid": moving into one sets date_paid.
PAID_STATUSES = frozenset({"processing", "completed"})
ORDER_STATUSES = (
    "pending", "processing", "on-hold", "completed", "cancelled", "refunded", "failed",
    "checkout-draft",
)
# Human labels used in the automatic "Order status changed" notes.
ORDER_STATUS_LABELS = {
    "pending": "Pending payment",
    "processing": "Processing",
    "on-hold": "On hold",
    "completed": "Completed",
    "cancelled": "Cancelled",
    "refunded": "Refunded",
    "failed": "Failed",
    "checkout-draft": "Draft",
    "trash": "Trash",
}


def blank_billing() -> dict[str, str]:
    return {key: "" for key in BILLING_KEYS}


def blank_shipping() -> dict[str, str]:
    return {key: "" for key in SHIPPING_KEYS}


@dataclass
class MetaItem:
    id: int
    key: str
    value: Any


# The records below are alike only in shape (id, amounts, meta_data): each one holds the
# fields of its own WooCommerce table or item type (WC_Order_Item_Product, _Shipping, ...).
@dataclass
class LineItem:
    id: int
    name: str
    product_id: int
    variation_id: int
    quantity: int
    subtotal: Decimal
    total: Decimal
    sku: str = ""
    tax_class: str = ""
    subtotal_tax: Decimal = ZERO
    total_tax: Decimal = ZERO
    meta_data: list[MetaItem] = field(default_factory=list)


@dataclass
class ShippingLine:
    id: int
    method_title: str
    method_id: str
    instance_id: str
    total: Decimal
    total_tax: Decimal = ZERO
    meta_data: list[MetaItem] = field(default_factory=list)


@dataclass
class FeeLine:
    id: int
    name: str
    total: Decimal
    tax_class: str = ""
    tax_status: str = "taxable"
    total_tax: Decimal = ZERO
    meta_data: list[MetaItem] = field(default_factory=list)


@dataclass
class CouponLine:
    id: int
    code: str
    discount: Decimal
    discount_type: str
    nominal_amount: Decimal
    free_shipping: bool = False
    discount_tax: Decimal = ZERO
    meta_data: list[MetaItem] = field(default_factory=list)


@dataclass
class Refund:
    # Refunds are orders of type shop_order_refund: they take an id from the
    # same post id sequence as orders/products/coupons.
    id: int
    amount: Decimal
    reason: str
    created_at: int


@dataclass
class Order:
    id: int
    order_key: str
    created_via: str
    status: str
    currency: str
    created_at: int
    modified_at: int
    customer_id: int = 0
    parent_id: int = 0
    version: str = "9.4.0"
    prices_include_tax: bool = False
    billing: dict[str, str] = field(default_factory=blank_billing)
    shipping: dict[str, str] = field(default_factory=blank_shipping)
    payment_method: str = ""
    payment_method_title: str = ""
    transaction_id: str = ""
    customer_ip_address: str = ""
    customer_user_agent: str = ""
    customer_note: str = ""
    paid_at: int | None = None
    completed_at: int | None = None
    cart_hash: str = ""
    meta_data: list[MetaItem] = field(default_factory=list)
    line_items: list[LineItem] = field(default_factory=list)
    shipping_lines: list[ShippingLine] = field(default_factory=list)
    fee_lines: list[FeeLine] = field(default_factory=list)
    coupon_lines: list[CouponLine] = field(default_factory=list)
    refunds: list[Refund] = field(default_factory=list)
    discount_total: Decimal = ZERO
    discount_tax: Decimal = ZERO
    shipping_total: Decimal = ZERO
    shipping_tax: Decimal = ZERO
    cart_tax: Decimal = ZERO
    total: Decimal = ZERO
    total_tax: Decimal = ZERO
    # Status to go back to when the order leaves the trash (_wp_trash_meta_status).
    status_before_trash: str | None = None


# WooCommerce Subscriptions: wcs_get_subscription_statuses(), and the billing periods.
SUBSCRIPTION_STATUSES = ("pending", "active", "on-hold", "cancelled", "switched", "expired", "pending-cancel")
BILLING_PERIODS = ("day", "week", "month", "year")


@dataclass
class Subscription:
    """A `shop_subscription` (WC_Subscription): an order-like record with a billing schedule.
    Dates are UTC unix seconds; None where WooCommerce Subscriptions keeps 0."""

    id: int
    status: str
    currency: str
    created_at: int
    modified_at: int
    customer_id: int
    parent_id: int = 0
    billing_period: str = "month"
    billing_interval: int = 1
    trial_period: str = ""
    suspension_count: int = 0
    requires_manual_renewal: bool = False
    billing: dict[str, str] = field(default_factory=blank_billing)
    shipping: dict[str, str] = field(default_factory=blank_shipping)
    payment_method: str = ""
    payment_method_title: str = ""
    line_items: list[LineItem] = field(default_factory=list)
    meta_data: list[MetaItem] = field(default_factory=list)
    total: Decimal = ZERO
    start_at: int | None = None
    trial_end_at: int | None = None
    next_payment_at: int | None = None
    last_payment_at: int | None = None
    cancelled_at: int | None = None
    end_at: int | None = None
    status_before_trash: str | None = None


@dataclass
class OrderNote:
    id: int
    order_id: int
    note: str
    customer_note: bool
    # "system" for notes WooCommerce adds itself, else the user's display name.
    added_by: str
    created_at: int


@dataclass
class Customer:
    """A WordPress user; WooCommerce's customers endpoint exposes any role."""

    id: int
    email: str
    username: str
    role: str
    created_at: int
    modified_at: int
    first_name: str = ""
    last_name: str = ""
    billing: dict[str, str] = field(default_factory=blank_billing)
    shipping: dict[str, str] = field(default_factory=blank_shipping)
    is_paying_customer: bool = False
    meta_data: list[MetaItem] = field(default_factory=list)


@dataclass
class Category:
    id: int
    name: str
    slug: str
    parent: int = 0


@dataclass
class Tag:
    """A product_tag term (terms of every taxonomy share one id sequence)."""

    id: int
    name: str
    slug: str


@dataclass
class Product:
    id: int
    name: str
    slug: str
    created_at: int
    modified_at: int
    regular_price: Decimal
    sale_price: Decimal | None = None
    type: str = "simple"  # simple | variable | variation | ...
    parent_id: int = 0  # a variation's variable product
    status: str = "publish"
    sku: str = ""
    description: str = ""
    short_description: str = ""
    category_ids: list[int] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    stock_status: str = "instock"
    manage_stock: bool = False
    stock_quantity: int | None = None
    total_sales: int = 0
    weight: str = ""
    meta_data: list[MetaItem] = field(default_factory=list)
    status_before_trash: str | None = None

    @property
    def price(self) -> Decimal:
        return self.sale_price if self.sale_price is not None else self.regular_price


@dataclass
class Coupon:
    id: int
    code: str
    amount: Decimal
    discount_type: str
    created_at: int
    modified_at: int
    status: str = "publish"
    description: str = ""
    expires_at: int | None = None
    usage_count: int = 0
    individual_use: bool = False
    product_ids: list[int] = field(default_factory=list)
    excluded_product_ids: list[int] = field(default_factory=list)
    usage_limit: int | None = None
    usage_limit_per_user: int | None = None
    limit_usage_to_x_items: int | None = None
    free_shipping: bool = False
    product_categories: list[int] = field(default_factory=list)
    excluded_product_categories: list[int] = field(default_factory=list)
    exclude_sale_items: bool = False
    minimum_amount: Decimal = ZERO
    maximum_amount: Decimal = ZERO
    email_restrictions: list[str] = field(default_factory=list)
    used_by: list[str] = field(default_factory=list)
    meta_data: list[MetaItem] = field(default_factory=list)
    status_before_trash: str | None = None


@dataclass
class Webhook:
    id: int
    name: str
    status: str  # active | paused | disabled
    topic: str
    delivery_url: str
    secret: str
    created_at: int
    modified_at: int
    failure_count: int = 0
    # True until a ping answered 200, like WC_Webhook's pending_delivery prop.
    pending_delivery: bool = True
    user_id: int = 1
    api_version: int = 3

    @property
    def resource(self) -> str:
        return self.topic.split(".", 1)[0]

    @property
    def event(self) -> str:
        parts = self.topic.split(".", 1)
        return parts[1] if len(parts) > 1 else ""


@dataclass
class DeliveryAttempt:
    """One HTTP attempt the store made: a webhook delivery or a creation ping.

    WooCommerce keeps this in its `webhooks-delivery` log; tests read it to see
    what was sent and how the store judged the answer.
    """

    kind: str  # "delivery" | "ping"
    webhook_id: int
    topic: str
    resource_id: Any  # the hook argument (resource id; action arg for action.*)
    delivery_id: str | None
    url: str
    started_at: float  # store clock (unix seconds)
    duration: float  # seconds, wall time of the HTTP exchange
    status_code: int | None  # None when no HTTP answer (timeout, refused)
    error: str | None
    success: bool
    request_headers: dict[str, str] = field(default_factory=dict)
    request_body: bytes = b""
    response_body: bytes = b""
    # failure_count / status of the webhook after this attempt was judged
    failure_count_after: int = 0
    webhook_status_after: str = ""
