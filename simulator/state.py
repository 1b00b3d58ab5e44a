"""In-memory state of the simulated WooCommerce store.

Everything a store change does happens here: it updates the records, stamps
dates from an injectable clock, and fires the WordPress hooks WooCommerce would
fire.  Hooks are matched against webhooks exactly like ``WC_Webhook::process``
does and the resulting deliveries are queued at the end of the "request"
(one public mutation = one PHP request), which is what makes
``order.created`` + ``order.updated`` from one REST call, and the per-request
de-duplication, come out right.

Thread-safety: one re-entrant lock guards all state.  Mutations may come from
the REST app (server thread), from tests or from the traffic generator (other
threads); the delivery worker reads state under the same lock when it builds a
payload.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import random
import re
import string
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, TypeVar
from urllib.parse import urlparse
from zoneinfo import ZoneInfo

from wooflow.jsontypes import JSONObject

from .errors import RestError, not_found
from .faults import RestFault
from .models import (
    BILLING_KEYS,
    BILLING_PERIODS,
    ORDER_STATUS_LABELS,
    ORDER_STATUSES,
    PAID_STATUSES,
    SHIPPING_KEYS,
    SUBSCRIPTION_STATUSES,
    ZERO,
    Category,
    Coupon,
    CouponLine,
    Customer,
    DeliveryAttempt,
    FeeLine,
    LineItem,
    MetaItem,
    Order,
    OrderNote,
    Product,
    Refund,
    ShippingLine,
    Subscription,
    Tag,
    Webhook,
    blank_billing,
    blank_shipping,
)
from .queue import DeliveryQueue
from .representations import (
    CURRENCY_SYMBOLS,
    SiteInfo,
    coupon_json,
    customer_json,
    money,
    order_json,
    product_json,
    subscription_json,
    webhook_json,
)
from .topics import POST_HOOKS, hooks_for_topic, is_valid_topic

__all__ = ["ManualClock", "RestError", "SimulatedStore"]

# wp_generate_password( 50, true, true ): letters, digits, special and extra special chars.
_PASSWORD_CHARS = (
    string.ascii_letters + string.digits + "!@#$%^&*()" + "-_ []{}<>~`+=,.;:/?|"
)
# Post types behind the shared wp_posts id sequence, mapped to webhook resources.
_POST_TYPE_RESOURCE = {"shop_order": "order", "product": "product", "product_variation": "product",
                       "shop_coupon": "coupon", "shop_subscription": "subscription"}
_PERIOD_DAYS = {"day": 1, "week": 7}  # months and years move by calendar (wcs_add_time)
_T = TypeVar("_T")
_Post = TypeVar("_Post", Product, Coupon)  # the posts with a trash and no hooks of their own
_Saved = TypeVar("_Saved", Product, Coupon, Customer)


def _found(table: Mapping[int, _T], item_id: int, resource: str) -> _T:
    """The item, or the resource's REST 404 (errors.NOT_FOUND)."""
    item = table.get(item_id)
    if item is None:
        raise not_found(resource)
    return item


class ManualClock:
    """A clock that only moves when told to: deterministic dates in tests. (Not wooflow's
    FrozenClock: the simulator is WooCommerce's side and shares no code with wooflow; its
    time is unix seconds, like PHP's time().)"""

    def __init__(self, start: float | datetime = 1_790_000_000.0) -> None:
        self._now = start.timestamp() if isinstance(start, datetime) else float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, when: float | datetime) -> None:
        with self._lock:
            self._now = when.timestamp() if isinstance(when, datetime) else float(when)


def _dec(value: Any, field: str = "value") -> Decimal:
    try:
        return Decimal(str(value)) if value not in (None, "") else ZERO
    except InvalidOperation:
        raise RestError("rest_invalid_param", f"Invalid parameter(s): {field}", 400) from None


def _q2(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off")
    return bool(value)


def _slugify(text: str) -> str:
    # sanitize_title() keeps ASCII letters/digits and turns the rest into dashes;
    # accented letters are transliterated by remove_accents() first.
    lowered = text.lower().replace("ł", "l").replace("ß", "ss").replace("ø", "o")
    ascii_text = unicodedata.normalize("NFKD", lowered).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-") or "item"


class SimulatedStore:
    """A WooCommerce store's data plus the webhook machinery around it."""

    def __init__(
        self,
        *,
        url: str = "http://127.0.0.1",
        timezone: str = "Europe/Warsaw",
        currency: str = "PLN",
        consumer_key: str | None = None,
        consumer_secret: str | None = None,
        clock: Callable[[], float] | None = None,
        seed: int = 0,
        delivery_delay: float = 0.0,
        delivery_jitter: float = 0.0,
        max_delivery_failures: int = 5,
        max_log_entries: int | None = 10_000,
        first_post_id: int = 10,
        wc_version: str = "9.4.0",
        wp_version: str = "6.7",
    ) -> None:
        ZoneInfo(timezone)  # fail fast on an unknown zone
        self.lock = threading.RLock()
        self.clock: Callable[[], float] = clock or time.time
        self._rng = random.Random(seed)
        self._url = url.rstrip("/")
        self.timezone = timezone
        self.currency = currency
        self.wc_version = wc_version
        self.wp_version = wp_version
        self.max_delivery_failures = max_delivery_failures
        # Attempts keep request bodies; a long CLI run must not grow without bound.
        self.max_log_entries = max_log_entries
        self.consumer_key = consumer_key or "ck_" + self._hex(40)
        self.consumer_secret = consumer_secret or "cs_" + self._hex(40)
        # wp_hash() salt behind X-WC-Webhook-Delivery-ID.
        self._salt = self._hex(64)
        self.queue = DeliveryQueue(delay=delivery_delay, jitter=delivery_jitter, seed=seed)

        # WordPress keeps separate id sequences per table; orders, refunds,
        # products and coupons share wp_posts ids (HPOS still reserves a
        # placeholder post per order), so order ids are not contiguous.
        self._next_post_id = first_post_id
        self._next_user_id = 2  # 1 is the admin that owns the API keys
        self._next_comment_id = 1
        self._next_item_id = 1
        self._next_meta_id = 1
        self._next_webhook_id = 1
        self._next_term_id = 16  # 15 is "Uncategorized" in a fresh install
        self._post_types: dict[int, str] = {}

        self.orders: dict[int, Order] = {}
        self.subscriptions: dict[int, Subscription] = {}  # WooCommerce Subscriptions' shop_subscription
        self.refunds: dict[int, int] = {}  # refund id -> parent order id
        self.notes: dict[int, OrderNote] = {}
        self.users: dict[int, Customer] = {}
        self.products: dict[int, Product] = {}
        self.categories: dict[int, Category] = {15: Category(15, "Uncategorized", "uncategorized")}
        self.tags: dict[str, Tag] = {}  # product_tag terms by name
        self.coupons: dict[int, Coupon] = {}
        self.webhooks: dict[int, Webhook] = {}
        self.delivery_log: list[DeliveryAttempt] = []
        # Carts left without checkout; storefront events will replay these later.
        self.abandoned_carts: list[JSONObject] = []
        # The REST API failing or slow for a while (faults.py); None: it answers normally.
        self.rest_fault: RestFault | None = None

        now = self._now()
        self.admin = Customer(
            id=1, email="admin@example.com", username="admin", role="administrator",
            created_at=now, modified_at=now, first_name="Admin",
        )
        self.users[1] = self.admin

        # Hooks fired during the current mutation: (webhook id, arg, hook).
        self._batch: list[tuple[int, Any, str]] | None = None

    # ------------------------------------------------------------------ site

    @property
    def url(self) -> str:
        """Home URL without trailing slash (the server sets it once bound)."""
        return self._url

    @url.setter
    def url(self, value: str) -> None:
        with self.lock:
            self._url = value.rstrip("/")

    @property
    def home_url(self) -> str:
        """home_url('/') – what X-WC-Webhook-Source carries."""
        return self._url + "/"

    @property
    def site(self) -> SiteInfo:
        return SiteInfo(url=self._url, timezone=self.timezone, currency=self.currency)

    @property
    def user_agent(self) -> str:
        return f"WooCommerce/{self.wc_version} Hookshot (WordPress/{self.wp_version})"

    # --------------------------------------------------------------- helpers

    def _now(self) -> int:
        # WordPress stores dates with one-second resolution.
        return int(self.clock())

    def _hex(self, n: int) -> str:
        return "".join(self._rng.choice("0123456789abcdef") for _ in range(n))

    def _post_id(self, post_type: str) -> int:
        pid = self._next_post_id
        self._next_post_id += 1
        self._post_types[pid] = post_type
        return pid

    def _item_id(self) -> int:
        iid = self._next_item_id
        self._next_item_id += 1
        return iid

    def _meta_list(self, raw: Any) -> list[MetaItem]:
        items: list[MetaItem] = []
        for entry in raw or []:
            items.append(MetaItem(self._next_meta_id, str(entry["key"]), entry.get("value")))
            self._next_meta_id += 1
        return items

    def _saved(self, item: _Saved, fields: Mapping[str, Any], *hooks: str) -> _Saved:
        """The end of a product's, coupon's or customer's update: `meta_data` merged, modified
        now, the update hooks fired. (An order's differs: totals and status come in between.)"""
        if "meta_data" in fields:
            self._update_meta(item.meta_data, fields["meta_data"])
        item.modified_at = self._now()
        for hook in hooks:
            self._fire(hook, item.id)
        return item

    def _update_meta(self, existing: list[MetaItem], raw: Any) -> None:
        """update_meta_data(): match by id, else by key, else add."""
        for entry in raw or []:
            key = str(entry.get("key", ""))
            target = None
            if entry.get("id"):
                target = next((m for m in existing if m.id == int(entry["id"])), None)
            if target is None:
                target = next((m for m in existing if m.key == key), None)
            if target is not None:
                target.key = key or target.key
                target.value = entry.get("value")
            else:
                existing.extend(self._meta_list([entry]))

    def generate_password(self, length: int = 50, special: bool = True) -> str:
        """wp_generate_password(length, true, true) from the store's seeded RNG."""
        chars = _PASSWORD_CHARS if special else string.ascii_letters + string.digits
        return "".join(self._rng.choice(chars) for _ in range(length))

    def delivery_id(self, webhook_id: int) -> str:
        """wp_hash( $id . strtotime('now') ): same webhook + same second => same id."""
        data = f"{webhook_id}{int(self.clock())}".encode()
        return hmac.new(self._salt.encode(), data, hashlib.md5).hexdigest()

    # ------------------------------------------------------ hooks & webhooks

    @contextmanager
    def request(self) -> Iterator[None]:
        """One PHP request: hooks fired inside are queued together at the end.

        Nested use joins the outer request, so a compound operation (checkout
        = create order + action + payment) de-duplicates like WooCommerce.
        """
        with self.lock:
            outer = self._batch is None
            if outer:
                self._batch = []
            try:
                yield
            finally:
                if outer:
                    batch, self._batch = self._batch or [], None
                    # shutdown -> wc_webhook_execute_queue(): schedule each one.
                    for webhook_id, arg, hook in batch:
                        self.queue.enqueue(webhook_id, arg, hook)

    def do_action(self, hook: str, arg: Any) -> None:
        """Fire a WordPress action; webhooks listening to it get a delivery queued."""
        with self.request():
            self._fire(hook, arg)

    def _fire(self, hook: str, arg: Any) -> None:
        assert self._batch is not None, "hooks fire inside store.request()"
        for webhook in self.webhooks.values():
            if webhook.status != "active" or not is_valid_topic(webhook.topic):
                continue
            if hook not in hooks_for_topic(webhook.topic):
                continue
            if not self._is_valid_action(webhook, hook, arg) or not self._is_valid_resource(webhook, arg):
                continue
            # WC_Webhook::$processed – once per webhook and argument per request.
            if any(w == webhook.id and a == arg for w, a, _ in self._batch):
                continue
            self._batch.append((webhook.id, arg, hook))

    def _is_valid_action(self, webhook: Webhook, hook: str, arg: Any) -> bool:
        if hook in POST_HOOKS:
            if not isinstance(arg, int) or arg <= 0:
                return False
            post_type = self._post_types.get(arg)
            return _POST_TYPE_RESOURCE.get(post_type or "") == webhook.resource
        if hook == "delete_user":
            # Only users with the customer role produce customer.deleted.
            user = self.users.get(int(arg)) if isinstance(arg, int) else None
            return user is not None and user.role == "customer"
        return True

    def _is_valid_resource(self, webhook: Webhook, arg: Any) -> bool:
        resource = webhook.resource
        if resource == "order":
            order = self.orders.get(arg) if isinstance(arg, int) else None
            return order is not None and order.status not in ("draft", "auto-draft", "new")
        if resource == "product":
            product = self.products.get(arg) if isinstance(arg, int) else None
            return product is None or product.status not in ("auto-draft", "new")
        if resource == "coupon":
            coupon = self.coupons.get(arg) if isinstance(arg, int) else None
            return coupon is None or coupon.status not in ("auto-draft", "new")
        return True

    def create_webhook(
        self,
        topic: str,
        delivery_url: str,
        *,
        secret: str | None = None,
        name: str | None = None,
        status: str = "active",
        ping: bool = True,
    ) -> Webhook:
        """Create a webhook; like the REST controller, ping its URL right away.

        ``status`` is honoured here for convenience; the REST endpoint ignores
        it on creation exactly as WooCommerce does (always ``active``).
        """
        topic = (topic or "").strip()
        if not topic or not is_valid_topic(topic.lower()):
            raise RestError("woocommerce_rest_shop_webhook_invalid_topic",
                            "Webhook topic is required and must be valid.", 400)
        if not _is_valid_url(delivery_url):
            raise RestError("woocommerce_rest_shop_webhook_invalid_delivery_url",
                            "Webhook delivery URL must be a valid URL starting with http:// or https://.", 400)
        if status not in ("active", "paused", "disabled"):
            status = "disabled"  # WC_Webhook::set_status()
        with self.lock:
            now = self._now()
            if not name:
                stamp = datetime.fromtimestamp(now, ZoneInfo(self.timezone)).strftime("%b %d, %Y @ %I:%M %p")
                name = f"Webhook created on {stamp}"
            webhook = Webhook(
                id=self._next_webhook_id, name=name, status=status, topic=topic,
                delivery_url=delivery_url,
                secret=secret if secret else self.generate_password(50, True),
                created_at=now, modified_at=now,
            )
            self._next_webhook_id += 1
            self.webhooks[webhook.id] = webhook
        if ping:
            from .delivery import send_ping_sync  # delivery depends on state, not vice versa

            send_ping_sync(self, webhook.id)
        return webhook

    def update_webhook(self, webhook_id: int, **fields: Any) -> Webhook:
        with self.lock:
            webhook = self.webhooks.get(webhook_id)
            if webhook is None:
                raise RestError("woocommerce_rest_shop_webhook_invalid_id", "ID is invalid.", 400)
            topic = fields.get("topic")
            if topic:
                if not is_valid_topic(str(topic).lower()):
                    raise RestError("woocommerce_rest_shop_webhook_invalid_topic", "Webhook topic must be valid.", 400)
                webhook.topic = str(topic)
            url = fields.get("delivery_url")
            if url:
                if not _is_valid_url(str(url)):
                    raise RestError("woocommerce_rest_shop_webhook_invalid_delivery_url",
                                    "Webhook delivery URL must be a valid URL starting with http:// or https://.", 400)
                webhook.delivery_url = str(url)
            if fields.get("secret"):
                webhook.secret = str(fields["secret"])
            status = fields.get("status")
            if status:
                status = str(status).lower()
                if status not in ("active", "paused", "disabled"):
                    raise RestError("woocommerce_rest_shop_webhook_invalid_status", "Webhook status must be valid.",
                                    400)
                webhook.status = status
            if fields.get("name"):
                webhook.name = str(fields["name"])
            if "failure_count" in fields:  # simulator-only knob
                webhook.failure_count = int(fields["failure_count"])
            webhook.modified_at = self._now()
            return webhook

    def delete_webhook(self, webhook_id: int) -> Webhook:
        with self.lock:
            webhook = self.webhooks.pop(webhook_id, None)
            if webhook is None:
                raise not_found("webhook")
            return webhook

    def record_attempt(self, attempt: DeliveryAttempt) -> None:
        """Log an attempt and apply WC_Webhook::log_delivery()'s failure rules."""
        with self.lock:
            webhook = self.webhooks.get(attempt.webhook_id)
            if webhook is not None:
                if attempt.kind == "ping":
                    if attempt.status_code == 200:
                        webhook.pending_delivery = False
                elif attempt.success:
                    webhook.failure_count = 0
                elif webhook.failure_count > self.max_delivery_failures:
                    # failed_delivery(): count stays, the webhook is switched off.
                    webhook.status = "disabled"
                else:
                    webhook.failure_count += 1
                attempt.failure_count_after = webhook.failure_count
                attempt.webhook_status_after = webhook.status
            self.delivery_log.append(attempt)
            if self.max_log_entries is not None and len(self.delivery_log) > self.max_log_entries:
                del self.delivery_log[: len(self.delivery_log) - self.max_log_entries]

    def build_payload(self, webhook_id: int, arg: Any) -> tuple[Webhook, Any] | None:
        """WC_Webhook::build_payload() at delivery time; None if the webhook is gone."""
        with self.lock:
            webhook = self.webhooks.get(webhook_id)
            if webhook is None:
                return None
            snapshot = copy.copy(webhook)
            if webhook.event == "deleted":
                return snapshot, {"id": arg}
            if webhook.resource == "action":
                return snapshot, {"action": hooks_for_topic(webhook.topic)[0], "arg": arg}
            if webhook.resource in ("order", "product", "coupon", "customer", "subscription"):
                try:
                    return snapshot, self.rest_item(webhook.resource, arg)
                except RestError as error:
                    # rest_do_request() turned the WP_Error into its data array.
                    return snapshot, error.body()
            return snapshot, []

    # -------------------------------------------------------------- queries

    def rest_item(self, resource: str, item_id: Any) -> JSONObject:
        """GET /wc/v3/{resource}s/{id} as a dict; raises the REST 404 error."""
        with self.lock:
            try:
                key = int(item_id)
            except (TypeError, ValueError):
                raise not_found(resource) from None
            site = self.site
            if resource == "order":
                return order_json(_found(self.orders, key, "order"), site, self.products)
            if resource == "product":
                return self._product_json(_found(self.products, key, "product"))
            if resource == "coupon":
                return coupon_json(_found(self.coupons, key, "coupon"), site)
            if resource == "customer":
                return customer_json(_found(self.users, key, "customer"), site)
            if resource == "webhook":
                return webhook_json(_found(self.webhooks, key, "webhook"), site)
            if resource == "subscription":
                return subscription_json(_found(self.subscriptions, key, "subscription"), site, self.products)
            raise KeyError(resource)

    def get_order(self, order_id: int) -> Order | None:
        """The live record (treat as read-only; mutate through the store)."""
        with self.lock:
            return self.orders.get(order_id)

    def get_order_notes(self, order_id: int) -> list[OrderNote]:
        with self.lock:
            return sorted((n for n in self.notes.values() if n.order_id == order_id),
                          key=lambda n: (n.created_at, n.id), reverse=True)

    def deliveries(self, webhook_id: int | None = None, kind: str | None = "delivery") -> list[DeliveryAttempt]:
        """Delivery log entries, oldest first, optionally filtered."""
        with self.lock:
            return [
                a for a in self.delivery_log
                if (webhook_id is None or a.webhook_id == webhook_id) and (kind is None or a.kind == kind)
            ]

    # --------------------------------------------------------- delivery wait

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until no delivery is queued or running (False on timeout)."""
        return self.queue.wait_idle(timeout)

    async def deliveries_idle(self, timeout: float = 10.0) -> bool:
        """Async form of :meth:`wait_idle` (waits in a thread, not the loop)."""
        return await asyncio.to_thread(self.queue.wait_idle, timeout)

    def pause_deliveries(self) -> None:
        """Hold queued deliveries (as if the queue runner had not fired yet)."""
        self.queue.pause()

    def resume_deliveries(self) -> None:
        self.queue.resume()

    # ------------------------------------------------------------ categories

    def create_category(self, name: str, *, slug: str | None = None, parent: int = 0) -> Category:
        with self.lock:
            category = Category(self._next_term_id, name, slug or _slugify(name), parent)
            self._next_term_id += 1
            self.categories[category.id] = category
            return category

    def category_by_name(self, name: str) -> Category:
        with self.lock:
            for category in self.categories.values():
                if category.name == name:
                    return category
            return self.create_category(name)

    def tag_by_name(self, name: str) -> Tag:
        """The product_tag term of this name (created on first use, as WordPress does for
        a tag given by name)."""
        with self.lock:
            tag = self.tags.get(name)
            if tag is None:
                tag = self.tags[name] = Tag(self._next_term_id, name, _slugify(name))
                self._next_term_id += 1
            return tag

    def _tag_names(self, tags: list[Any] | None) -> list[str]:
        """Tags given as names, `{"name": n}` or `{"id": n}`, as the names the product keeps."""
        by_id = {t.id: t.name for t in self.tags.values()}
        names: list[str] = []
        for entry in tags or []:
            if isinstance(entry, Mapping):
                name = str(entry.get("name") or by_id.get(int(entry.get("id") or 0), ""))
            else:
                name = str(entry)
            if name:
                names.append(self.tag_by_name(name).name)
        return names

    # -------------------------------------------------------------- products

    def _product_json(self, product: Product) -> JSONObject:
        variations = [p.id for p in self.products.values() if p.parent_id == product.id and p.type == "variation"]
        return product_json(product, self.site, self.categories, self.tags, variations)

    def create_variation(self, parent_id: int, regular_price: Any = "0", *, sku: str = "",
                         attributes: Mapping[str, str] | None = None, created_at: int | None = None) -> Product:
        """A variation of a variable product (`woocommerce_new_product_variation`): its own
        price and SKU, no categories or tags of its own — it has its parent's."""
        with self.request():
            parent = _found(self.products, parent_id, "product")
            if parent.type != "variable":
                raise RestError("woocommerce_rest_product_invalid_id", "Invalid ID.", 404)
            now = created_at if created_at is not None else self._now()
            label = ", ".join((attributes or {}).values())
            variation = Product(
                id=self._post_id("product_variation"), name=f"{parent.name} - {label}" if label else parent.name,
                slug=self._unique_slug(f"{parent.name} {label}"), created_at=now, modified_at=now,
                regular_price=_dec(regular_price, "regular_price"), type="variation", parent_id=parent.id,
                sku=sku, category_ids=[],
            )
            self.products[variation.id] = variation
            self._fire("woocommerce_new_product_variation", variation.id)
            return variation

    def create_product(
        self,
        name: str,
        regular_price: Any = "0",
        *,
        sale_price: Any = None,
        sku: str = "",
        categories: list[Any] | None = None,
        status: str = "publish",
        type: str = "simple",
        description: str = "",
        short_description: str = "",
        tags: list[str] | None = None,
        stock_status: str = "instock",
        manage_stock: bool = False,
        stock_quantity: int | None = None,
        slug: str | None = None,
        meta_data: list[JSONObject] | None = None,
        created_at: int | None = None,
    ) -> Product:
        """Create a product; ``categories`` takes ids, names or ``{"id": n}``."""
        with self.request():
            if sku and any(p.sku == sku for p in self.products.values()):
                raise RestError("product_invalid_sku", "Invalid or duplicated SKU.", 400,
                                {"resource_id": next(p.id for p in self.products.values() if p.sku == sku),
                                 "unique_sku": sku})
            now = created_at if created_at is not None else self._now()
            product = Product(
                id=self._post_id("product"), name=name, slug=slug or self._unique_slug(name), created_at=now,
                modified_at=now, regular_price=_dec(regular_price, "regular_price"),
                sale_price=_dec(sale_price, "sale_price") if sale_price not in (None, "") else None,
                type=type, status=status, sku=sku, description=description,
                short_description=short_description, category_ids=self._category_ids(categories),
                tags=self._tag_names(list(tags or [])), stock_status=stock_status, manage_stock=manage_stock,
                stock_quantity=stock_quantity, meta_data=self._meta_list(meta_data),
            )
            self.products[product.id] = product
            self._fire("woocommerce_new_product", product.id)
            return product

    def _unique_slug(self, name: str) -> str:
        base = _slugify(name)
        taken = {p.slug for p in self.products.values()}
        slug, n = base, 2
        while slug in taken:
            slug, n = f"{base}-{n}", n + 1
        return slug

    def _category_ids(self, categories: list[Any] | None) -> list[int]:
        ids: list[int] = []
        for entry in categories or []:
            if isinstance(entry, Mapping):
                if entry.get("id"):
                    ids.append(int(entry["id"]))
                elif entry.get("name"):
                    ids.append(self.category_by_name(str(entry["name"])).id)
            elif isinstance(entry, int):
                ids.append(entry)
            else:
                ids.append(self.category_by_name(str(entry)).id)
        return ids or [15]

    def update_product(self, product_id: int, **fields: Any) -> Product:
        with self.request():
            product = _found(self.products, product_id, "product")
            for key in ("name", "sku", "type", "status", "description", "short_description",
                        "stock_status", "slug", "weight"):
                if key in fields and fields[key] is not None:
                    setattr(product, key, str(fields[key]))
            if "regular_price" in fields:
                product.regular_price = _dec(fields["regular_price"], "regular_price")
            if "sale_price" in fields:
                value = fields["sale_price"]
                product.sale_price = _dec(value, "sale_price") if value not in (None, "") else None
            if "categories" in fields:
                product.category_ids = self._category_ids(fields["categories"])
            if "tags" in fields:
                product.tags = self._tag_names(fields["tags"])
            if "manage_stock" in fields:
                product.manage_stock = _as_bool(fields["manage_stock"])
            if "stock_quantity" in fields:
                value = fields["stock_quantity"]
                product.stock_quantity = None if value is None else int(value)
            return self._saved(product, fields, "woocommerce_update_product")

    def delete_product(self, product_id: int, *, force: bool = False) -> Product:
        """Trash (fires product.deleted) or, with force, delete for good (fires nothing)."""
        return self._trash_post(self.products, "product", "product", product_id, force)

    def restore_product(self, product_id: int) -> Product:
        return self._untrash_post(self.products, "product", product_id)

    # ------------------------------------------------------------- customers

    def create_customer(
        self,
        email: str,
        *,
        first_name: str = "",
        last_name: str = "",
        username: str | None = None,
        role: str = "customer",
        billing: Mapping[str, Any] | None = None,
        shipping: Mapping[str, Any] | None = None,
        meta_data: list[JSONObject] | None = None,
        created_at: int | None = None,
    ) -> Customer:
        """Register a WordPress user (any role fires customer.created via user_register)."""
        with self.request():
            email = (email or "").strip()
            if not email or "@" not in email:
                raise RestError("registration-error-invalid-email", "Please provide a valid email address.", 400)
            if any(u.email.lower() == email.lower() for u in self.users.values()):
                raise RestError("registration-error-email-exists",
                                "An account is already registered with your email address. "
                                "<a href=\"#\" class=\"showlogin\">Please log in.</a>", 400)
            username = username or self._unique_username(email)
            if any(u.username == username for u in self.users.values()):
                raise RestError("registration-error-username-exists",
                                "An account is already registered with that username. Please choose another.", 400)
            now = created_at if created_at is not None else self._now()
            user = Customer(
                id=self._next_user_id, email=email, username=username, role=role,
                created_at=now, modified_at=now, first_name=first_name, last_name=last_name,
                meta_data=self._meta_list(meta_data),
            )
            self._next_user_id += 1
            _merge_address(user.billing, billing, BILLING_KEYS)
            _merge_address(user.shipping, shipping, SHIPPING_KEYS)
            self.users[user.id] = user
            self._fire("user_register", user.id)
            self._fire("woocommerce_new_customer", user.id)
            return user

    def _unique_username(self, email: str) -> str:
        base = re.sub(r"[^a-z0-9._-]", "", email.split("@")[0].lower()) or "user"
        taken = {u.username for u in self.users.values()}
        name, n = base, 1
        while name in taken:
            name, n = f"{base}{n}", n + 1
        return name

    def update_customer(self, customer_id: int, **fields: Any) -> Customer:
        with self.request():
            user = _found(self.users, customer_id, "customer")
            if fields.get("email") and fields["email"] != user.email:
                if any(u.email.lower() == str(fields["email"]).lower() for u in self.users.values()):
                    raise RestError("registration-error-email-exists",
                                    "An account is already registered with your email address.", 400)
                user.email = str(fields["email"])
            for key in ("first_name", "last_name", "role"):
                if fields.get(key) is not None:
                    setattr(user, key, str(fields[key]))
            if fields.get("billing"):
                _merge_address(user.billing, fields["billing"], BILLING_KEYS)
            if fields.get("shipping"):
                _merge_address(user.shipping, fields["shipping"], SHIPPING_KEYS)
            if "is_paying_customer" in fields:
                user.is_paying_customer = _as_bool(fields["is_paying_customer"])
            return self._saved(user, fields, "profile_update", "woocommerce_update_customer")

    def delete_customer(self, customer_id: int) -> Customer:
        """wp_delete_user(): fires delete_user first (customer role only delivers)."""
        with self.request():
            user = _found(self.users, customer_id, "customer")
            self._fire("delete_user", customer_id)
            del self.users[customer_id]
            # wc_reset_order_customer_id_on_deleted_user(): a direct DB update,
            # so the affected orders fire no order.updated.
            for order in self.orders.values():
                if order.customer_id == customer_id:
                    order.customer_id = 0
            return user

    # ---------------------------------------------------------------- coupons

    def create_coupon(
        self,
        code: str,
        amount: Any = "0",
        discount_type: str = "fixed_cart",
        *,
        description: str = "",
        date_expires: int | None = None,
        usage_limit: int | None = None,
        usage_limit_per_user: int | None = None,
        individual_use: bool = False,
        free_shipping: bool = False,
        email_restrictions: list[str] | None = None,
        minimum_amount: Any = "0",
        maximum_amount: Any = "0",
        product_ids: list[int] | None = None,
        meta_data: list[JSONObject] | None = None,
    ) -> Coupon:
        with self.request():
            code = _coupon_code(code)
            if not code:
                raise RestError("woocommerce_rest_empty_coupon_code", "The coupon code cannot be empty.", 400)
            if self.coupon_by_code(code) is not None:
                raise RestError("woocommerce_rest_coupon_code_already_exists", "The coupon code already exists", 400)
            if discount_type not in ("percent", "fixed_cart", "fixed_product"):
                raise RestError("rest_invalid_param", "Invalid parameter(s): discount_type", 400,
                                {"params": {"discount_type": "discount_type is not one of percent, fixed_cart, "
                                                             "and fixed_product."}})
            now = self._now()
            coupon = Coupon(
                id=self._post_id("shop_coupon"), code=code, amount=_dec(amount, "amount"),
                discount_type=discount_type, created_at=now, modified_at=now, description=description,
                expires_at=date_expires, usage_limit=usage_limit, usage_limit_per_user=usage_limit_per_user,
                individual_use=individual_use, free_shipping=free_shipping,
                email_restrictions=[e.lower() for e in email_restrictions or []],
                minimum_amount=_dec(minimum_amount), maximum_amount=_dec(maximum_amount),
                product_ids=list(product_ids or []), meta_data=self._meta_list(meta_data),
            )
            self.coupons[coupon.id] = coupon
            self._fire("woocommerce_new_coupon", coupon.id)
            return coupon

    def coupon_by_code(self, code: str) -> Coupon | None:
        wanted = _coupon_code(code)
        with self.lock:
            for coupon in self.coupons.values():
                if coupon.code == wanted and coupon.status != "trash":
                    return coupon
            return None

    def update_coupon(self, coupon_id: int, **fields: Any) -> Coupon:
        with self.request():
            coupon = _found(self.coupons, coupon_id, "coupon")
            if fields.get("code"):
                code = _coupon_code(str(fields["code"]))
                other = self.coupon_by_code(code)
                if other is not None and other.id != coupon.id:
                    raise RestError("woocommerce_rest_coupon_code_already_exists", "The coupon code already exists",
                                    400)
                coupon.code = code
            if "amount" in fields:
                coupon.amount = _dec(fields["amount"], "amount")
            for key in ("discount_type", "description", "status"):
                if fields.get(key) is not None:
                    setattr(coupon, key, str(fields[key]))
            for key in ("usage_limit", "usage_limit_per_user", "limit_usage_to_x_items"):
                if key in fields:
                    setattr(coupon, key, None if fields[key] in (None, "") else int(fields[key]))
            for key in ("individual_use", "free_shipping", "exclude_sale_items"):
                if key in fields:
                    setattr(coupon, key, _as_bool(fields[key]))
            if "email_restrictions" in fields:
                coupon.email_restrictions = [str(e).lower() for e in fields["email_restrictions"] or []]
            if "date_expires" in fields:
                coupon.expires_at = _parse_site_date(fields["date_expires"], self.timezone)
            if "date_expires_gmt" in fields:
                coupon.expires_at = _parse_site_date(fields["date_expires_gmt"], "UTC")
            for key in ("minimum_amount", "maximum_amount"):
                if key in fields:
                    setattr(coupon, key, _dec(fields[key], key))
            return self._saved(coupon, fields, "woocommerce_update_coupon")

    def delete_coupon(self, coupon_id: int, *, force: bool = False) -> Coupon:
        return self._trash_post(self.coupons, "coupon", "shop_coupon", coupon_id, force)

    def restore_coupon(self, coupon_id: int) -> Coupon:
        return self._untrash_post(self.coupons, "coupon", coupon_id)

    def _trash_post(self, table: dict[int, _Post], resource: str, post_type: str, post_id: int,
                    force: bool) -> _Post:
        """wp_trash_post() (fires `<resource>.deleted`) or, with force, wp_delete_post() (fires
        nothing) of a product or coupon. Orders have their own hooks (`delete_order`)."""
        with self.request():
            post = _found(table, post_id, resource)
            if force:
                self._fire("delete_post", post_id)
                del table[post_id]
                self._post_types.pop(post_id, None)
                return post
            if post.status == "trash":
                raise RestError("woocommerce_rest_already_trashed", f"The {post_type} has already been deleted.", 410)
            post.status_before_trash = post.status
            post.status = "trash"
            post.modified_at = self._now()
            self._fire("wp_trash_post", post_id)
            return post

    def _untrash_post(self, table: dict[int, _Post], resource: str, post_id: int) -> _Post:
        with self.request():
            post = _found(table, post_id, resource)
            post.status = post.status_before_trash or "draft"
            post.status_before_trash = None
            post.modified_at = self._now()
            self._fire("untrashed_post", post_id)
            return post

    # ----------------------------------------------------------------- orders

    def create_order(
        self,
        *,
        line_items: Sequence[Mapping[str, Any]] | None = None,
        customer_id: int = 0,
        billing: Mapping[str, Any] | None = None,
        shipping: Mapping[str, Any] | None = None,
        status: str | None = None,
        set_paid: bool = False,
        payment_method: str = "",
        payment_method_title: str = "",
        transaction_id: str = "",
        shipping_lines: Sequence[Mapping[str, Any]] | None = None,
        fee_lines: Sequence[Mapping[str, Any]] | None = None,
        coupon_lines: Sequence[Mapping[str, Any]] | None = None,
        customer_note: str = "",
        meta_data: list[JSONObject] | None = None,
        currency: str | None = None,
        parent_id: int = 0,
        customer_ip_address: str = "",
        customer_user_agent: str = "",
        created_via: str = "rest-api",
        cart_hash: str = "",
        created_at: int | None = None,
    ) -> Order:
        """Create an order the way WC_REST_Orders_V2_Controller::save_object() does.

        With ``created_via="rest-api"`` (the default) the order is saved twice
        before the response, so both ``order.created`` and ``order.updated``
        fire, as on a real store.  ``created_via="checkout"`` saves once (see
        :meth:`checkout`).  ``created_at`` backdates the order (simulator-only).
        """
        with self.request():
            if customer_id and int(customer_id) not in self.users:
                raise RestError("woocommerce_rest_invalid_customer_id", "Customer ID is invalid.", 400)
            if status is not None and status not in ORDER_STATUSES:
                raise RestError("rest_invalid_param", "Invalid parameter(s): status", 400,
                                {"params": {"status": "status is not one of " + ", ".join(ORDER_STATUSES) + "."}})
            now = created_at if created_at is not None else self._now()
            order = Order(
                id=self._post_id("shop_order"), order_key="wc_order_" + self.generate_password(13, False),
                created_via=created_via, status="pending", currency=currency or self.currency,
                created_at=now, modified_at=now, customer_id=int(customer_id or 0), parent_id=int(parent_id or 0),
                version=self.wc_version, payment_method=payment_method, payment_method_title=payment_method_title,
                transaction_id=transaction_id, customer_ip_address=customer_ip_address,
                customer_user_agent=customer_user_agent, customer_note=customer_note, cart_hash=cart_hash,
                meta_data=self._meta_list(meta_data),
            )
            _merge_address(order.billing, billing, BILLING_KEYS)
            _merge_address(order.shipping, shipping, SHIPPING_KEYS)
            for raw in line_items or []:
                order.line_items.append(self._new_line_item(raw))
            for raw in shipping_lines or []:
                order.shipping_lines.append(self._new_shipping_line(raw))
            for raw in fee_lines or []:
                order.fee_lines.append(FeeLine(self._item_id(), str(raw.get("name", "Fee")),
                                               _dec(raw.get("total"), "total"),
                                               tax_class=str(raw.get("tax_class", "")),
                                               tax_status=str(raw.get("tax_status", "taxable"))))
            for raw in coupon_lines or []:
                self._apply_coupon(order, str(raw.get("code", "")))
            self.orders[order.id] = order
            self._calculate_totals(order)
            self._fire("woocommerce_new_order", order.id)
            if created_via == "rest-api":
                # calculate_totals() and the status save are further save() calls.
                self._fire("woocommerce_update_order", order.id)
            if status and status != "pending":
                self._transition(order, status)
                self._fire("woocommerce_update_order", order.id)
            if _as_bool(set_paid):
                self._payment_complete(order, transaction_id)
            return order

    def _new_line_item(self, raw: Mapping[str, Any]) -> LineItem:
        product_id = int(raw.get("variation_id") or raw.get("product_id") or 0)
        if not product_id and raw.get("sku"):
            product_id = next((p.id for p in self.products.values() if p.sku == raw["sku"]), 0)
        product = self.products.get(product_id)
        if product is None:
            if not product_id:
                raise RestError("woocommerce_rest_required_product_reference", "Product ID or SKU is required.", 400)
            raise RestError("woocommerce_rest_invalid_product_id", "Invalid product ID.", 400)
        quantity = int(raw.get("quantity", 1) or 1)
        line_total = product.price * quantity
        total = _dec(raw["total"], "total") if raw.get("total") not in (None, "") else line_total
        subtotal = _dec(raw["subtotal"], "subtotal") if raw.get("subtotal") not in (None, "") else total
        # WooCommerce keeps a variation's parent in product_id and the variation in variation_id
        variation_id = product.id if product.type == "variation" else int(raw.get("variation_id") or 0)
        return LineItem(
            id=self._item_id(), name=str(raw.get("name") or product.name),
            product_id=int(raw.get("product_id") or product.parent_id or product.id),
            variation_id=variation_id, quantity=quantity, subtotal=subtotal, total=total,
            sku=product.sku, tax_class=str(raw.get("tax_class", "")), meta_data=self._meta_list(raw.get("meta_data")),
        )

    def _new_shipping_line(self, raw: Mapping[str, Any]) -> ShippingLine:
        if not raw.get("method_id"):
            raise RestError("woocommerce_rest_invalid_shipping_item", "Shipping method ID is required.", 400)
        return ShippingLine(
            id=self._item_id(), method_title=str(raw.get("method_title", "")), method_id=str(raw["method_id"]),
            instance_id=str(raw.get("instance_id", "")), total=_dec(raw.get("total"), "total"),
            meta_data=self._meta_list(raw.get("meta_data")),
        )

    def _apply_coupon(self, order: Order, code: str) -> None:
        coupon = self.coupon_by_code(code)
        if coupon is None or coupon.status != "publish":
            raise RestError("woocommerce_rest_invalid_coupon", f'Coupon "{_coupon_code(code)}" does not exist!', 400)
        if any(c.code == coupon.code for c in order.coupon_lines):
            return
        order.coupon_lines.append(CouponLine(
            id=self._item_id(), code=coupon.code, discount=ZERO, discount_type=coupon.discount_type,
            nominal_amount=coupon.amount, free_shipping=coupon.free_shipping,
        ))
        coupon.usage_count += 1
        coupon.used_by.append(str(order.customer_id) if order.customer_id else order.billing.get("email", ""))
        self._recalculate_coupons(order)

    def _recalculate_coupons(self, order: Order) -> None:
        """Reset line totals to subtotals and apply every coupon again (in cents)."""
        for item in order.line_items:
            item.total = item.subtotal
        for line in order.coupon_lines:
            coupon = self.coupon_by_code(line.code)
            amount = coupon.amount if coupon is not None else line.nominal_amount
            discount_type = coupon.discount_type if coupon is not None else line.discount_type
            discount = ZERO
            base = sum((i.total for i in order.line_items), ZERO)
            for index, item in enumerate(order.line_items):
                if discount_type == "percent":
                    cut = _q2(item.total * amount / 100)
                elif discount_type == "fixed_product":
                    cut = min(item.total, _q2(amount * item.quantity))
                else:  # fixed_cart: spread over items by their share, last one takes the rest
                    capped = min(amount, base)
                    if index == len(order.line_items) - 1:
                        cut = capped - discount
                    else:
                        cut = _q2(capped * item.total / base) if base else ZERO
                cut = max(ZERO, min(cut, item.total))
                item.total -= cut
                discount += cut
            line.discount = discount

    def _calculate_totals(self, order: Order) -> None:
        subtotal = sum((i.subtotal for i in order.line_items), ZERO)
        items_total = sum((i.total for i in order.line_items), ZERO)
        order.discount_total = _q2(subtotal - items_total)
        order.shipping_total = _q2(sum((s.total for s in order.shipping_lines), ZERO))
        fees = sum((f.total for f in order.fee_lines), ZERO)
        order.cart_tax = order.shipping_tax = order.total_tax = order.discount_tax = ZERO
        order.total = max(ZERO, _q2(items_total + order.shipping_total + fees))

    def _add_note(self, order: Order, text: str, *, customer_note: bool = False,
                  added_by: str = "WooCommerce") -> OrderNote:
        note = OrderNote(self._next_comment_id, order.id, text, customer_note, added_by, self._now())
        self._next_comment_id += 1
        self.notes[note.id] = note
        if self._batch is not None:  # WC_Order::add_order_note()'s hooks: an action.* webhook gets their first arg
            if customer_note:
                self._fire("woocommerce_new_customer_note", {"order_id": order.id, "customer_note": text})
            self._fire("woocommerce_order_note_added", note.id)
        return note

    def _transition(self, order: Order, new_status: str, note: str = "") -> None:
        """set_status() + status_transition(): dates, note, paying customer."""
        old = order.status
        if old == new_status:
            return
        now = self._now()
        order.status = new_status
        order.modified_at = now
        if new_status in PAID_STATUSES and order.paid_at is None:
            order.paid_at = now  # maybe_set_date_paid()
        if new_status == "completed":
            order.completed_at = now  # maybe_set_date_completed()
            self._mark_paying_customer(order)
        text = (f"Order status changed from {ORDER_STATUS_LABELS.get(old, old)} to "
                f"{ORDER_STATUS_LABELS.get(new_status, new_status)}.")
        self._add_note(order, f"{note} {text}" if note else text)
        # WC_Order::status_transition() fires these once the status is saved; an
        # action.* webhook on them is how a store tells "from → to" explicitly.
        if self._batch is not None:
            self._fire(f"woocommerce_order_status_{new_status}", order.id)
            self._fire(f"woocommerce_order_status_{old}_to_{new_status}", order.id)
            self._fire("woocommerce_order_status_changed", order.id)

    def _mark_paying_customer(self, order: Order) -> None:
        # wc_paying_customer(): the first paid order makes the user a paying
        # customer, saved through WC_Customer -> customer.updated.
        user = self.users.get(order.customer_id) if order.customer_id else None
        if user is not None and not user.is_paying_customer:
            user.is_paying_customer = True
            user.modified_at = self._now()
            self._fire("profile_update", user.id)
            self._fire("woocommerce_update_customer", user.id)

    def _payment_complete(self, order: Order, transaction_id: str = "") -> bool:
        if order.status not in ("on-hold", "pending", "failed", "cancelled"):
            return False
        if transaction_id:
            order.transaction_id = transaction_id
        order.paid_at = order.paid_at or self._now()
        self._transition(order, "processing" if order.line_items else "completed")
        self._fire("woocommerce_update_order", order.id)
        self._fire("woocommerce_payment_complete", order.id)
        self._mark_paying_customer(order)
        for item in order.line_items:
            product = self.products.get(item.product_id)
            if product is not None:
                product.total_sales += item.quantity  # direct data-store write, no hook
        return True

    def payment_complete(self, order_id: int, transaction_id: str = "") -> Order:
        """WC_Order::payment_complete(): pending/on-hold/failed -> processing."""
        with self.request():
            order = self._order_or_404(order_id)
            self._payment_complete(order, transaction_id)
            return order

    def set_order_status(self, order_id: int, status: str, note: str = "") -> Order:
        """WC_Order::update_status(): one save, order.updated."""
        with self.request():
            order = self._order_or_404(order_id)
            if status not in ORDER_STATUSES:
                raise RestError("rest_invalid_param", "Invalid parameter(s): status", 400)
            self._transition(order, status, note)
            order.modified_at = self._now()
            self._fire("woocommerce_update_order", order.id)
            return order

    def _order_or_404(self, order_id: int) -> Order:
        return _found(self.orders, int(order_id), "order")

    def update_order(self, order_id: int, **fields: Any) -> Order:
        """PUT /orders/{id}: REST-shaped fields; always fires order.updated (every save does)."""
        with self.request():
            order = self._order_or_404(order_id)
            if fields.get("customer_id") not in (None, 0, "0") and int(fields["customer_id"]) not in self.users:
                raise RestError("woocommerce_rest_invalid_customer_id", "Customer ID is invalid.", 400)
            status = fields.get("status")
            if status and status not in ORDER_STATUSES and status != "trash":
                raise RestError("rest_invalid_param", "Invalid parameter(s): status", 400)
            recalc = False
            for key in ("billing", "shipping"):
                if fields.get(key):
                    _merge_address(getattr(order, key), fields[key],
                                   BILLING_KEYS if key == "billing" else SHIPPING_KEYS)
                    recalc = True
            for key in ("payment_method", "payment_method_title", "transaction_id", "customer_note", "currency",
                        "customer_ip_address", "customer_user_agent"):
                if fields.get(key) is not None:
                    setattr(order, key, str(fields[key]))
            if fields.get("customer_id") is not None:
                order.customer_id = int(fields["customer_id"])
            if fields.get("parent_id") is not None:
                order.parent_id = int(fields["parent_id"])
            for raw in fields.get("line_items") or []:
                recalc = True
                existing = next((i for i in order.line_items if raw.get("id") and i.id == int(raw["id"])), None)
                if existing is None:
                    order.line_items.append(self._new_line_item(raw))
                elif (raw.get("quantity") is not None and int(raw["quantity"]) == 0) or \
                        raw.get("product_id", 1) is None:
                    order.line_items.remove(existing)
                else:
                    if raw.get("quantity") is not None:
                        new_qty = int(raw["quantity"])
                        if raw.get("total") in (None, ""):
                            unit = existing.total / existing.quantity if existing.quantity else ZERO
                            existing.total = _q2(unit * new_qty)
                            existing.subtotal = existing.total
                        existing.quantity = new_qty
                    if raw.get("total") not in (None, ""):
                        existing.total = _dec(raw["total"], "total")
                    if raw.get("subtotal") not in (None, ""):
                        existing.subtotal = _dec(raw["subtotal"], "subtotal")
                    if raw.get("name"):
                        existing.name = str(raw["name"])
                    if raw.get("meta_data"):
                        self._update_meta(existing.meta_data, raw["meta_data"])
            for raw in fields.get("shipping_lines") or []:
                recalc = True
                existing_s = next((s for s in order.shipping_lines if raw.get("id") and s.id == int(raw["id"])), None)
                if existing_s is None:
                    order.shipping_lines.append(self._new_shipping_line(raw))
                elif raw.get("method_id", "x") is None:
                    order.shipping_lines.remove(existing_s)
                else:
                    if raw.get("total") is not None:
                        existing_s.total = _dec(raw["total"], "total")
                    if raw.get("method_title") is not None:
                        existing_s.method_title = str(raw["method_title"])
            for raw in fields.get("fee_lines") or []:
                recalc = True
                order.fee_lines.append(FeeLine(self._item_id(), str(raw.get("name", "Fee")),
                                               _dec(raw.get("total"), "total")))
            for raw in fields.get("coupon_lines") or []:
                recalc = True
                if raw.get("code"):
                    self._apply_coupon(order, str(raw["code"]))
            if "meta_data" in fields:
                self._update_meta(order.meta_data, fields["meta_data"])
            if recalc:
                self._calculate_totals(order)
            if status:
                self._transition(order, str(status))
            order.modified_at = self._now()
            self._fire("woocommerce_update_order", order.id)
            if _as_bool(fields.get("set_paid")) and order.status in ("pending", "failed", "on-hold"):
                self._payment_complete(order, str(fields.get("transaction_id") or ""))
            return order

    def delete_order(self, order_id: int, *, force: bool = False) -> Order:
        """Trash (fires order.deleted with {"id"}) or force-delete (fires no webhook).

        Force deletion runs ``woocommerce_delete_order``, which no topic maps
        to, so a consumer only learns of it by the resource being gone.
        """
        with self.request():
            order = self._order_or_404(order_id)
            if force:
                self._fire("woocommerce_delete_order", order_id)
                del self.orders[order_id]
                self._post_types.pop(order_id, None)
                for note_id in [n.id for n in self.notes.values() if n.order_id == order_id]:
                    del self.notes[note_id]
                for refund in order.refunds:
                    self.refunds.pop(refund.id, None)
                return order
            if order.status == "trash":
                raise RestError("woocommerce_rest_already_trashed", "The shop_order has already been deleted.", 410)
            order.status_before_trash = order.status
            order.status = "trash"
            order.modified_at = self._now()
            self._fire("wp_trash_post", order_id)
            self._fire("woocommerce_trash_order", order_id)
            return order

    def restore_order(self, order_id: int) -> Order:
        """Untrash: fires order.restored (a full payload, unlike *.deleted)."""
        with self.request():
            order = self._order_or_404(order_id)
            if order.status != "trash":
                return order
            order.status = order.status_before_trash or "pending"
            order.status_before_trash = None
            order.modified_at = self._now()
            self._fire("untrashed_post", order_id)
            self._fire("woocommerce_untrash_order", order_id)
            return order

    def refund_order(self, order_id: int, amount: Any = None, reason: str = "") -> Refund:
        """wc_create_refund(): order.updated via woocommerce_order_refunded;
        a full refund also moves the order to ``refunded``."""
        with self.request():
            order = self._order_or_404(order_id)
            refunded = sum((r.amount for r in order.refunds), ZERO)
            remaining = order.total - refunded
            value = remaining if amount in (None, "") else _dec(amount, "amount")
            if value <= 0 or value > remaining:
                raise RestError("woocommerce_rest_cannot_create_order_refund", "Invalid refund amount.", 500)
            refund = Refund(self._post_id("shop_order_refund"), _q2(value), reason, self._now())
            order.refunds.append(refund)
            self.refunds[refund.id] = order.id
            order.modified_at = self._now()
            symbol = CURRENCY_SYMBOLS.get(order.currency, order.currency)
            note = f"Refunded {money(refund.amount)}{symbol}" + (f" – {reason}" if reason else "") + "."
            self._add_note(order, note)
            self._fire("woocommerce_order_refunded", order.id)
            if value == remaining:
                self._transition(order, "refunded")
                self._fire("woocommerce_update_order", order.id)
            return refund

    def checkout(
        self,
        *,
        line_items: Sequence[Mapping[str, Any]],
        billing: Mapping[str, Any],
        shipping: Mapping[str, Any] | None = None,
        customer_id: int = 0,
        payment_method: str = "cod",
        payment_method_title: str = "Cash on delivery",
        shipping_lines: Sequence[Mapping[str, Any]] | None = None,
        coupon_codes: list[str] | None = None,
        customer_note: str = "",
        customer_ip_address: str = "",
        customer_user_agent: str = "",
        transaction_id: str = "",
        meta_data: list[JSONObject] | None = None,
    ) -> Order:
        """A storefront checkout request (WC_Checkout::process_checkout).

        One request: the order is created (order.created), the
        ``woocommerce_checkout_order_processed`` action runs with the order id,
        and the gateway takes payment in-line: ``cod`` -> processing,
        ``bacs``/``cheque`` -> on-hold, card gateways -> payment_complete();
        ``paypal`` leaves the order pending until :meth:`payment_complete`.
        """
        with self.request():
            cart_hash = hashlib.md5(repr(sorted((dict(i) for i in line_items), key=repr)).encode()).hexdigest()
            order = self.create_order(
                line_items=line_items, customer_id=customer_id, billing=billing,
                shipping=shipping or {k: v for k, v in billing.items() if k in SHIPPING_KEYS},
                payment_method=payment_method, payment_method_title=payment_method_title,
                shipping_lines=shipping_lines, coupon_lines=[{"code": c} for c in coupon_codes or []],
                customer_note=customer_note, customer_ip_address=customer_ip_address,
                customer_user_agent=customer_user_agent, created_via="checkout", cart_hash=cart_hash,
                meta_data=meta_data,  # e.g. a checkout field's value (woocommerce_checkout_create_order)
            )
            self._fire("woocommerce_checkout_order_processed", order.id)
            if payment_method == "cod":
                self._transition(order, "processing", "Payment to be made upon delivery.")
                self._fire("woocommerce_update_order", order.id)
            elif payment_method in ("bacs", "cheque"):
                self._transition(order, "on-hold", "Awaiting BACS payment")
                self._fire("woocommerce_update_order", order.id)
            elif payment_method not in ("paypal",):
                self._payment_complete(order, transaction_id or "ch_" + self._hex(24))
            return order

    def add_order_note(self, order_id: int, note: str, *, customer_note: bool = False,
                       added_by_user: bool = False) -> OrderNote:
        """WC_Order::add_order_note(): a comment; the order itself is not saved."""
        with self.request():
            order = self._order_or_404(order_id)
            if not str(note or "").strip():
                raise RestError("rest_missing_callback_param", "Missing parameter(s): note", 400,
                                {"params": ["note"]})
            return self._add_note(order, str(note), customer_note=_as_bool(customer_note),
                                  added_by=self.admin.username if _as_bool(added_by_user) else "WooCommerce")

    def delete_order_note(self, order_id: int, note_id: int) -> OrderNote:
        with self.request():
            self._order_or_404(order_id)
            note = self.notes.get(note_id)
            if note is None or note.order_id != order_id:
                raise not_found("order_note")
            del self.notes[note_id]
            return note

    # ---------------------------------------------------- subscriptions (WCS)

    def create_subscription(
        self,
        *,
        customer_id: int,
        line_items: Sequence[Mapping[str, Any]] | None = None,
        status: str = "pending",
        billing_period: str = "month",
        billing_interval: int = 1,
        billing: Mapping[str, Any] | None = None,
        parent_id: int = 0,
        payment_method: str = "",
        start_date: int | None = None,
        trial_end_date: int | None = None,
        next_payment_date: int | None = None,
        end_date: int | None = None,
        via: str = "rest-api",
        meta_data: list[JSONObject] | None = None,
    ) -> Subscription:
        """A subscription as WC_REST_Subscriptions_Controller (`via="rest-api"`: hook
        `wcs_api_subscription_created`) or a checkout (`via="checkout"`:
        `woocommerce_checkout_subscription_created`) creates it. Dates are UTC seconds; the
        next payment defaults to one billing interval after the start (after the trial)."""
        with self.request():
            customer = self.users.get(int(customer_id or 0))
            if customer is None:
                raise RestError("woocommerce_rest_invalid_customer_id", "Customer ID is invalid.", 400)
            if billing_period not in BILLING_PERIODS:
                raise RestError("rest_invalid_param", "Invalid parameter(s): billing_period", 400)
            if status not in SUBSCRIPTION_STATUSES:
                raise RestError("rest_invalid_param", "Invalid parameter(s): status", 400)
            now = self._now()
            sub = Subscription(
                id=self._post_id("shop_subscription"), status="pending", currency=self.currency, created_at=now,
                modified_at=now, customer_id=customer.id, parent_id=int(parent_id or 0),
                billing_period=billing_period, billing_interval=max(1, int(billing_interval or 1)),
                payment_method=payment_method, meta_data=self._meta_list(meta_data),
            )
            _merge_address(sub.billing, billing or customer.billing, BILLING_KEYS)
            sub.billing["email"] = sub.billing.get("email") or customer.email
            for raw in line_items or []:
                sub.line_items.append(self._new_line_item(raw))
            sub.total = _q2(sum((i.total for i in sub.line_items), ZERO))
            sub.start_at = start_date if start_date is not None else now
            sub.trial_end_at = trial_end_date
            sub.next_payment_at = next_payment_date if next_payment_date is not None else \
                self._after_period(sub, trial_end_date or sub.start_at)
            sub.end_at = end_date
            self.subscriptions[sub.id] = sub
            if via == "checkout":
                self._fire("wcs_webhook_subscription_created", sub.id)
            else:
                self._fire("wcs_api_subscription_created", sub.id)
            if status != "pending":
                self._subscription_transition(sub, status)
            return sub

    def _after_period(self, sub: Subscription, start: int) -> int:
        """wcs_add_time(interval, period, start): days and weeks by seconds, months and years
        by the calendar (the same day of the month, clamped to its end)."""
        days = _PERIOD_DAYS.get(sub.billing_period)
        if days is not None:
            return start + sub.billing_interval * days * 86400
        at = datetime.fromtimestamp(start, ZoneInfo("UTC"))
        months = sub.billing_interval * (12 if sub.billing_period == "year" else 1)
        y, m = divmod(at.month - 1 + months, 12)
        year, month = at.year + y, m + 1
        last = (datetime(year + month // 12, month % 12 + 1, 1) - datetime(year, month, 1)).days
        return int(at.replace(year=year, month=month, day=min(at.day, last)).timestamp())

    def _subscription_transition(self, sub: Subscription, new_status: str) -> None:
        """WC_Subscription::update_status(): dates that go with the status, one save."""
        if sub.status == new_status:
            return
        now = self._now()
        old, sub.status, sub.modified_at = sub.status, new_status, now
        if new_status in ("cancelled", "expired", "switched"):
            sub.next_payment_at = None
            sub.cancelled_at = now if new_status == "cancelled" else sub.cancelled_at
            sub.end_at = sub.end_at or now
        elif new_status == "pending-cancel":
            sub.end_at, sub.next_payment_at = sub.next_payment_at or now, None
        elif new_status == "on-hold" and old == "active":
            sub.suspension_count += 1
        self._fire("woocommerce_update_subscription", sub.id)
        self._fire(f"woocommerce_subscription_status_{new_status}", sub.id)
        self._fire("woocommerce_subscription_status_changed", sub.id)

    def update_subscription(self, subscription_id: int, **fields: Any) -> Subscription:
        """PUT /subscriptions/{id}: status, dates (`*_date` as UTC seconds; firing
        `woocommerce_subscription_date_updated`), billing schedule, payment method."""
        with self.request():
            sub = _found(self.subscriptions, subscription_id, "subscription")
            for name in ("billing_period", "billing_interval", "payment_method"):
                if fields.get(name) is not None:
                    setattr(sub, name, int(fields[name]) if name == "billing_interval" else str(fields[name]))
            if "meta_data" in fields:
                self._update_meta(sub.meta_data, fields["meta_data"])
            dates = {"start_date": "start_at", "trial_end_date": "trial_end_at", "next_payment_date": "next_payment_at",
                     "end_date": "end_at"}
            for name, attr in dates.items():
                if name in fields:
                    setattr(sub, attr, None if fields[name] in (None, "", 0) else int(fields[name]))
                    self._fire("wcs_webhook_subscription_updated", sub.id)  # woocommerce_subscription_date_updated
            sub.modified_at = self._now()
            status = fields.get("status")
            if status:
                if status not in SUBSCRIPTION_STATUSES:
                    raise RestError("rest_invalid_param", "Invalid parameter(s): status", 400)
                self._subscription_transition(sub, str(status))
            self._fire("woocommerce_update_subscription", sub.id)
            return sub

    def renew_subscription(self, subscription_id: int, *, paid: bool = True) -> Order:
        """What WooCommerce Subscriptions does when a renewal falls due: a renewal order
        (`created_via: subscription`, meta `_subscription_renewal`), then the payment —
        paid: the order is processing, the subscription active with its next payment one
        interval on; failed: the order is failed and the subscription on-hold
        (WC_Subscription::payment_failed)."""
        with self.request():
            sub = _found(self.subscriptions, subscription_id, "subscription")
            order = self.create_order(
                line_items=[{"product_id": i.product_id, "variation_id": i.variation_id, "quantity": i.quantity}
                            for i in sub.line_items],
                customer_id=sub.customer_id, billing=sub.billing, payment_method=sub.payment_method,
                created_via="subscription", meta_data=[{"key": "_subscription_renewal", "value": str(sub.id)}])
            self._fire("wcs_webhook_order_created", order.id)
            if paid:
                self._payment_complete(order, "ch_" + self._hex(24))
                sub.last_payment_at = self._now()
                sub.next_payment_at = self._after_period(sub, sub.next_payment_at or sub.last_payment_at)
                self._fire("wcs_webhook_subscription_updated", sub.id)
                if sub.status != "active":
                    self._subscription_transition(sub, "active")
                sub.modified_at = self._now()
                self._fire("woocommerce_update_subscription", sub.id)
            else:
                self._transition(order, "failed", "Payment failed.")
                self._fire("woocommerce_update_order", order.id)
                self._subscription_transition(sub, "on-hold")
            return order

    def delete_subscription(self, subscription_id: int, *, force: bool = False) -> Subscription:
        """DELETE /subscriptions/{id}: to the trash (`woocommerce_subscription_trashed`), or
        gone with `force` (`woocommerce_subscription_deleted`); either is subscription.deleted."""
        with self.request():
            sub = _found(self.subscriptions, subscription_id, "subscription")
            if force:
                del self.subscriptions[subscription_id]
                self._fire("woocommerce_subscription_deleted", subscription_id)
            else:
                sub.status_before_trash, sub.status, sub.modified_at = sub.status, "trash", self._now()
                self._fire("woocommerce_subscription_trashed", subscription_id)
            return sub

    # ------------------------------------------------------------ storefront

    def record_abandoned_cart(self, cart: Mapping[str, Any]) -> JSONObject:
        """Keep a cart that never reached checkout (data only, no hooks)."""
        with self.lock:
            record = dict(cart)
            record.setdefault("created_at", self._now())
            self.abandoned_carts.append(record)
            return record


def _merge_address(target: dict[str, str], source: Mapping[str, Any] | None, keys: tuple[str, ...]) -> None:
    # update_address(): only known keys, only the ones given.
    for key, value in (source or {}).items():
        if key in keys:
            target[key] = "" if value is None else str(value)


def _coupon_code(code: str) -> str:
    # wc_format_coupon_code() + wc_strtolower(): codes are case-insensitive.
    return str(code or "").strip().lower()


def _is_valid_url(url: str) -> bool:
    try:
        parsed = urlparse(str(url))
    except ValueError:
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.netloc)


def _parse_site_date(value: Any, tz: str) -> int | None:
    if value in (None, ""):
        return None
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(tz))
    return int(parsed.timestamp())


# Re-exported so callers can build blank addresses without importing models.
__all__ += ["blank_billing", "blank_shipping"]
