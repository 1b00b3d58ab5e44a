"""`/wc/v3/customers`: WordPress users; no trash (a DELETE needs `force`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import RestError
from .api import API, COLLECTION, ITEM, Api
from .params import Params

_WRITABLE = ("email", "first_name", "last_name", "billing", "shipping", "meta_data")


def routes(api: Api) -> list[Route]:
    store = api.store

    async def create(params: Params) -> Response:
        email = params.get("email")
        if not email:
            raise RestError("rest_missing_callback_param", "Missing parameter(s): email", 400,
                            {"params": ["email"]})
        user = store.create_customer(
            str(email), first_name=str(params.get("first_name") or ""),
            last_name=str(params.get("last_name") or ""), username=params.get("username") or None,
            billing=params.get("billing"), shipping=params.get("shipping"), meta_data=params.get("meta_data"),
        )
        return api.created("customer", user.id, "customers")

    def listing(request: Request, params: Params) -> Response:
        role = params.get("role") or "customer"
        with store.lock:
            items = list(store.users.values())
            if role != "all":
                items = [u for u in items if u.role == role]
            if params.get("email"):
                items = [u for u in items if u.email.lower() == str(params.get("email")).lower()]
            return api.listing(
                request, params, "customer", "customers", items,
                fields=lambda u: [u.email, u.username, u.first_name, u.last_name],
                orderby={"id": lambda u: u.id, "name": lambda u: u.username.lower(),
                         "registered_date": lambda u: u.created_at}, default="name", default_order="asc")

    customers = api.collection("customer", create, listing, "resource")

    customer = api.item(
        "customer", lambda: store.users,
        lambda i, params: store.update_customer(i, **{k: params.get(k) for k in _WRITABLE if k in params}),
        store.delete_customer, untrashable="Customers")

    return [
        Route(f"{API}/customers", customers, methods=COLLECTION),
        Route(f"{API}/customers/{{id:int}}", customer, methods=ITEM),
    ]
