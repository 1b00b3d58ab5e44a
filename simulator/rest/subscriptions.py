"""`/wc/v3/subscriptions`: WooCommerce Subscriptions' REST resource (its v3 controller
extends the orders controller): list (`status`, `customer`, the common filters), create,
read, update, trash or delete."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import RestError
from ..models import SUBSCRIPTION_STATUSES
from .api import API, COLLECTION, ITEM, Api
from .params import Params

DATES = ("start_date", "trial_end_date", "next_payment_date", "end_date")


def _gmt(value: Any, name: str) -> int | None:
    """A subscription date as the controller takes it: "Y-m-d H:i:s" (or ISO) in GMT; "" unsets."""
    if value in (None, "", 0):
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace(" ", "T"))
    except ValueError:
        raise RestError("rest_invalid_param", f"Invalid parameter(s): {name}", 400) from None
    return int((parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp())


def subscription_fields(params: Params) -> dict[str, Any]:
    fields: dict[str, Any] = {n: params.get(n) for n in ("status", "billing_period", "payment_method", "meta_data")
                              if params.get(n) is not None}
    if params.get("billing_interval") is not None:
        fields["billing_interval"] = params.integer("billing_interval", 1)
    for name in DATES:
        if name in params.data:
            fields[name] = _gmt(params.get(name), name)
    return fields


def routes(api: Api) -> list[Route]:
    store = api.store

    async def create(params: Params) -> Response:
        fields = subscription_fields(params)
        sub = store.create_subscription(
            customer_id=params.integer("customer_id", 0) or 0, line_items=params.get("line_items") or [],
            billing=params.get("billing"), parent_id=params.integer("parent_id", 0) or 0,
            **{k: v for k, v in fields.items() if k != "meta_data"}, meta_data=fields.get("meta_data"))
        return api.created("subscription", sub.id, "subscriptions")

    def listing(request: Request, params: Params) -> Response:
        statuses = params.str_list("status") or ["any"]
        with store.lock:
            items = [s for s in store.subscriptions.values() if s.status != "trash"]
            if "any" not in statuses:
                wanted = {st.removeprefix("wc-") for st in statuses if st.removeprefix("wc-") in SUBSCRIPTION_STATUSES}
                items = [s for s in items if s.status in wanted]
            customer = params.integer("customer")
            if customer is not None:
                items = [s for s in items if s.customer_id == customer]
            return api.listing(
                request, params, "subscription", "subscriptions", items, dated=True,
                fields=lambda s: [str(s.id), s.billing.get("email", "")],
                orderby={"date": lambda s: s.created_at, "id": lambda s: s.id, "modified": lambda s: s.modified_at},
                default="date")

    subscriptions = api.collection("shop_subscription", create, listing, noun="subscription")
    subscription = api.item("subscription", lambda: store.subscriptions,
                            lambda i, params: store.update_subscription(i, **subscription_fields(params)),
                            store.delete_subscription)
    return [
        Route(f"{API}/subscriptions", subscriptions, methods=COLLECTION),
        Route(f"{API}/subscriptions/{{id:int}}", subscription, methods=ITEM),
    ]
