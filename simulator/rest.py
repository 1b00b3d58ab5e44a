"""WooCommerce REST API v3 over HTTP (Starlette), backed by a SimulatedStore.

Only what differs from "obvious CRUD" deserves a note, and it is all on purpose:

* bodies are PHP json_encode output (``\\/``, ``\\uXXXX``), like WordPress';
* authentication happens before routing; no/unknown key -> ``woocommerce_rest_cannot_*``
  401 from the permission check, known key with a wrong secret ->
  ``woocommerce_rest_authentication_error`` 401 (as WC_REST_Authentication);
* collections answer ``X-WP-Total``/``X-WP-TotalPages`` and one ``Link`` header
  with ``rel="prev"``/``rel="next"`` built from the request's own query string;
* ``after``/``before``/``modified_*`` are compared with the site-local columns,
  or the GMT ones with ``dates_are_gmt=true``; a value that carries an offset is
  first converted to the *site* zone's wall clock (WP_Date_Query does that even
  for the GMT columns) – clients should send naive timestamps;
* ``DELETE`` without ``force`` trashes orders/products/coupons and is refused
  (501) for customers, notes and webhooks.

``/__sim__/...`` routes are simulator-only introspection for tests and demos
(delivery log, webhook secrets and failure counts, abandoned carts, idling).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import math
import re
from datetime import datetime
from typing import Any, Callable, Iterable
from urllib.parse import parse_qsl, urlencode
from zoneinfo import ZoneInfo

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import order_actions
from .store_api import store_api_routes
from .delivery import send_ping_async
from .errors import NOT_FOUND, RestError, not_found
from .phpjson import php_json_encode
from .representations import category_json, fmt_gmt, fmt_local, note_json
from .state import SimulatedStore

__all__ = ["create_app"]

API = "/wp-json/wc/v3"
ORDER_STATUS_ENUM = ("any", "trash", "pending", "processing", "on-hold", "completed", "cancelled",
                     "refunded", "failed", "checkout-draft")

_PERMISSION_ERRORS = {
    "list": ("woocommerce_rest_cannot_view", "Sorry, you cannot list resources."),
    "read": ("woocommerce_rest_cannot_view", "Sorry, you cannot view this resource."),
    "create": ("woocommerce_rest_cannot_create", "Sorry, you are not allowed to create resources."),
    "edit": ("woocommerce_rest_cannot_edit", "Sorry, you are not allowed to edit this resource."),
    "delete": ("woocommerce_rest_cannot_delete", "Sorry, you are not allowed to delete this resource."),
}
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|z|[+-]\d{2}(:?\d{2})?)?$")


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(php_json_encode(data), status_code=status, headers=headers,
                    media_type="application/json; charset=UTF-8")


def _error(error: RestError) -> Response:
    headers = None
    if error.status == 401:
        # WC_REST_Authentication::send_unauthorized_headers()
        headers = {"WWW-Authenticate": 'Basic realm="WooCommerce API. Use a consumer key in the username field '
                                       'and a consumer secret in the password field."'}
    return _json(error.body(), error.status, headers)


def _must_exist_for_update(exists: bool, resource: str) -> None:
    """WC_REST_CRUD_Controller::update_item() answers 400, not 404, for an unknown id."""
    if not exists:
        code, message = NOT_FOUND[resource]
        raise RestError(code, message, 400)


def _invalid_param(name: str, code: str, message: str) -> RestError:
    return RestError("rest_invalid_param", f"Invalid parameter(s): {name}", 400, {
        "params": {name: message},
        "details": {name: {"code": code, "message": message, "data": None}},
    })


# ------------------------------------------------------------------- params


class Params:
    """Merged request parameters (query < body), with WP-style validation."""

    def __init__(self, query: list[tuple[str, str]], body: dict[str, Any]) -> None:
        self.query_items = query
        merged: dict[str, Any] = {}
        for key, value in query:
            if key.endswith("[]"):
                merged.setdefault(key[:-2], []).append(value)
            else:
                merged[key] = value
        merged.update(body)
        self.data = merged

    def get(self, name: str, default: Any = None) -> Any:
        return self.data.get(name, default)

    def __contains__(self, name: str) -> bool:
        return name in self.data

    def integer(self, name: str, default: int | None = None, minimum: int | None = None,
                maximum: int | None = None) -> int | None:
        raw = self.data.get(name)
        if raw is None or raw == "":
            return default
        if isinstance(raw, bool) or not re.fullmatch(r"-?\d+", str(raw).strip()):
            raise _invalid_param(name, "rest_invalid_type", f"{name} is not of type integer.")
        value = int(str(raw).strip())
        if minimum is not None and maximum is not None and not minimum <= value <= maximum:
            raise _invalid_param(name, "rest_out_of_bounds",
                                 f"{name} must be between {minimum} (inclusive) and {maximum} (inclusive)")
        if minimum is not None and value < minimum:
            raise _invalid_param(name, "rest_out_of_bounds", f"{name} must be greater than or equal to {minimum}")
        return value

    def boolean(self, name: str, default: bool = False) -> bool:
        raw = self.data.get(name)
        if raw is None:
            return default
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("true", "1"):
            return True
        if text in ("false", "0", ""):
            return False
        raise _invalid_param(name, "rest_invalid_type", f"{name} is not of type boolean.")

    def enum(self, name: str, allowed: Iterable[str], default: str) -> str:
        raw = self.data.get(name)
        if raw is None or raw == "":
            return default
        allowed = tuple(allowed)
        if raw not in allowed:
            listing = ", ".join(allowed[:-1]) + f", and {allowed[-1]}" if len(allowed) > 2 else " and ".join(allowed)
            raise _invalid_param(name, "rest_not_in_enum", f"{name} is not one of {listing}.")
        return str(raw)

    def id_list(self, name: str) -> list[int]:
        raw = self.data.get(name)
        if raw in (None, ""):
            return []
        items = raw if isinstance(raw, list) else re.split(r"[\s,]+", str(raw))
        return [abs(int(i)) for i in items if str(i).strip().lstrip("-").isdigit()]

    def str_list(self, name: str) -> list[str]:
        raw = self.data.get(name)
        if raw in (None, ""):
            return []
        items = raw if isinstance(raw, list) else re.split(r"[\s,]+", str(raw))
        return [str(i) for i in items if str(i)]

    def date_filter(self, name: str, tz: ZoneInfo, gmt_column: bool) -> int | None:
        """A date-time filter as the unix timestamp the column value must pass.

        WP_Date_Query turns the value into a site-local wall clock string and
        compares it with the chosen column *as text*: local for ``date_*``, UTC
        for ``date_*_gmt``.  Reproduced literally.
        """
        raw = self.data.get(name)
        if raw in (None, ""):
            return None
        text = str(raw).strip()
        if not _DATE_RE.match(text):
            raise _invalid_param(name, "rest_invalid_date", "Invalid date.")
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00").replace(" ", "T"))
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(tz).replace(tzinfo=None)  # site wall clock, zone dropped
        wall = parsed.replace(microsecond=0)
        column_zone = ZoneInfo("UTC") if gmt_column else tz
        return int(wall.replace(tzinfo=column_zone).timestamp())


async def _params(request: Request) -> Params:
    query = parse_qsl(request.url.query, keep_blank_values=True)
    body: dict[str, Any] = {}
    if request.method in ("POST", "PUT", "PATCH", "DELETE"):
        raw = await request.body()
        content_type = request.headers.get("content-type", "")
        if raw.strip():
            if "json" in content_type or raw.lstrip()[:1] in (b"{", b"["):
                try:
                    parsed = json.loads(raw)
                except ValueError:
                    raise RestError("rest_invalid_json", "Invalid JSON body passed.", 400,
                                    {"json_error_code": 4, "json_error_message": "Syntax error"}) from None
                if isinstance(parsed, dict):
                    body = parsed
            else:
                for key, value in parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True):
                    if key.endswith("[]"):
                        body.setdefault(key[:-2], []).append(value)
                    else:
                        body[key] = value
    return Params(query, body)


# ---------------------------------------------------------------- auth


def _authenticate(store: SimulatedStore, request: Request, action: str) -> None:
    key = secret = ""
    query = dict(parse_qsl(request.url.query, keep_blank_values=True))
    if query.get("consumer_key") and query.get("consumer_secret"):
        key, secret = query["consumer_key"], query["consumer_secret"]
    else:
        header = request.headers.get("authorization", "")
        if header[:6].lower() == "basic ":
            try:
                decoded = base64.b64decode(header[6:].strip()).decode("utf-8")
                key, _, secret = decoded.partition(":")
            except (binascii.Error, UnicodeDecodeError):
                key = secret = ""
    if key and secret and hmac.compare_digest(key, store.consumer_key):
        if hmac.compare_digest(secret, store.consumer_secret):
            return
        raise RestError("woocommerce_rest_authentication_error", "Consumer secret is invalid.", 401)
    # No (known) key: the request runs as a visitor and fails the permission check.
    code, message = _PERMISSION_ERRORS[action]
    raise RestError(code, message, 401)


# ----------------------------------------------------------- collections


def _paginate(store: SimulatedStore, request: Request, params: Params, route: str,
              items: list[Any], render: Callable[[Any], dict[str, Any]]) -> Response:
    per_page = params.integer("per_page", 10, 1, 100)
    page = params.integer("page", 1, 1)
    offset = params.integer("offset", None, 0)
    assert per_page is not None and page is not None
    total = len(items)
    start = offset if offset is not None else (page - 1) * per_page
    if offset is not None:
        page = start // per_page + 1
    chunk = items[start:start + per_page]
    max_pages = math.ceil(total / per_page) if per_page else 0
    headers = {"X-WP-Total": str(total), "X-WP-TotalPages": str(max_pages)}
    # add_query_arg( $request->get_query_params(), rest_url( ... ) ) then page=N
    base_query = [(k, v) for k, v in params.query_items if k != "page"]
    base = store.site.rest_url(route)

    def link(target: int) -> str:
        return base + "?" + urlencode(base_query + [("page", str(target))])

    links = []
    if page > 1:
        links.append(f'<{link(min(page - 1, max_pages) if max_pages else page - 1)}>; rel="prev"')
    if max_pages > page:
        links.append(f'<{link(page + 1)}>; rel="next"')
    if links:
        headers["Link"] = ", ".join(links)
    return _json([render(item) for item in chunk], 200, headers)


def _sort(items: list[Any], params: Params, keys: dict[str, Callable[[Any], Any]], default: str,
          default_order: str = "desc") -> list[Any]:
    orderby = params.enum("orderby", tuple(keys) + (("include",) if "include" not in keys else ()), default)
    order = params.enum("order", ("asc", "desc"), default_order)
    if orderby == "include":
        wanted = params.id_list("include")
        return sorted(items, key=lambda i: wanted.index(i.id) if i.id in wanted else len(wanted))
    key = keys[orderby]
    # Ties keep a stable id order, as MySQL's secondary ordering by ID would.
    return sorted(items, key=lambda i: (key(i), i.id), reverse=(order == "desc"))


def _date_window(items: list[Any], params: Params, tz: ZoneInfo, created: str, modified: str) -> list[Any]:
    gmt = params.boolean("dates_are_gmt")
    bounds = [
        ("after", created, lambda v, b: v > b), ("before", created, lambda v, b: v < b),
        ("modified_after", modified, lambda v, b: v > b), ("modified_before", modified, lambda v, b: v < b),
    ]
    for name, attribute, passes in bounds:
        bound = params.date_filter(name, tz, gmt)
        if bound is not None:
            items = [i for i in items if getattr(i, attribute) is not None and passes(getattr(i, attribute), bound)]
    return items


def _include_exclude(items: list[Any], params: Params) -> list[Any]:
    include, exclude = params.id_list("include"), params.id_list("exclude")
    if include:
        items = [i for i in items if i.id in include]
    if exclude:
        items = [i for i in items if i.id not in exclude]
    return items


def _search(items: list[Any], params: Params, fields: Callable[[Any], Iterable[str]]) -> list[Any]:
    term = str(params.get("search") or "").strip().lower()
    if not term:
        return items
    return [i for i in items if any(term in (f or "").lower() for f in fields(i))]


# ------------------------------------------------------------------ app


def create_app(store: SimulatedStore) -> Starlette:
    """The REST API (and /__sim__ introspection) of ``store`` as an ASGI app."""

    def endpoint(action: str | Callable[[Request], str]) -> Callable[[Callable[..., Any]], Callable[[Request], Any]]:
        # Wrap a handler with auth + WP_Error rendering.
        def wrap(handler: Callable[..., Any]) -> Callable[[Request], Any]:
            async def run(request: Request) -> Response:
                try:
                    act = action(request) if callable(action) else action
                    _authenticate(store, request, act)
                    params = await _params(request)
                    return await handler(request, params)
                except RestError as error:
                    return _error(error)

            return run

        return wrap

    site_tz = lambda: ZoneInfo(store.timezone)  # noqa: E731 - read per request, tz may be changed

    def method_action(request: Request) -> str:
        return {"GET": "read", "DELETE": "delete"}.get(request.method, "edit")

    def collection_action(request: Request) -> str:
        return "list" if request.method == "GET" else "create"

    def path_id(request: Request, name: str = "id") -> int:
        return int(request.path_params[name])

    # ---------------------------------------------------------------- orders

    @endpoint(collection_action)
    async def orders(request: Request, params: Params) -> Response:
        if request.method == "POST":
            if params.get("id"):
                raise RestError("woocommerce_rest_shop_order_exists", "Cannot create existing shop_order.", 400)
            order = store.create_order(**_order_fields(params))
            return _json(store.rest_item("order", order.id), 201,
                         {"Location": store.site.rest_url(f"/wc/v3/orders/{order.id}")})
        statuses = params.str_list("status") or ["any"]
        for status in statuses:
            if status not in ORDER_STATUS_ENUM:
                raise _invalid_param("status[0]", "rest_not_in_enum",
                                     "status[0] is not one of " + ", ".join(ORDER_STATUS_ENUM[:-1]) +
                                     f", and {ORDER_STATUS_ENUM[-1]}.")
        with store.lock:
            items = list(store.orders.values())
            if "any" in statuses:
                items = [o for o in items if o.status not in ("trash", "checkout-draft")]
            else:
                items = [o for o in items if o.status in statuses]
            customer = params.integer("customer")
            if customer is not None:
                items = [o for o in items if o.customer_id == customer]
            product = params.integer("product")
            if product:
                items = [o for o in items if any(i.product_id == product for i in o.line_items)]
            parents = params.id_list("parent")
            if parents:
                items = [o for o in items if o.parent_id in parents]
            items = _include_exclude(items, params)
            items = _date_window(items, params, site_tz(), "created_at", "modified_at")
            items = _search(items, params, lambda o: [str(o.id), o.billing.get("email", ""),
                                                       o.billing.get("first_name", ""), o.billing.get("last_name", "")])
            items = _sort(items, params, {"date": lambda o: o.created_at, "id": lambda o: o.id,
                                          "modified": lambda o: o.modified_at, "title": lambda o: o.created_at,
                                          "slug": lambda o: o.id}, "date")
            return _paginate(store, request, params, "/wc/v3/orders", items,
                             lambda o: store.rest_item("order", o.id))

    @endpoint(method_action)
    async def order(request: Request, params: Params) -> Response:
        order_id = path_id(request)
        if request.method == "GET":
            return _json(store.rest_item("order", order_id))
        if request.method == "DELETE":
            before = store.rest_item("order", order_id)
            store.delete_order(order_id, force=params.boolean("force"))
            return _json(before)
        _must_exist_for_update(order_id in store.orders, "order")
        store.update_order(order_id, **_order_fields(params))
        return _json(store.rest_item("order", order_id))

    # ----------------------------------------------------------- order notes

    def _order_for_notes(order_id: int) -> None:
        if order_id not in store.orders:
            raise RestError("woocommerce_rest_order_invalid_id", "Invalid order ID.", 404)

    @endpoint(collection_action)
    async def notes(request: Request, params: Params) -> Response:
        order_id = path_id(request, "order_id")
        _order_for_notes(order_id)
        if request.method == "POST":
            note = store.add_order_note(order_id, str(params.get("note") or ""),
                                        customer_note=params.boolean("customer_note"),
                                        added_by_user=params.boolean("added_by_user"))
            return _json(note_json(note, store.site), 201, {
                "Location": store.site.rest_url(f"/wc/v3/orders/{order_id}/notes/{note.id}")})
        kind = params.enum("type", ("any", "customer", "internal"), "any")
        items = store.get_order_notes(order_id)
        if kind != "any":
            items = [n for n in items if n.customer_note == (kind == "customer")]
        return _json([note_json(n, store.site) for n in items])

    @endpoint(method_action)
    async def note(request: Request, params: Params) -> Response:
        order_id, note_id = path_id(request, "order_id"), path_id(request)
        _order_for_notes(order_id)
        found = store.notes.get(note_id)
        if found is None or found.order_id != order_id:
            raise not_found("order_note")
        if request.method == "DELETE":
            if not params.boolean("force"):
                # The message really says "Webhooks" in WooCommerce's notes controller.
                raise RestError("woocommerce_rest_trash_not_supported", "Webhooks do not support trashing.", 501)
            body = note_json(found, store.site)
            store.delete_order_note(order_id, note_id)
            return _json(body)
        return _json(note_json(found, store.site))

    # --------------------------------------------------------------- refunds

    def refund_json(order_id: int, refund_id: int) -> dict[str, Any]:
        order_rec = store.orders[order_id]
        refund = next(r for r in order_rec.refunds if r.id == refund_id)
        site = store.site
        return {
            "id": refund.id,
            "date_created": fmt_local(refund.created_at, site),
            "date_created_gmt": fmt_gmt(refund.created_at),
            "amount": f"{refund.amount:.2f}",
            "reason": refund.reason,
            "refunded_by": 1,
            "refunded_payment": False,
            "meta_data": [],
            "line_items": [],
            "shipping_lines": [],
            "tax_lines": [],
            "fee_lines": [],
            "_links": {
                "self": [{"href": site.rest_url(f"/wc/v3/orders/{order_id}/refunds/{refund.id}")}],
                "collection": [{"href": site.rest_url(f"/wc/v3/orders/{order_id}/refunds")}],
                "up": [{"href": site.rest_url(f"/wc/v3/orders/{order_id}")}],
            },
        }

    @endpoint(collection_action)
    async def refunds(request: Request, params: Params) -> Response:
        order_id = path_id(request, "order_id")
        if order_id not in store.orders:
            raise RestError("woocommerce_rest_shop_order_invalid_id", "Invalid ID.", 404)
        if request.method == "POST":
            refund = store.refund_order(order_id, params.get("amount"), str(params.get("reason") or ""))
            return _json(refund_json(order_id, refund.id), 201)
        with store.lock:
            return _json([refund_json(order_id, r.id) for r in store.orders[order_id].refunds])

    @endpoint(method_action)
    async def refund(request: Request, params: Params) -> Response:
        order_id, refund_id = path_id(request, "order_id"), path_id(request)
        with store.lock:
            if order_id not in store.orders or store.refunds.get(refund_id) != order_id:
                raise not_found("order_refund")
            return _json(refund_json(order_id, refund_id))

    # ------------------------------------------------------------- customers

    @endpoint(collection_action)
    async def customers(request: Request, params: Params) -> Response:
        if request.method == "POST":
            if params.get("id"):
                raise RestError("woocommerce_rest_customer_exists", "Cannot create existing resource.", 400)
            email = params.get("email")
            if not email:
                raise RestError("rest_missing_callback_param", "Missing parameter(s): email", 400,
                                {"params": ["email"]})
            user = store.create_customer(
                str(email), first_name=str(params.get("first_name") or ""),
                last_name=str(params.get("last_name") or ""), username=params.get("username") or None,
                billing=params.get("billing"), shipping=params.get("shipping"), meta_data=params.get("meta_data"),
            )
            return _json(store.rest_item("customer", user.id), 201,
                         {"Location": store.site.rest_url(f"/wc/v3/customers/{user.id}")})
        role = params.get("role") or "customer"
        with store.lock:
            items = list(store.users.values())
            if role != "all":
                items = [u for u in items if u.role == role]
            if params.get("email"):
                items = [u for u in items if u.email.lower() == str(params.get("email")).lower()]
            items = _include_exclude(items, params)
            items = _search(items, params, lambda u: [u.email, u.username, u.first_name, u.last_name])
            items = _sort(items, params, {"id": lambda u: u.id, "name": lambda u: u.username.lower(),
                                          "registered_date": lambda u: u.created_at}, "name", "asc")
            return _paginate(store, request, params, "/wc/v3/customers", items,
                             lambda u: store.rest_item("customer", u.id))

    @endpoint(method_action)
    async def customer(request: Request, params: Params) -> Response:
        customer_id = path_id(request)
        if request.method == "GET":
            return _json(store.rest_item("customer", customer_id))
        if request.method == "DELETE":
            if not params.boolean("force"):
                raise RestError("woocommerce_rest_trash_not_supported", "Customers do not support trashing.", 501)
            before = store.rest_item("customer", customer_id)
            store.delete_customer(customer_id)
            return _json(before)
        _must_exist_for_update(customer_id in store.users, "customer")
        store.update_customer(customer_id, **{k: params.get(k) for k in (
            "email", "first_name", "last_name", "billing", "shipping", "meta_data") if k in params})
        return _json(store.rest_item("customer", customer_id))

    # -------------------------------------------------------------- products

    @endpoint(collection_action)
    async def products(request: Request, params: Params) -> Response:
        if request.method == "POST":
            if params.get("id"):
                raise RestError("woocommerce_rest_product_exists", "Cannot create existing product.", 400)
            product = store.create_product(
                str(params.get("name") or ""), params.get("regular_price") or "0",
                sale_price=params.get("sale_price"), sku=str(params.get("sku") or ""),
                categories=params.get("categories"), status=str(params.get("status") or "publish"),
                type=str(params.get("type") or "simple"), description=str(params.get("description") or ""),
                short_description=str(params.get("short_description") or ""),
                tags=[t["name"] if isinstance(t, dict) else str(t) for t in params.get("tags") or []],
                stock_status=str(params.get("stock_status") or "instock"), meta_data=params.get("meta_data"),
            )
            return _json(store.rest_item("product", product.id), 201,
                         {"Location": store.site.rest_url(f"/wc/v3/products/{product.id}")})
        status = params.get("status") or "any"
        with store.lock:
            items = list(store.products.values())
            items = [p for p in items if p.status != "trash"] if status == "any" else \
                [p for p in items if p.status == status]
            if params.get("sku"):
                wanted = set(params.str_list("sku"))
                items = [p for p in items if p.sku in wanted]
            category = params.integer("category")
            if category:
                items = [p for p in items if category in p.category_ids]
            if params.get("stock_status"):
                items = [p for p in items if p.stock_status == params.get("stock_status")]
            items = _include_exclude(items, params)
            items = _date_window(items, params, site_tz(), "created_at", "modified_at")
            items = _search(items, params, lambda p: [p.name, p.sku])
            items = _sort(items, params, {"date": lambda p: p.created_at, "id": lambda p: p.id,
                                          "modified": lambda p: p.modified_at, "title": lambda p: p.name.lower(),
                                          "slug": lambda p: p.slug, "price": lambda p: p.price}, "date")
            return _paginate(store, request, params, "/wc/v3/products", items,
                             lambda p: store.rest_item("product", p.id))

    @endpoint(method_action)
    async def product(request: Request, params: Params) -> Response:
        product_id = path_id(request)
        if request.method == "GET":
            return _json(store.rest_item("product", product_id))
        if request.method == "DELETE":
            before = store.rest_item("product", product_id)
            store.delete_product(product_id, force=params.boolean("force"))
            return _json(before)
        _must_exist_for_update(product_id in store.products, "product")
        store.update_product(product_id, **{k: v for k, v in params.data.items() if k not in (
            "id", "consumer_key", "consumer_secret")})
        return _json(store.rest_item("product", product_id))

    @endpoint("list")
    async def categories(request: Request, params: Params) -> Response:
        with store.lock:
            counts: dict[int, int] = {}
            for p in store.products.values():
                for cid in p.category_ids:
                    counts[cid] = counts.get(cid, 0) + 1
            items = sorted(store.categories.values(), key=lambda c: c.name.lower())
            return _paginate(store, request, params, "/wc/v3/products/categories", items,
                             lambda c: category_json(c, store.site, counts.get(c.id, 0)))

    # --------------------------------------------------------------- coupons

    @endpoint(collection_action)
    async def coupons(request: Request, params: Params) -> Response:
        if request.method == "POST":
            if params.get("id"):
                raise RestError("woocommerce_rest_shop_coupon_exists", "Cannot create existing shop_coupon.", 400)
            coupon = store.create_coupon(
                str(params.get("code") or ""), params.get("amount") or "0",
                str(params.get("discount_type") or "fixed_cart"), description=str(params.get("description") or ""),
                usage_limit=params.integer("usage_limit"), usage_limit_per_user=params.integer("usage_limit_per_user"),
                individual_use=params.boolean("individual_use"), free_shipping=params.boolean("free_shipping"),
                email_restrictions=params.get("email_restrictions") or [],
                minimum_amount=params.get("minimum_amount") or "0", maximum_amount=params.get("maximum_amount") or "0",
                product_ids=params.id_list("product_ids"), meta_data=params.get("meta_data"),
            )
            if params.get("date_expires") or params.get("date_expires_gmt"):
                store.update_coupon(coupon.id, **{k: params.get(k) for k in ("date_expires", "date_expires_gmt")
                                                  if params.get(k)})
            return _json(store.rest_item("coupon", coupon.id), 201,
                         {"Location": store.site.rest_url(f"/wc/v3/coupons/{coupon.id}")})
        with store.lock:
            items = [c for c in store.coupons.values() if c.status != "trash"]
            if params.get("code"):
                code = str(params.get("code")).strip().lower()
                items = [c for c in items if c.code == code]
            items = _include_exclude(items, params)
            items = _date_window(items, params, site_tz(), "created_at", "modified_at")
            items = _search(items, params, lambda c: [c.code, c.description])
            items = _sort(items, params, {"date": lambda c: c.created_at, "id": lambda c: c.id,
                                          "modified": lambda c: c.modified_at, "title": lambda c: c.code,
                                          "slug": lambda c: c.code}, "date")
            return _paginate(store, request, params, "/wc/v3/coupons", items,
                             lambda c: store.rest_item("coupon", c.id))

    @endpoint(method_action)
    async def coupon(request: Request, params: Params) -> Response:
        coupon_id = path_id(request)
        if request.method == "GET":
            return _json(store.rest_item("coupon", coupon_id))
        if request.method == "DELETE":
            before = store.rest_item("coupon", coupon_id)
            store.delete_coupon(coupon_id, force=params.boolean("force"))
            return _json(before)
        _must_exist_for_update(coupon_id in store.coupons, "coupon")
        store.update_coupon(coupon_id, **{k: v for k, v in params.data.items() if k not in (
            "id", "consumer_key", "consumer_secret")})
        return _json(store.rest_item("coupon", coupon_id))

    # -------------------------------------------------------------- webhooks

    @endpoint(collection_action)
    async def webhooks(request: Request, params: Params) -> Response:
        if request.method == "POST":
            if params.get("id"):
                raise RestError("woocommerce_rest_shop_webhook_exists", "Cannot create existing shop_webhook.", 400)
            topic = str(params.get("topic") or "")
            url = str(params.get("delivery_url") or "")
            missing = [n for n, v in (("topic", topic), ("delivery_url", url)) if not v]
            if missing:
                raise RestError("rest_missing_callback_param", "Missing parameter(s): " + ", ".join(missing), 400,
                                {"params": missing})
            # The controller always creates it "publish" -> active, whatever status says.
            webhook = store.create_webhook(topic, url, secret=params.get("secret") or None,
                                           name=params.get("name") or None, status="active", ping=False)
            response = _json(store.rest_item("webhook", webhook.id), 201,
                             {"Location": store.site.rest_url(f"/wc/v3/webhooks/{webhook.id}")})
            await send_ping_async(store, webhook.id)  # result only recorded, as in WooCommerce
            return response
        status = params.enum("status", ("all", "active", "paused", "disabled"), "all")
        with store.lock:
            items = list(store.webhooks.values())
            if status != "all":
                items = [w for w in items if w.status == status]
            items = _include_exclude(items, params)
            items = _search(items, params, lambda w: [w.name])
            items = _sort(items, params, {"date": lambda w: w.created_at, "id": lambda w: w.id,
                                          "title": lambda w: w.name.lower()}, "date")
            return _paginate(store, request, params, "/wc/v3/webhooks", items,
                             lambda w: store.rest_item("webhook", w.id))

    @endpoint(method_action)
    async def webhook(request: Request, params: Params) -> Response:
        webhook_id = path_id(request)
        if request.method == "GET":
            if webhook_id not in store.webhooks:
                # prepare_item_for_response() answers 400 "ID is invalid." here.
                raise RestError("woocommerce_rest_shop_webhook_invalid_id", "ID is invalid.", 400)
            return _json(store.rest_item("webhook", webhook_id))
        if request.method == "DELETE":
            if not params.boolean("force"):
                raise RestError("woocommerce_rest_trash_not_supported", "Webhooks do not support trashing.", 501)
            before = store.rest_item("webhook", webhook_id)
            store.delete_webhook(webhook_id)
            return _json(before)
        store.update_webhook(webhook_id, **{k: params.get(k) for k in (
            "name", "status", "topic", "delivery_url", "secret") if params.get(k)})
        return _json(store.rest_item("webhook", webhook_id))

    # ------------------------------------------------------- simulator-only

    async def sim_deliveries(request: Request) -> Response:
        query = dict(parse_qsl(request.url.query))
        webhook_id = int(query["webhook_id"]) if query.get("webhook_id") else None
        kind = query.get("kind") or None
        return _json([
            {"kind": a.kind, "webhook_id": a.webhook_id, "topic": a.topic, "resource_id": a.resource_id,
             "delivery_id": a.delivery_id, "url": a.url, "started_at": a.started_at, "duration": a.duration,
             "status_code": a.status_code, "error": a.error, "success": a.success,
             "failure_count_after": a.failure_count_after, "webhook_status_after": a.webhook_status_after}
            for a in store.deliveries(webhook_id, kind)
        ])

    async def sim_webhook(request: Request) -> Response:
        with store.lock:
            found = store.webhooks.get(path_id(request))
            if found is None:
                return _error(not_found("webhook"))
            return _json({"id": found.id, "status": found.status, "topic": found.topic, "secret": found.secret,
                          "failure_count": found.failure_count, "pending_delivery": found.pending_delivery,
                          "delivery_url": found.delivery_url})

    async def sim_state(request: Request) -> Response:
        with store.lock:
            return _json({"url": store.url, "timezone": store.timezone, "currency": store.currency,
                          "orders": len(store.orders), "customers": len(store.users) - 1,
                          "products": len(store.products), "coupons": len(store.coupons),
                          "webhooks": len(store.webhooks), "pending_deliveries": store.queue.pending,
                          "deliveries_in_flight": store.queue.in_flight,
                          "abandoned_carts": len(store.abandoned_carts)})

    async def sim_carts(request: Request) -> Response:
        with store.lock:
            return _json(list(store.abandoned_carts))

    async def sim_wait_idle(request: Request) -> Response:
        timeout = float(dict(parse_qsl(request.url.query)).get("timeout", "10"))
        idle = await store.deliveries_idle(timeout)
        return _json({"idle": idle}, 200 if idle else 504)

    async def no_route(request: Request) -> Response:
        return _json({"code": "rest_no_route", "message": "No route was found matching the URL and request method.",
                      "data": {"status": 404}}, 404)

    collection = ["GET", "POST"]
    item = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    routes = [
        Route(f"{API}/orders", orders, methods=collection),
        Route(f"{API}/orders/{{id:int}}", order, methods=item),
        Route(f"{API}/orders/{{order_id:int}}/notes", notes, methods=collection),
        Route(f"{API}/orders/{{order_id:int}}/notes/{{id:int}}", note, methods=["GET", "DELETE"]),
        Route(f"{API}/orders/{{order_id:int}}/refunds", refunds, methods=collection),
        Route(f"{API}/orders/{{order_id:int}}/refunds/{{id:int}}", refund, methods=["GET"]),
        Route(f"{API}/customers", customers, methods=collection),
        Route(f"{API}/customers/{{id:int}}", customer, methods=item),
        Route(f"{API}/products/categories", categories, methods=["GET"]),
        Route(f"{API}/products", products, methods=collection),
        Route(f"{API}/products/{{id:int}}", product, methods=item),
        Route(f"{API}/coupons", coupons, methods=collection),
        Route(f"{API}/coupons/{{id:int}}", coupon, methods=item),
        Route(f"{API}/webhooks", webhooks, methods=collection),
        Route(f"{API}/webhooks/{{id:int}}", webhook, methods=item),
        *order_actions.routes(store, endpoint, _json, API),  # order actions REST + WP user roles (workers)
        Route("/__sim__/deliveries", sim_deliveries, methods=["GET"]),
        Route("/__sim__/webhooks/{id:int}", sim_webhook, methods=["GET"]),
        Route("/__sim__/state", sim_state, methods=["GET"]),
        Route("/__sim__/abandoned_carts", sim_carts, methods=["GET"]),
        Route("/__sim__/wait_idle", sim_wait_idle, methods=["POST", "GET"]),
        *store_api_routes(store),
        Route("/{path:path}", no_route, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    ]
    app = Starlette(routes=routes)
    app.state.store = store
    return app


def _order_fields(params: Params) -> dict[str, Any]:
    """The writable order fields of a REST body, as store.create/update_order kwargs."""
    names = ["line_items", "customer_id", "billing", "shipping", "status", "set_paid", "payment_method",
             "payment_method_title", "transaction_id", "shipping_lines", "fee_lines", "coupon_lines",
             "customer_note", "meta_data", "currency", "parent_id"]
    fields = {n: params.get(n) for n in names if params.get(n) is not None}
    if "set_paid" in fields:
        fields["set_paid"] = params.boolean("set_paid")
    if "customer_id" in fields:
        fields["customer_id"] = params.integer("customer_id", 0)
    if "parent_id" in fields:
        fields["parent_id"] = params.integer("parent_id", 0)
    return fields
