"""What every resource's routes share: authentication, WP_Error rendering, path ids, the
site's timezone, and the shapes WooCommerce's CRUD controllers have in common (create with
a `Location`, list through the collection filters, read/trash/update one item).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import Response

from wooflow.jsontypes import JSONObject

from ..errors import NOT_FOUND, RestError
from ..state import SimulatedStore
from .listing import date_window, include_exclude, paginate, search, sort
from .params import Params, read_params
from .responses import error_response, json_response

API = "/wp-json/wc/v3"
COLLECTION = ["GET", "POST"]  # the methods of a collection route and of an item route
ITEM = ["GET", "POST", "PUT", "PATCH", "DELETE"]

# The permission check's 401 for a request without a (known) key, by action; the 404s of
# unknown ids are `errors.NOT_FOUND`.
_PERMISSION_ERRORS = {
    "list": ("woocommerce_rest_cannot_view", "Sorry, you cannot list resources."),
    "read": ("woocommerce_rest_cannot_view", "Sorry, you cannot view this resource."),
    "create": ("woocommerce_rest_cannot_create", "Sorry, you are not allowed to create resources."),
    "edit": ("woocommerce_rest_cannot_edit", "Sorry, you are not allowed to edit this resource."),
    "delete": ("woocommerce_rest_cannot_delete", "Sorry, you are not allowed to delete this resource."),
}

Handler = Callable[[Request], Any]


def basic_credentials(request: Request) -> tuple[str, str]:
    """(user, password) of an `Authorization: Basic` header; empty strings without one."""
    header = request.headers.get("authorization", "")
    if header[:6].lower() == "basic ":
        try:
            user, _, password = base64.b64decode(header[6:].strip()).decode("utf-8").partition(":")
            return user, password
        except (binascii.Error, UnicodeDecodeError):
            pass
    return "", ""


def authenticate(store: SimulatedStore, request: Request, action: str) -> None:
    query = dict(parse_qsl(request.url.query, keep_blank_values=True))
    if query.get("consumer_key") and query.get("consumer_secret"):
        key, secret = query["consumer_key"], query["consumer_secret"]
    else:
        key, secret = basic_credentials(request)
    if key and secret and hmac.compare_digest(key, store.consumer_key):
        if hmac.compare_digest(secret, store.consumer_secret):
            return
        raise RestError("woocommerce_rest_authentication_error", "Consumer secret is invalid.", 401)
    # No (known) key: the request runs as a visitor and fails the permission check.
    code, message = _PERMISSION_ERRORS[action]
    raise RestError(code, message, 401)


def method_action(request: Request) -> str:
    return {"GET": "read", "DELETE": "delete"}.get(request.method, "edit")


def collection_action(request: Request) -> str:
    return "list" if request.method == "GET" else "create"


def path_id(request: Request, name: str = "id") -> int:
    return int(request.path_params[name])


def refuse_existing(params: Params, post_type: str, noun: str | None = None) -> None:
    """A create (POST to the collection) that names an id is refused, as WC_REST_CRUD_Controller does."""
    if params.get("id"):
        raise RestError(f"woocommerce_rest_{post_type}_exists", f"Cannot create existing {noun or post_type}.", 400)


def refuse_trash(params: Params, plural: str) -> None:
    """Resources without a trash are deleted only with `force` (501 otherwise)."""
    if not params.boolean("force"):
        raise RestError("woocommerce_rest_trash_not_supported", f"{plural} do not support trashing.", 501)


def must_exist_for_update(exists: bool, resource: str) -> None:
    """WC_REST_CRUD_Controller::update_item() answers 400, not 404, for an unknown id."""
    if not exists:
        code, message = NOT_FOUND[resource]
        raise RestError(code, message, 400)


def writable(params: Params) -> JSONObject:
    """A body's fields for an update, without the id and the credentials."""
    return {k: v for k, v in params.data.items() if k not in ("id", "consumer_key", "consumer_secret")}


class Api:
    """The store's REST API as resource modules use it."""

    def __init__(self, store: SimulatedStore) -> None:
        self.store = store

    def site_tz(self) -> ZoneInfo:
        return ZoneInfo(self.store.timezone)  # read per request: the store's zone may change

    def endpoint(self, action: str | Callable[[Request], str]) -> Callable[[Callable[..., Any]], Handler]:
        """Wrap a handler `(request, params)` with auth + WP_Error rendering."""
        def wrap(handler: Callable[..., Any]) -> Handler:
            async def run(request: Request) -> Response:
                try:
                    act = action(request) if callable(action) else action
                    authenticate(self.store, request, act)
                    params = await read_params(request)
                    return await handler(request, params)
                except RestError as error:
                    return error_response(error)

            return run

        return wrap

    def collection(self, post_type: str, create: Callable[[Params], Awaitable[Response]],
                   listing: Callable[[Request, Params], Response], noun: str | None = None) -> Handler:
        """GET lists, POST creates — unless the body names an id (`refuse_existing`)."""
        @self.endpoint(collection_action)
        async def many(request: Request, params: Params) -> Response:
            if request.method == "POST":
                refuse_existing(params, post_type, noun)
                return await create(params)
            return listing(request, params)

        return many

    def created(self, resource: str, item_id: int, collection: str) -> Response:
        """201 with the new item and its `Location`."""
        return json_response(self.store.rest_item(resource, item_id), 201,
                             {"Location": self.store.site.rest_url(f"/wc/v3/{collection}/{item_id}")})

    def listing(self, request: Request, params: Params, resource: str, collection: str, items: list[Any], *,
                fields: Callable[[Any], Any], orderby: dict[str, Callable[[Any], Any]], default: str,
                default_order: str = "desc", dated: bool = False) -> Response:
        """A page of `items` (already narrowed by the resource's own filters) through the
        common ones: include/exclude, the date window (`dated`), search over `fields`, sort."""
        items = include_exclude(items, params)
        if dated:
            items = date_window(items, params, self.site_tz(), "created_at", "modified_at")
        items = search(items, params, fields)
        items = sort(items, params, orderby, default, default_order)
        return paginate(self.store, request, params, f"/wc/v3/{collection}", items,
                        lambda i: self.store.rest_item(resource, i.id))

    def item(self, resource: str, table: Callable[[], Mapping[int, Any]], update: Callable[[int, Params], Any],
             delete: Callable[..., Any], *, untrashable: str | None = None) -> Handler:
        """GET / DELETE / PUT of one item: a DELETE trashes unless `force` (or, for
        `untrashable` resources — their plural names the 501 — needs `force`)."""
        store = self.store

        @self.endpoint(method_action)
        async def one(request: Request, params: Params) -> Response:
            item_id = path_id(request)
            if request.method == "GET":
                return json_response(store.rest_item(resource, item_id))
            if request.method == "DELETE":
                if untrashable:
                    refuse_trash(params, untrashable)
                before = store.rest_item(resource, item_id)
                if untrashable:
                    delete(item_id)
                else:
                    delete(item_id, force=params.boolean("force"))
                return json_response(before)
            must_exist_for_update(item_id in table(), resource)
            update(item_id, params)
            return json_response(store.rest_item(resource, item_id))

        return one
