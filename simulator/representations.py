"""Render store records as WooCommerce REST API v3 JSON objects.

Both the REST endpoints and webhook payloads go through here, because
WooCommerce builds a webhook body by internally dispatching
``GET /wc/v3/{resource}s/{id}`` – the two are the same document.

Type rules that consumers trip over, reproduced on purpose:
money totals are strings with the store's 2 decimals ("120.00"); a line item's
``price`` is a JSON number (total / quantity, a PHP float); dates are
``Y-m-d\\TH:i:s`` without zone, ``date_*`` in the site timezone and
``date_*_gmt`` in UTC; product prices are the stored strings as entered.
Key order follows WooCommerce's output so the signed bytes look the same.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

from wooflow.jsontypes import JSONObject

from .models import (
    ZERO,
    Category,
    Coupon,
    CouponLine,
    Customer,
    FeeLine,
    LineItem,
    MetaItem,
    Order,
    OrderNote,
    Product,
    ShippingLine,
    Subscription,
    Tag,
    Webhook,
)
from .topics import hooks_for_topic

__all__ = [
    "CURRENCY_SYMBOLS",
    "SiteInfo",
    "category_json",
    "coupon_json",
    "customer_json",
    "fmt_gmt",
    "fmt_local",
    "money",
    "note_json",
    "order_json",
    "product_json",
    "webhook_json",
]

CURRENCY_SYMBOLS = {"PLN": "zł", "EUR": "€", "USD": "$", "GBP": "£", "CZK": "Kč"}
# Operations the self link of an authenticated response advertises (WP 6.7 targetHints).
_ALLOW_ALL = ["GET", "POST", "PUT", "PATCH", "DELETE"]


@dataclass(frozen=True)
class SiteInfo:
    """What rendering needs to know about the site."""

    url: str  # home URL without trailing slash, e.g. http://127.0.0.1:8080
    timezone: str
    currency: str
    price_decimals: int = 2

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def rest_url(self, route: str) -> str:
        return f"{self.url}/wp-json{route}"


def money(value: Decimal, dp: int = 2) -> str:
    """wc_format_decimal($value, $dp): fixed decimals, PHP round() half-up."""
    quantum = Decimal(1).scaleb(-dp)
    return str(Decimal(value).quantize(quantum, rounding=ROUND_HALF_UP))


def plain_decimal(value: Decimal) -> str:
    """A stored price string as WooCommerce keeps it (as entered, no forced decimals)."""
    return format(value, "f")


def fmt_local(ts: int | None, site: SiteInfo) -> str | None:
    """wc_rest_prepare_date_response($date, false): site-local, no zone suffix."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, site.tz).strftime("%Y-%m-%dT%H:%M:%S")


def fmt_gmt(ts: int | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def _self_links(site: SiteInfo, item_route: str, collection_route: str) -> JSONObject:
    return {
        "self": [{"href": site.rest_url(item_route), "targetHints": {"allow": list(_ALLOW_ALL)}}],
        "collection": [{"href": site.rest_url(collection_route)}],
    }


def _meta(items: list[MetaItem]) -> list[JSONObject]:
    return [{"id": m.id, "key": m.key, "value": m.value} for m in items]


def _item_meta(items: list[MetaItem]) -> list[JSONObject]:
    # Order items expose display_key/display_value next to the raw pair.
    return [
        {"id": m.id, "key": m.key, "value": m.value, "display_key": m.key, "display_value": m.value}
        for m in items
    ]


def _php_div(total: Decimal, quantity: int) -> int | float:
    """``$item->get_total() / $item->get_quantity()`` with PHP numeric semantics.

    The stored total is a numeric string; PHP yields an int when both sides
    are integral and the division is exact, else a float.
    """
    if not quantity:
        return 0
    if total == total.to_integral_value() and int(total) % quantity == 0:
        return int(total) // quantity
    return float(total) / quantity


def _line_item_json(item: LineItem, products: dict[int, Product], dp: int) -> JSONObject:
    product = products.get(item.variation_id or item.product_id)
    return {
        "id": item.id,
        "name": item.name,
        "product_id": item.product_id,
        "variation_id": item.variation_id,
        "quantity": item.quantity,
        "tax_class": item.tax_class,
        "subtotal": money(item.subtotal, dp),
        "subtotal_tax": money(item.subtotal_tax, dp),
        "total": money(item.total, dp),
        "total_tax": money(item.total_tax, dp),
        "taxes": [],
        "meta_data": _item_meta(item.meta_data),
        # null when the product no longer exists, as in WooCommerce.
        "sku": (product.sku if product is not None else None),
        "price": _php_div(item.total, item.quantity),
        "image": {"id": "", "src": ""},
        "parent_name": None,
    }


# Each order item type answers its own keys (WooCommerce's REST schema per item type);
# the functions are alike only in shape.
def _shipping_line_json(line: ShippingLine, dp: int) -> JSONObject:
    return {
        "id": line.id,
        "method_title": line.method_title,
        "method_id": line.method_id,
        "instance_id": line.instance_id,
        "total": money(line.total, dp),
        "total_tax": money(line.total_tax, dp),
        "taxes": [],
        "tax_status": "taxable",
        "meta_data": _item_meta(line.meta_data),
    }


def _fee_line_json(line: FeeLine, dp: int) -> JSONObject:
    return {
        "id": line.id,
        "name": line.name,
        "tax_class": line.tax_class,
        "tax_status": line.tax_status,
        "amount": money(line.total, dp),
        "total": money(line.total, dp),
        "total_tax": money(line.total_tax, dp),
        "taxes": [],
        "meta_data": _item_meta(line.meta_data),
    }


def _coupon_line_json(line: CouponLine, dp: int) -> JSONObject:
    return {
        "id": line.id,
        "code": line.code,
        "discount": money(line.discount, dp),
        "discount_tax": money(line.discount_tax, dp),
        "meta_data": _item_meta(line.meta_data),
        "discount_type": line.discount_type,
        "nominal_amount": float(line.nominal_amount),
        "free_shipping": line.free_shipping,
    }


def order_json(order: Order, site: SiteInfo, products: dict[int, Product]) -> JSONObject:
    dp = site.price_decimals
    data: JSONObject = {
        "id": order.id,
        "parent_id": order.parent_id,
        "status": order.status,
        "currency": order.currency,
        "version": order.version,
        "prices_include_tax": order.prices_include_tax,
        "date_created": fmt_local(order.created_at, site),
        "date_modified": fmt_local(order.modified_at, site),
        "discount_total": money(order.discount_total, dp),
        "discount_tax": money(order.discount_tax, dp),
        "shipping_total": money(order.shipping_total, dp),
        "shipping_tax": money(order.shipping_tax, dp),
        "cart_tax": money(order.cart_tax, dp),
        "total": money(order.total, dp),
        "total_tax": money(order.total_tax, dp),
        "customer_id": order.customer_id,
        "order_key": order.order_key,
        "billing": dict(order.billing),
        "shipping": dict(order.shipping),
        "payment_method": order.payment_method,
        "payment_method_title": order.payment_method_title,
        "transaction_id": order.transaction_id,
        "customer_ip_address": order.customer_ip_address,
        "customer_user_agent": order.customer_user_agent,
        "created_via": order.created_via,
        "customer_note": order.customer_note,
        "date_completed": fmt_local(order.completed_at, site),
        "date_paid": fmt_local(order.paid_at, site),
        "cart_hash": order.cart_hash,
        "number": str(order.id),
        "meta_data": _meta(order.meta_data),
        "line_items": [_line_item_json(i, products, dp) for i in order.line_items],
        "tax_lines": [],
        "shipping_lines": [_shipping_line_json(s, dp) for s in order.shipping_lines],
        "fee_lines": [_fee_line_json(f, dp) for f in order.fee_lines],
        "coupon_lines": [_coupon_line_json(c, dp) for c in order.coupon_lines],
        "refunds": [
            {"id": r.id, "reason": r.reason, "total": "-" + money(r.amount, dp)} for r in order.refunds
        ],
        "payment_url": f"{site.url}/checkout/order-pay/{order.id}/?pay_for_order=true&key={order.order_key}",
        "is_editable": order.status in ("pending", "on-hold", "auto-draft", "checkout-draft"),
        "needs_payment": order.status in ("pending", "failed") and order.total > 0,
        "needs_processing": bool(order.line_items),
        "date_created_gmt": fmt_gmt(order.created_at),
        "date_modified_gmt": fmt_gmt(order.modified_at),
        "date_completed_gmt": fmt_gmt(order.completed_at),
        "date_paid_gmt": fmt_gmt(order.paid_at),
        "currency_symbol": CURRENCY_SYMBOLS.get(order.currency, order.currency),
    }
    links = _self_links(site, f"/wc/v3/orders/{order.id}", "/wc/v3/orders")
    if order.customer_id:
        links["customer"] = [{"href": site.rest_url(f"/wc/v3/customers/{order.customer_id}")}]
    if order.parent_id:
        links["up"] = [{"href": site.rest_url(f"/wc/v3/orders/{order.parent_id}")}]
    data["_links"] = links
    return data


def subscription_json(sub: Subscription, site: SiteInfo, products: dict[int, Product]) -> JSONObject:
    """GET /wc/v3/subscriptions/{id} (WC_REST_Subscriptions_Controller): the order fields a
    subscription has, its schedule, and its own dates as `<type>_date_gmt` only ("" unset)."""
    dp = site.price_decimals
    data: JSONObject = {
        "id": sub.id,
        "parent_id": sub.parent_id,
        "status": sub.status,
        "currency": sub.currency,
        "version": "9.4.0",
        "prices_include_tax": False,
        "date_created": fmt_local(sub.created_at, site),
        "date_modified": fmt_local(sub.modified_at, site),
        "discount_total": money(ZERO, dp),
        "discount_tax": money(ZERO, dp),
        "shipping_total": money(ZERO, dp),
        "shipping_tax": money(ZERO, dp),
        "cart_tax": money(ZERO, dp),
        "total": money(sub.total, dp),
        "total_tax": money(ZERO, dp),
        "customer_id": sub.customer_id,
        "order_key": f"wc_order_sub{sub.id}",
        "billing": dict(sub.billing),
        "shipping": dict(sub.shipping),
        "payment_method": sub.payment_method,
        "payment_method_title": sub.payment_method_title,
        "customer_ip_address": "",
        "customer_user_agent": "",
        "created_via": "rest-api",
        "customer_note": "",
        "date_completed": None,
        "date_paid": None,
        "number": str(sub.id),
        "meta_data": _meta(sub.meta_data),
        "line_items": [_line_item_json(i, products, dp) for i in sub.line_items],
        "tax_lines": [],
        "shipping_lines": [],
        "fee_lines": [],
        "coupon_lines": [],
        "date_created_gmt": fmt_gmt(sub.created_at),
        "date_modified_gmt": fmt_gmt(sub.modified_at),
        "date_completed_gmt": None,
        "date_paid_gmt": None,
        "billing_period": sub.billing_period,
        "billing_interval": str(sub.billing_interval),
        "trial_period": sub.trial_period,
        "suspension_count": sub.suspension_count,
        "requires_manual_renewal": sub.requires_manual_renewal,
        "start_date_gmt": fmt_gmt(sub.start_at) or "",
        "trial_end_date_gmt": fmt_gmt(sub.trial_end_at) or "",
        "next_payment_date_gmt": fmt_gmt(sub.next_payment_at) or "",
        "last_payment_date_gmt": fmt_gmt(sub.last_payment_at) or "",
        "cancelled_date_gmt": fmt_gmt(sub.cancelled_at) or "",
        "end_date_gmt": fmt_gmt(sub.end_at) or "",
        "resubscribed_from": "",
        "resubscribed_subscription": "",
        "removed_line_items": [],
    }
    links = _self_links(site, f"/wc/v3/subscriptions/{sub.id}", "/wc/v3/subscriptions")
    links["customer"] = [{"href": site.rest_url(f"/wc/v3/customers/{sub.customer_id}")}]
    if sub.parent_id:
        links["up"] = [{"href": site.rest_url(f"/wc/v3/orders/{sub.parent_id}")}]
    data["_links"] = links
    return data


def note_json(note: OrderNote, site: SiteInfo) -> JSONObject:
    return {
        "id": note.id,
        # add_order_note() stores "WooCommerce" as the author of system notes.
        "author": note.added_by,
        "date_created": fmt_local(note.created_at, site),
        "date_created_gmt": fmt_gmt(note.created_at),
        "note": note.note,
        "customer_note": note.customer_note,
        "_links": {
            "self": [{"href": site.rest_url(f"/wc/v3/orders/{note.order_id}/notes/{note.id}"),
                      "targetHints": {"allow": ["GET", "DELETE"]}}],
            "collection": [{"href": site.rest_url(f"/wc/v3/orders/{note.order_id}/notes")}],
            "up": [{"href": site.rest_url(f"/wc/v3/orders/{note.order_id}")}],
        },
    }


def _customer_address(address: dict[str, str], with_email: bool) -> dict[str, str]:
    # The customers endpoint lists address keys in its own order.
    keys = ["first_name", "last_name", "company", "address_1", "address_2", "city", "postcode",
            "country", "state"]
    keys += ["email", "phone"] if with_email else ["phone"]
    return {k: address.get(k, "") for k in keys}


def avatar_url(email: str) -> str:
    digest = hashlib.md5(email.strip().lower().encode("utf-8")).hexdigest()
    return f"https://secure.gravatar.com/avatar/{digest}?s=96&d=mm&r=g"


def customer_json(customer: Customer, site: SiteInfo) -> JSONObject:
    return {
        "id": customer.id,
        "date_created": fmt_local(customer.created_at, site),
        "date_created_gmt": fmt_gmt(customer.created_at),
        "date_modified": fmt_local(customer.modified_at, site),
        "date_modified_gmt": fmt_gmt(customer.modified_at),
        "email": customer.email,
        "first_name": customer.first_name,
        "last_name": customer.last_name,
        "role": customer.role,
        "username": customer.username,
        "billing": _customer_address(customer.billing, True),
        "shipping": _customer_address(customer.shipping, False),
        "is_paying_customer": customer.is_paying_customer,
        "avatar_url": avatar_url(customer.email),
        "meta_data": _meta(customer.meta_data),
        "_links": _self_links(site, f"/wc/v3/customers/{customer.id}", "/wc/v3/customers"),
    }


def category_json(category: Category, site: SiteInfo, count: int = 0) -> JSONObject:
    return {
        "id": category.id,
        "name": category.name,
        "slug": category.slug,
        "parent": category.parent,
        "description": "",
        "display": "default",
        "image": None,
        "menu_order": 0,
        "count": count,
        "_links": _self_links(site, f"/wc/v3/products/categories/{category.id}", "/wc/v3/products/categories"),
    }


def _price_html(product: Product, site: SiteInfo) -> str:
    symbol = CURRENCY_SYMBOLS.get(site.currency, site.currency)
    # wc_price() output; note the closing tags carry "/" (escaped as "\/").
    def amount(value: Decimal) -> str:
        return (
            '<span class="woocommerce-Price-amount amount"><bdi>'
            f"{money(value, site.price_decimals)}&nbsp;"
            f'<span class="woocommerce-Price-currencySymbol">{symbol}</span></bdi></span>'
        )

    if product.sale_price is not None:
        return (
            f'<del aria-hidden="true">{amount(product.regular_price)}</del> '
            f"<ins>{amount(product.sale_price)}</ins>"
        )
    return amount(product.regular_price)


def product_json(product: Product, site: SiteInfo, categories: dict[int, Category],
                 tags: Mapping[str, Tag] | None = None, variations: list[int] | None = None) -> JSONObject:
    """A product as `GET /products/{id}` answers it — a variation too (type `variation`,
    its parent in `parent_id`, no categories or tags of its own)."""
    tags = tags or {}
    on_sale = product.sale_price is not None
    return {
        "id": product.id,
        "name": product.name,
        "slug": product.slug,
        "permalink": f"{site.url}/product/{product.slug}/",
        "date_created": fmt_local(product.created_at, site),
        "date_created_gmt": fmt_gmt(product.created_at),
        "date_modified": fmt_local(product.modified_at, site),
        "date_modified_gmt": fmt_gmt(product.modified_at),
        "type": product.type,
        "status": product.status,
        "featured": False,
        "catalog_visibility": "visible",
        "description": product.description,
        "short_description": product.short_description,
        "sku": product.sku,
        "price": plain_decimal(product.price),
        "regular_price": plain_decimal(product.regular_price),
        "sale_price": plain_decimal(product.sale_price) if product.sale_price is not None else "",
        "date_on_sale_from": None,
        "date_on_sale_from_gmt": None,
        "date_on_sale_to": None,
        "date_on_sale_to_gmt": None,
        "on_sale": on_sale,
        "purchasable": product.status == "publish",
        "total_sales": product.total_sales,
        "virtual": False,
        "downloadable": False,
        "downloads": [],
        "download_limit": -1,
        "download_expiry": -1,
        "external_url": "",
        "button_text": "",
        "tax_status": "taxable",
        "tax_class": "",
        "manage_stock": product.manage_stock,
        "stock_quantity": product.stock_quantity,
        "backorders": "no",
        "backorders_allowed": False,
        "backordered": False,
        "low_stock_amount": None,
        "sold_individually": False,
        "weight": product.weight,
        "dimensions": {"length": "", "width": "", "height": ""},
        "shipping_required": True,
        "shipping_taxable": True,
        "shipping_class": "",
        "shipping_class_id": 0,
        "reviews_allowed": True,
        "average_rating": "0.00",
        "rating_count": 0,
        "upsell_ids": [],
        "cross_sell_ids": [],
        "parent_id": product.parent_id,
        "purchase_note": "",
        "categories": [
            {"id": c.id, "name": c.name, "slug": c.slug}
            for c in (categories.get(cid) for cid in product.category_ids)
            if c is not None
        ],
        "tags": [
            {"id": t.id, "name": t.name, "slug": t.slug}
            for t in (tags.get(name) for name in product.tags)
            if t is not None
        ],
        "images": [],
        "attributes": [],
        "default_attributes": [],
        "variations": list(variations or []),
        "grouped_products": [],
        "menu_order": 0,
        "price_html": _price_html(product, site),
        "related_ids": [],
        "meta_data": _meta(product.meta_data),
        "stock_status": product.stock_status,
        "has_options": False,
        "post_password": "",
        "global_unique_id": "",
        "_links": _self_links(site, f"/wc/v3/products/{product.id}", "/wc/v3/products"),
    }


def coupon_json(coupon: Coupon, site: SiteInfo) -> JSONObject:
    dp = site.price_decimals
    return {
        "id": coupon.id,
        "code": coupon.code,
        "amount": money(coupon.amount, dp),
        "status": coupon.status,
        "date_created": fmt_local(coupon.created_at, site),
        "date_created_gmt": fmt_gmt(coupon.created_at),
        "date_modified": fmt_local(coupon.modified_at, site),
        "date_modified_gmt": fmt_gmt(coupon.modified_at),
        "discount_type": coupon.discount_type,
        "description": coupon.description,
        "date_expires": fmt_local(coupon.expires_at, site),
        "date_expires_gmt": fmt_gmt(coupon.expires_at),
        "usage_count": coupon.usage_count,
        "individual_use": coupon.individual_use,
        "product_ids": list(coupon.product_ids),
        "excluded_product_ids": list(coupon.excluded_product_ids),
        "usage_limit": coupon.usage_limit,
        "usage_limit_per_user": coupon.usage_limit_per_user,
        "limit_usage_to_x_items": coupon.limit_usage_to_x_items,
        "free_shipping": coupon.free_shipping,
        "product_categories": list(coupon.product_categories),
        "excluded_product_categories": list(coupon.excluded_product_categories),
        "exclude_sale_items": coupon.exclude_sale_items,
        "minimum_amount": money(coupon.minimum_amount, dp),
        "maximum_amount": money(coupon.maximum_amount, dp),
        "email_restrictions": list(coupon.email_restrictions),
        "used_by": list(coupon.used_by),
        "meta_data": _meta(coupon.meta_data),
        "_links": _self_links(site, f"/wc/v3/coupons/{coupon.id}", "/wc/v3/coupons"),
    }


def webhook_json(webhook: Webhook, site: SiteInfo) -> JSONObject:
    # WC_REST_Webhooks_V2_Controller::prepare_item_for_response(): the secret
    # and failure_count are never part of the REST output.
    return {
        "id": webhook.id,
        "name": webhook.name,
        "status": webhook.status,
        "topic": webhook.topic,
        "resource": webhook.resource,
        "event": webhook.event,
        "hooks": list(hooks_for_topic(webhook.topic)),
        "delivery_url": webhook.delivery_url,
        "date_created": fmt_local(webhook.created_at, site),
        "date_created_gmt": fmt_gmt(webhook.created_at),
        "date_modified": fmt_local(webhook.modified_at, site),
        "date_modified_gmt": fmt_gmt(webhook.modified_at),
        "_links": _self_links(site, f"/wc/v3/webhooks/{webhook.id}", "/wc/v3/webhooks"),
    }
