"""Run the simulated store on a real socket, with its delivery worker.

:class:`SimulatorServer` is what tests use: uvicorn in a background thread on
127.0.0.1 and a free port, the store's URL set to the bound address *before*
the first request (webhook ``X-WC-Webhook-Source``, ``_links`` and ``Link``
headers all carry it), and the delivery worker running in the server's own
event loop – so deliveries and the REST API share one loop like PHP-FPM and
the Action Scheduler share one site.  :func:`serve` is the blocking variant
behind ``wooflow simulator run``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import uvicorn

from wooflow.process import new_event_loop

from .delivery import DEFAULT_TIMEOUT, DeliveryWorker
from .rest import create_app
from .state import SimulatedStore

__all__ = ["DEFAULT_WEBHOOK_TOPICS", "SimulatorServer", "serve"]

log = logging.getLogger("wooflow.simulator")

# What `serve --webhook-url` subscribes: everything the pipeline consumes.
DEFAULT_WEBHOOK_TOPICS = (
    "order.created", "order.updated", "order.deleted", "order.restored",
    "customer.created", "customer.updated", "customer.deleted",
    "product.created", "product.updated", "product.deleted",
    "coupon.created", "coupon.updated",
    "action.woocommerce_checkout_order_processed",
)


class SimulatorServer:
    """A running simulated store: ``with SimulatorServer() as sim: sim.url, sim.store``."""

    def __init__(
        self,
        store: SimulatedStore | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        public_url: str | None = None,
        delivery_timeout: float = DEFAULT_TIMEOUT,
        delivery_concurrency: int = 1,
        log_level: str = "warning",
        **store_kwargs: Any,
    ) -> None:
        self.store = store if store is not None else SimulatedStore(**store_kwargs)
        self.host = host
        self.port = port
        self._public_url = public_url
        self.delivery_timeout = delivery_timeout
        self.delivery_concurrency = delivery_concurrency
        self.log_level = log_level
        self.worker: DeliveryWorker | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """Base URL of the store, e.g. ``http://127.0.0.1:54321`` (no trailing slash)."""
        return self.store.url

    @property
    def api_url(self) -> str:
        return self.store.url + "/wp-json/wc/v3"

    @property
    def auth(self) -> tuple[str, str]:
        """(consumer_key, consumer_secret) for HTTP Basic auth."""
        return (self.store.consumer_key, self.store.consumer_secret)

    def start(self, timeout: float = 10.0) -> SimulatorServer:
        if self._thread is not None:
            return self
        # Bind first (port 0 = any free port), so the URL is known before the
        # app serves anything.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit this on Linux: without it, a response
        # written as headers + body waits ~40 ms for a delayed ACK (Nagle).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        if self._public_url:
            self.store.url = self._public_url
        else:
            shown = "127.0.0.1" if self.host in ("0.0.0.0", "") else ("[::1]" if self.host == "::" else self.host)
            self.store.url = f"http://{shown}:{self.port}"
        config = uvicorn.Config(
            create_app(self.store), log_level=self.log_level, access_log=False, lifespan="off",
            loop="asyncio", timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, args=(sock,), name="wc-simulator", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"simulator server failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("simulator server did not start in time")
            time.sleep(0.01)
        return self

    def _run(self, sock: socket.socket) -> None:
        try:
            with asyncio.Runner(loop_factory=new_event_loop) as runner:
                runner.run(self._main(sock))
        except BaseException as exc:  # surfaced by start()
            self._error = exc
        finally:
            sock.close()

    async def _main(self, sock: socket.socket) -> None:
        assert self._server is not None
        self._loop = asyncio.get_running_loop()
        self.worker = DeliveryWorker(self.store, timeout=self.delivery_timeout,
                                     concurrency=self.delivery_concurrency)
        worker_task = asyncio.create_task(self.worker.run(), name="webhook-delivery-worker")
        try:
            await self._server.serve(sockets=[sock])
        finally:
            self.worker.stop()
            worker_task.cancel()
            await asyncio.gather(worker_task, return_exceptions=True)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving; deliveries still queued are dropped (the site went down)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until every queued delivery has been attempted."""
        return self.store.wait_idle(timeout)

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    seed: int = 42,
    orders_per_second: float = 1.0,
    orders: int | None = None,
    consumer_key: str | None = None,
    consumer_secret: str | None = None,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    webhook_topics: Iterable[str] = DEFAULT_WEBHOOK_TOPICS,
    timezone: str = "Europe/Warsaw",
    currency: str = "PLN",
    public_url: str | None = None,
    delivery_delay: float = 0.0,
    delivery_jitter: float = 0.0,
    on_ready: Callable[[SimulatorServer], None] | None = None,
    stop_event: threading.Event | None = None,
) -> None:
    """Serve a simulated store until interrupted, generating traffic at ``orders_per_second``.

    ``orders_per_second <= 0`` serves without traffic; ``orders`` bounds the
    number of orders (then keeps serving).  Webhooks for ``webhook_topics``
    are created (and pinged) at startup when ``webhook_url`` is given.
    """
    from .traffic import generate  # traffic drives the store; imported lazily to keep startup light

    stop = stop_event or threading.Event()
    store = SimulatedStore(
        timezone=timezone, currency=currency, consumer_key=consumer_key, consumer_secret=consumer_secret,
        seed=seed, delivery_delay=delivery_delay, delivery_jitter=delivery_jitter,
    )
    with SimulatorServer(store, host=host, port=port, public_url=public_url) as server:
        if webhook_url:
            for topic in webhook_topics:
                store.create_webhook(topic, webhook_url, secret=webhook_secret)
        if on_ready is not None:
            on_ready(server)
        try:
            if orders_per_second > 0 and orders != 0:
                generate(store, orders, rate_per_s=orders_per_second, seed=seed, stop_event=stop)
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
