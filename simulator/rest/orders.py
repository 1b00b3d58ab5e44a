"""`/wc/v3/orders`, their notes and refunds."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import RestError, not_found
from ..representations import fmt_gmt, fmt_local, note_json
from .api import API, COLLECTION, ITEM, Api, collection_action, method_action, path_id, refuse_trash
from .params import Params, invalid_param
from .responses import json_response

ORDER_STATUS_ENUM = ("any", "trash", "pending", "processing", "on-hold", "completed", "cancelled",
                     "refunded", "failed", "checkout-draft")


def order_fields(params: Params) -> dict[str, Any]:
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


def routes(api: Api) -> list[Route]:
    store = api.store

    async def create(params: Params) -> Response:
        return api.created("order", store.create_order(**order_fields(params)).id, "orders")

    def listing(request: Request, params: Params) -> Response:
        statuses = params.str_list("status") or ["any"]
        for status in statuses:
            if status not in ORDER_STATUS_ENUM:
                raise invalid_param("status[0]", "rest_not_in_enum",
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
            return api.listing(
                request, params, "order", "orders", items, dated=True,
                fields=lambda o: [str(o.id), o.billing.get("email", ""), o.billing.get("first_name", ""),
                                  o.billing.get("last_name", "")],
                orderby={"date": lambda o: o.created_at, "id": lambda o: o.id, "modified": lambda o: o.modified_at,
                         "title": lambda o: o.created_at, "slug": lambda o: o.id}, default="date")

    orders = api.collection("shop_order", create, listing)

    order = api.item("order", lambda: store.orders, lambda i, params: store.update_order(i, **order_fields(params)),
                     store.delete_order)

    # ----------------------------------------------------------- order notes

    def order_for_notes(order_id: int) -> None:
        if order_id not in store.orders:
            raise RestError("woocommerce_rest_order_invalid_id", "Invalid order ID.", 404)

    @api.endpoint(collection_action)
    async def notes(request: Request, params: Params) -> Response:
        order_id = path_id(request, "order_id")
        order_for_notes(order_id)
        if request.method == "POST":
            note = store.add_order_note(order_id, str(params.get("note") or ""),
                                        customer_note=params.boolean("customer_note"),
                                        added_by_user=params.boolean("added_by_user"))
            return json_response(note_json(note, store.site), 201, {
                "Location": store.site.rest_url(f"/wc/v3/orders/{order_id}/notes/{note.id}")})
        kind = params.enum("type", ("any", "customer", "internal"), "any")
        items = store.get_order_notes(order_id)
        if kind != "any":
            items = [n for n in items if n.customer_note == (kind == "customer")]
        return json_response([note_json(n, store.site) for n in items])

    @api.endpoint(method_action)
    async def note(request: Request, params: Params) -> Response:
        order_id, note_id = path_id(request, "order_id"), path_id(request)
        order_for_notes(order_id)
        found = store.notes.get(note_id)
        if found is None or found.order_id != order_id:
            raise not_found("order_note")
        if request.method == "DELETE":
            refuse_trash(params, "Webhooks")  # the message really says "Webhooks" in WooCommerce's notes controller
            body = note_json(found, store.site)
            store.delete_order_note(order_id, note_id)
            return json_response(body)
        return json_response(note_json(found, store.site))

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

    @api.endpoint(collection_action)
    async def refunds(request: Request, params: Params) -> Response:
        order_id = path_id(request, "order_id")
        if order_id not in store.orders:
            raise RestError("woocommerce_rest_shop_order_invalid_id", "Invalid ID.", 404)
        if request.method == "POST":
            refund = store.refund_order(order_id, params.get("amount"), str(params.get("reason") or ""))
            return json_response(refund_json(order_id, refund.id), 201)
        with store.lock:
            return json_response([refund_json(order_id, r.id) for r in store.orders[order_id].refunds])

    @api.endpoint(method_action)
    async def refund(request: Request, params: Params) -> Response:
        order_id, refund_id = path_id(request, "order_id"), path_id(request)
        with store.lock:
            if order_id not in store.orders or store.refunds.get(refund_id) != order_id:
                raise not_found("order_refund")
            return json_response(refund_json(order_id, refund_id))

    return [
        Route(f"{API}/orders", orders, methods=COLLECTION),
        Route(f"{API}/orders/{{id:int}}", order, methods=ITEM),
        Route(f"{API}/orders/{{order_id:int}}/notes", notes, methods=COLLECTION),
        Route(f"{API}/orders/{{order_id:int}}/notes/{{id:int}}", note, methods=["GET", "DELETE"]),
        Route(f"{API}/orders/{{order_id:int}}/refunds", refunds, methods=COLLECTION),
        Route(f"{API}/orders/{{order_id:int}}/refunds/{{id:int}}", refund, methods=["GET"]),
    ]
