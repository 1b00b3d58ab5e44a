"""Cart recovery links: `GET /recover/cart/{token}` → the store's cart, refilled.

Abandoned-cart emails carry `{{ cart.recovery_url }}` = `<public_base_url>/recover/cart/<token>`
(the token is random, one per cart, and reveals nothing). The route records the click and
answers 302 to the store:

    <store url>/cart/?wooflow_cart=<token>&wooflow_items=<product[-variation]:qty,...>

The store side (a small snippet in the theme or plugin) adds the listed items to the
session's cart and keeps `wooflow_cart` in the order meta `_wooflow_cart`, so the order
that follows is attributed to the cart even if the shopper checks out under another email.
The route is public (customers click it), so it is mounted without API authentication.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy import Engine, text

router = APIRouter(tags=["carts"])

PATH = "/recover/cart/{token}"


def recovery_url(settings: Any, token: str) -> str:
    base = str(getattr(settings, "public_base_url", "") or "http://localhost:8000").rstrip("/")
    return base + PATH.format(token=token)


def items_param(items: list[dict[str, Any]]) -> str:
    parts = []
    for it in items:
        pid, var, qty = int(it.get("product_id") or 0), int(it.get("variation_id") or 0), int(it.get("quantity") or 0)
        if pid and qty > 0:
            parts.append(f"{pid}-{var}:{qty}" if var else f"{pid}:{qty}")
    return ",".join(parts)


def parse_items_param(value: str) -> list[dict[str, int]]:
    """The inverse of items_param (what the store side, or the simulator, does)."""
    out = []
    for part in (value or "").split(","):
        if ":" not in part:
            continue
        ids, qty = part.split(":", 1)
        pid, _, var = ids.partition("-")
        out.append({"product_id": int(pid), "variation_id": int(var or 0), "quantity": int(qty)})
    return out


_FIND = text("""
SELECT c.store_id, c.items, s.url FROM carts c JOIN stores s ON s.id = c.store_id WHERE c.token = :token
""")
_CLICK = text("UPDATE carts SET clicked_at = COALESCE(clicked_at, :now), updated_at = now() WHERE token = :token")


def restore_target(engine: Engine, token: str, now: Any) -> str | None:
    with engine.begin() as conn:
        row = conn.execute(_FIND, {"token": token}).mappings().first()
        if row is None:
            return None
        conn.execute(_CLICK, {"token": token, "now": now})
    query = urlencode({"wooflow_cart": token, "wooflow_items": items_param(row["items"] or [])})
    return f"{str(row['url']).rstrip('/')}/cart/?{query}"


@router.get(PATH, summary="Restore an abandoned cart (public link from recovery emails)",
            response_class=RedirectResponse, status_code=302,
            responses={302: {"description": "Redirect to the store's cart with the items"},
                       404: {"description": "Unknown or expired link"}})
def restore(token: str, request: Request) -> Response:
    from wooflow.clock import get_clock

    if not token or len(token) > 64:
        return JSONResponse({"error": "not_found", "message": "unknown cart link"}, status_code=404)
    target = restore_target(request.app.state.engine, token, get_clock(request.app.state.settings).now())
    if target is None:
        return JSONResponse({"error": "not_found", "message": "unknown cart link"}, status_code=404)
    return RedirectResponse(target, status_code=302)
