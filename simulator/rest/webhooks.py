"""`/wc/v3/webhooks`: created active whatever `status` says, pinged on creation, no trash."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..delivery import send_ping_async
from ..errors import RestError
from .api import API, COLLECTION, ITEM, Api, method_action, path_id, refuse_trash
from .params import Params
from .responses import json_response


def routes(api: Api) -> list[Route]:
    store = api.store

    async def create(params: Params) -> Response:
        topic = str(params.get("topic") or "")
        url = str(params.get("delivery_url") or "")
        missing = [n for n, v in (("topic", topic), ("delivery_url", url)) if not v]
        if missing:
            raise RestError("rest_missing_callback_param", "Missing parameter(s): " + ", ".join(missing), 400,
                            {"params": missing})
        # The controller always creates it "publish" -> active, whatever status says.
        webhook = store.create_webhook(topic, url, secret=params.get("secret") or None,
                                       name=params.get("name") or None, status="active", ping=False)
        response = api.created("webhook", webhook.id, "webhooks")
        await send_ping_async(store, webhook.id)  # result only recorded, as in WooCommerce
        return response

    def listing(request: Request, params: Params) -> Response:
        status = params.enum("status", ("all", "active", "paused", "disabled"), "all")
        with store.lock:
            items = list(store.webhooks.values())
            if status != "all":
                items = [w for w in items if w.status == status]
            return api.listing(
                request, params, "webhook", "webhooks", items, fields=lambda w: [w.name],
                orderby={"date": lambda w: w.created_at, "id": lambda w: w.id, "title": lambda w: w.name.lower()},
                default="date")

    webhooks = api.collection("shop_webhook", create, listing)

    # Not `api.item`: reading or updating an unknown id is a 400 "ID is invalid."
    @api.endpoint(method_action)
    async def webhook(request: Request, params: Params) -> Response:
        webhook_id = path_id(request)
        if request.method == "GET":
            if webhook_id not in store.webhooks:
                # prepare_item_for_response() answers 400 "ID is invalid." here.
                raise RestError("woocommerce_rest_shop_webhook_invalid_id", "ID is invalid.", 400)
            return json_response(store.rest_item("webhook", webhook_id))
        if request.method == "DELETE":
            refuse_trash(params, "Webhooks")
            before = store.rest_item("webhook", webhook_id)
            store.delete_webhook(webhook_id)
            return json_response(before)
        store.update_webhook(webhook_id, **{k: params.get(k) for k in (
            "name", "status", "topic", "delivery_url", "secret") if params.get(k)})
        return json_response(store.rest_item("webhook", webhook_id))

    return [
        Route(f"{API}/webhooks", webhooks, methods=COLLECTION),
        Route(f"{API}/webhooks/{{id:int}}", webhook, methods=ITEM),
    ]
