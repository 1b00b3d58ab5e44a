"""WooCommerce REST API v3 over HTTP (Starlette), backed by a SimulatedStore.

Only what differs from "obvious CRUD" deserves a note, and it is all on purpose:

* bodies are PHP json_encode output (``\\/``, ``\\uXXXX``), like WordPress';
* authentication happens before routing; no/unknown key -> ``woocommerce_rest_cannot_*``
  401 from the permission check, known key with a wrong secret ->
  ``woocommerce_rest_authentication_error`` 401 (as WC_REST_Authentication);
* collections answer ``X-WP-Total``/``X-WP-TotalPages`` and one ``Link`` header
  with ``rel="prev"``/``rel="next"`` built from the request's own query string;
* ``after``/``before``/``modified_*`` are compared with the site-local columns,
  or the GMT ones with ``dates_are_gmt=true``; a value that carries an offset is
  first converted to the *site* zone's wall clock (WP_Date_Query does that even
  for the GMT columns) – clients should send naive timestamps;
* ``DELETE`` without ``force`` trashes orders/products/coupons and is refused
  (501) for customers, notes and webhooks.

``/__sim__/...`` routes are simulator-only introspection for tests and demos
(delivery log, webhook secrets and failure counts, abandoned carts, idling).

One module per resource registers its routes (`orders`, `customers`, `products`,
`coupons`, `subscriptions` (WooCommerce Subscriptions), `webhooks`, `order_actions` with
WordPress users' roles, `sim`; the Store API cart is ``simulator/store_api.py``); what
they share is in `api` (auth, the CRUD shapes), `params` (request parameters), `listing`
(collections) and `responses`.
"""

from __future__ import annotations

from starlette.applications import Starlette

from ..faults import RestFaults
from ..state import SimulatedStore
from ..store_api import store_api_routes
from . import coupons, customers, order_actions, orders, products, sim, subscriptions, webhooks
from .api import Api

__all__ = ["create_app"]


def create_app(store: SimulatedStore) -> Starlette:
    """The REST API (and /__sim__ introspection) of ``store`` as an ASGI app; the REST
    paths answer through `store.rest_fault` while one is set (faults.py)."""
    api = Api(store)
    routes = [
        *orders.routes(api),
        *customers.routes(api),
        *products.routes(api),
        *coupons.routes(api),
        *subscriptions.routes(api),  # WooCommerce Subscriptions
        *webhooks.routes(api),
        *order_actions.routes(api),  # order actions REST + WP user roles (workers)
        *sim.routes(store),
        *store_api_routes(store),
        sim.NO_ROUTE,
    ]
    app = Starlette(routes=routes)
    app.state.store = store
    app.add_middleware(RestFaults, store=store)
    return app
