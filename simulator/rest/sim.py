"""`/__sim__/...`: simulator-only introspection for tests and demos (delivery log, webhook
secrets and failure counts, abandoned carts, waiting for idle deliveries, a REST fault for a
while), and WordPress' `rest_no_route` for every other path."""

from __future__ import annotations

import time
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import not_found
from ..faults import RestFault
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

    async def sim_rest_fault(request: Request) -> Response:
        """POST {"mode": "error"|"slow", "seconds", "status", "delay_s", "after_effect"}: the
        REST API fails or is slow for `seconds` (faults.py); DELETE ends it."""
        if request.method == "DELETE":
            store.rest_fault = None
            return json_response({"fault": None})
        try:
            spec = await request.json()
            mode = str(spec["mode"])
            if mode not in ("error", "slow"):
                raise ValueError(f"mode {mode!r} is not error or slow")
            fault = RestFault(mode="error" if mode == "error" else "slow",
                              until=time.monotonic() + float(spec.get("seconds", 10)),
                              status=int(spec.get("status", 503)), delay_s=float(spec.get("delay_s", 5)),
                              after_effect=float(spec.get("after_effect", 0.3)), seed=int(spec.get("seed", 0)))
        except (ValueError, KeyError, TypeError) as exc:
            return json_response({"code": "rest_invalid_param", "message": str(exc), "data": {"status": 400}}, 400)
        store.rest_fault = fault
        return json_response({"fault": mode})

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
        Route("/__sim__/rest_fault", sim_rest_fault, methods=["POST", "DELETE"]),
    ]


async def no_route(request: Request) -> Response:
    return json_response({"code": "rest_no_route", "message": "No route was found matching the URL and request method.",
                          "data": {"status": 404}}, 404)


NO_ROUTE = Route("/{path:path}", no_route, methods=ITEM)  # last: whatever no other route took
