"""The bridge's ASGI app: webhook receiver, storefront events, probes. `wooflow bridge` serves it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

from starlette.applications import Starlette
from starlette.routing import Route
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from wooflow.db.engine import get_engine
from wooflow.probes import all_of, db_ready, probe_routes
from wooflow.producers.ingest import Ingestor
from wooflow.producers.storefront import StorefrontReceiver
from wooflow.producers.tenants import Tenants
from wooflow.producers.webhooks import WebhookReceiver
from wooflow.producers.woo_rest import AsyncWooRest
from wooflow.schemas.codec import get_codec
from wooflow.settings import Settings
from wooflow.stores import StoreCache


def create_app(settings: Settings) -> Any:
    engine = get_engine(settings.database_url)
    tenants = Tenants(StoreCache(engine, ttl=settings.store_cache_ttl_s))
    ingestor = Ingestor(settings, engine, get_codec(settings.schema_registry_url))
    rest = AsyncWooRest(timeout=min(10.0, settings.rest_timeout_s))
    webhooks = WebhookReceiver(settings, tenants, ingestor, engine, rest)
    storefront = StorefrontReceiver(settings, tenants, ingestor, engine)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await ingestor.start()
        try:
            yield
        finally:
            await ingestor.stop()
            await rest.aclose()

    routes = [
        Route("/webhooks/woocommerce/{store_id}", webhooks.handle, methods=["POST"]),
        Route("/storefront/{store_id}/events", storefront.handle, methods=["POST"]),
        Route("/storefront/{store_id}/events", storefront.preflight, methods=["OPTIONS"]),
        Route("/storefront/{store_id}/wooflow.js", storefront.script, methods=["GET"]),
        # Ready = the ingest loop runs and PostgreSQL answers (dedupe and the outbox live
        # there); a Kafka outage alone keeps the bridge ready: the outbox takes the events.
        *probe_routes(all_of(lambda: ingestor.ready, db_ready(settings.database_url))),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.ingestor = ingestor
    # The client address matters to the storefront's rate limit only: webhooks skip the
    # X-Forwarded-For middleware (`wooflow bridge` runs uvicorn without its own).
    # (uvicorn types ASGI apps its own way; Starlette is one: cast across the two libraries' typings)
    proxied = ProxyHeadersMiddleware(cast(Any, app), trusted_hosts=settings.bridge_forwarded_allow_ips)
    return FastPath(proxied, webhooks, app)


class FastPath:
    """Webhook deliveries skip Starlette's routing and Request objects (the bridge's hot
    path); everything else — storefront, probes, lifespan — goes to the Starlette app."""

    PREFIX = "/webhooks/woocommerce/"

    def __init__(self, app: Any, webhooks: WebhookReceiver, starlette: Starlette) -> None:
        self.app = app
        self.webhooks = webhooks
        self.state = starlette.state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            if path.startswith(self.PREFIX):
                store_id = path[len(self.PREFIX):]
                if store_id and "/" not in store_id:
                    await self.webhooks.asgi(scope, receive, send, store_id)
                    return
        await self.app(scope, receive, send)
