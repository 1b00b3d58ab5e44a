"""The bridge's ASGI app: webhook receiver + probes. `wooflow bridge` serves it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.routing import Route

from wooflow.db.engine import get_engine
from wooflow.kafka.producer import Producer
from wooflow.probes import probe_routes
from wooflow.producers.webhooks import WebhookReceiver
from wooflow.schemas.codec import get_codec
from wooflow.settings import Settings
from wooflow.stores import StoreCache


def create_app(settings: Settings) -> Starlette:
    producer = Producer(settings)
    stores = StoreCache(get_engine(settings.database_url), ttl=settings.store_cache_ttl_s)
    receiver = WebhookReceiver(settings, stores, producer, get_codec(settings.schema_registry_url))

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        producer.start_polling()
        try:
            yield
        finally:
            producer.close()

    routes = [Route("/webhooks/woocommerce/{store_id}", receiver.handle, methods=["POST"]), *probe_routes(lambda: True)]
    return Starlette(routes=routes, lifespan=lifespan)
