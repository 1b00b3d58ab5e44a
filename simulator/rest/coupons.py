"""`/wc/v3/coupons`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .api import API, COLLECTION, ITEM, Api, writable
from .params import Params


def routes(api: Api) -> list[Route]:
    store = api.store

    async def create(params: Params) -> Response:
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
        return api.created("coupon", coupon.id, "coupons")

    def listing(request: Request, params: Params) -> Response:
        with store.lock:
            items = [c for c in store.coupons.values() if c.status != "trash"]
            if params.get("code"):
                code = str(params.get("code")).strip().lower()
                items = [c for c in items if c.code == code]
            return api.listing(
                request, params, "coupon", "coupons", items, dated=True, fields=lambda c: [c.code, c.description],
                orderby={"date": lambda c: c.created_at, "id": lambda c: c.id, "modified": lambda c: c.modified_at,
                         "title": lambda c: c.code, "slug": lambda c: c.code}, default="date")

    coupons = api.collection("shop_coupon", create, listing)

    coupon = api.item("coupon", lambda: store.coupons,
                      lambda i, params: store.update_coupon(i, **writable(params)), store.delete_coupon)

    return [
        Route(f"{API}/coupons", coupons, methods=COLLECTION),
        Route(f"{API}/coupons/{{id:int}}", coupon, methods=ITEM),
    ]
