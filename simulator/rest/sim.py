"""`/__sim__/...`: simulator-only introspection for tests and demos (delivery log, webhook
secrets and failure counts, abandoned carts, waiting for idle deliveries), and WordPress'
`rest_no_route` for every other path."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import not_found
from ..state import SimulatedStore
from .api import ITEM, path_id
from .responses import error_response, json_response


def routes(store: SimulatedStore) -> list[Route]:
    async def sim_deliveries(request: Request) -> Response:
        query = dict(parse_qsl(request.url.query))
        webhook_id = int(query["webhook_id"]) if query.get("webhook_id") else None
        kind = query.get("kind") or None
        return json_response([
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
                return error_response(not_found("webhook"))
            return json_response({"id": found.id, "status": found.status, "topic": found.topic,
                                  "secret": found.secret, "failure_count": found.failure_count,
                                  "pending_delivery": found.pending_delivery, "delivery_url": found.delivery_url})

    async def sim_state(request: Request) -> Response:
        with store.lock:
            return json_response({"url": store.url, "timezone": store.timezone, "currency": store.currency,
                                  "orders": len(store.orders), "customers": len(store.users) - 1,
                                  "products": len(store.products), "coupons": len(store.coupons),
                                  "webhooks": len(store.webhooks), "pending_deliveries": store.queue.pending,
                                  "deliveries_in_flight": store.queue.in_flight,
                                  "abandoned_carts": len(store.abandoned_carts)})

    async def sim_carts(request: Request) -> Response:
        with store.lock:
            return json_response(list(store.abandoned_carts))

    async def sim_wait_idle(request: Request) -> Response:
        timeout = float(dict(parse_qsl(request.url.query)).get("timeout", "10"))
        idle = await store.deliveries_idle(timeout)
        return json_response({"idle": idle}, 200 if idle else 504)

    return [
        Route("/__sim__/deliveries", sim_deliveries, methods=["GET"]),
        Route("/__sim__/webhooks/{id:int}", sim_webhook, methods=["GET"]),
        Route("/__sim__/state", sim_state, methods=["GET"]),
        Route("/__sim__/abandoned_carts", sim_carts, methods=["GET"]),
        Route("/__sim__/wait_idle", sim_wait_idle, methods=["POST", "GET"]),
    ]


async def no_route(request: Request) -> Response:
    return json_response({"code": "rest_no_route", "message": "No route was found matching the URL and request method.",
                          "data": {"status": 404}}, 404)


NO_ROUTE = Route("/{path:path}", no_route, methods=ITEM)  # last: whatever no other route took
