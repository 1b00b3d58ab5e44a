"""WooCommerce's Store API cart (`/wp-json/wc/store/v1/cart`), the part a shopper's browser
uses: what wooflow's storefront snippet calls to refill a recovered cart.

As in WooCommerce: `GET /cart` answers with `Nonce` and `Cart-Token` headers; a cart is found
by its `Cart-Token` header or the session cookie; writes (`POST /cart/add-item`) need the
session's `Nonce` unless they carry a `Cart-Token` (401 `woocommerce_rest_missing_nonce` /
`woocommerce_rest_invalid_nonce` otherwise); an unknown product is a 400
`woocommerce_rest_cart_invalid_product`. Prices are in minor units, as the Store API sends
them. No auth: the Store API is public.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from wooflow.jsontypes import JSONObject

from .phpjson import php_json_encode
from .state import SimulatedStore

STORE_API = "/wp-json/wc/store/v1"
SESSION_COOKIE = "wp_woocommerce_session_sim"


@dataclass
class _Cart:
    token: str
    nonce: str
    items: dict[int, int] = field(default_factory=dict)  # product id → quantity


class StoreApiCarts:
    def __init__(self) -> None:
        self.by_token: dict[str, _Cart] = {}

    def new(self) -> _Cart:
        cart = _Cart(secrets.token_hex(16), secrets.token_hex(5))
        self.by_token[cart.token] = cart
        return cart


def _reply(data: Any, status: int, cart: _Cart | None = None) -> Response:
    headers = {"Nonce": cart.nonce, "Cart-Token": cart.token} if cart is not None else None
    response = Response(php_json_encode(data), status_code=status, headers=headers,
                        media_type="application/json; charset=UTF-8")
    if cart is not None:
        response.set_cookie(SESSION_COOKIE, cart.token, path="/", httponly=True, samesite="lax")
    return response


def _error(code: str, message: str, status: int) -> Response:
    return _reply({"code": code, "message": message, "data": {"status": status}}, status)


def store_api_routes(store: SimulatedStore) -> list[Route]:
    carts = StoreApiCarts()

    def render(cart: _Cart) -> JSONObject:
        items: list[JSONObject] = []
        total, count = Decimal(0), 0
        for pid, qty in cart.items.items():
            product = store.products.get(pid)
            if product is None:  # deleted since it was added: WooCommerce drops it from the cart
                continue
            total += product.price * qty
            count += qty
            items.append({"key": f"{pid:032x}", "id": pid, "quantity": qty, "name": product.name,
                          "prices": {"price": str(int(product.price * 100)), "currency_code": store.currency,
                                     "currency_minor_unit": 2}})
        return {"items": items, "items_count": count,
                "totals": {"total_items": str(int(total * 100)), "total_price": str(int(total * 100)),
                           "currency_code": store.currency, "currency_minor_unit": 2}}

    def session_cart(request: Request) -> tuple[_Cart | None, bool]:
        """(the cart, whether the request named it by Cart-Token)."""
        token = request.headers.get("cart-token")
        if token:
            return carts.by_token.get(token), True
        return carts.by_token.get(request.cookies.get(SESSION_COOKIE, "")), False

    async def cart(request: Request) -> Response:
        with store.lock:
            found, _ = session_cart(request)
            found = found or carts.new()
            return _reply(render(found), 200, found)

    async def add_item(request: Request) -> Response:
        with store.lock:
            found, by_token = session_cart(request)
            if not by_token:
                nonce = request.headers.get("nonce")
                if not nonce:
                    return _error("woocommerce_rest_missing_nonce",
                                  "Missing the Nonce header. This endpoint requires a valid nonce.", 401)
                if found is None or not secrets.compare_digest(nonce, found.nonce):
                    return _error("woocommerce_rest_invalid_nonce", "Nonce is invalid.", 403)
            if found is None:
                return _error("woocommerce_rest_cart_token_invalid", "Cart token is invalid.", 401)
        try:
            body = json.loads(await request.body() or b"{}")
            pid, qty = int(body.get("id") or 0), int(body.get("quantity") or 1)
        except (ValueError, TypeError, AttributeError):
            return _error("rest_invalid_param", "Invalid parameter(s): id, quantity", 400)
        with store.lock:
            product = store.products.get(pid)
            if product is None or product.status != "publish" or qty < 1:
                return _error("woocommerce_rest_cart_invalid_product", "This product cannot be added to the cart.",
                              400)
            found.items[pid] = found.items.get(pid, 0) + qty
            return _reply(render(found), 201, found)

    async def sim_store_carts(request: Request) -> Response:
        with store.lock:
            return _reply([{"cart_token": c.token, **render(c)} for c in carts.by_token.values() if c.items], 200)

    return [
        Route(f"{STORE_API}/cart", cart, methods=["GET"]),
        Route(f"{STORE_API}/cart/add-item", add_item, methods=["POST"]),
        Route("/__sim__/store_carts", sim_store_carts, methods=["GET"]),
    ]
