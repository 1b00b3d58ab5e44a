"""``wooflow simulator`` – run a simulated WooCommerce store from the shell.

The lead CLI mounts ``app`` (``root.add_typer(app, name="simulator")``).
"""

from __future__ import annotations

import typer

from .server import DEFAULT_WEBHOOK_TOPICS, SimulatorServer, serve

app = typer.Typer(help="Simulated WooCommerce store: REST API v3 + webhooks, with seeded traffic.",
                  no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Keep `run` a sub-command even though it is the only one."""


@app.command()
def run(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8080, help="Port to bind (0 = any free port)."),
    seed: int = typer.Option(42, help="Seed for traffic, ids, keys and secrets."),
    orders_per_second: float = typer.Option(1.0, "--orders-per-second", help="Order rate; 0 = no traffic."),
    orders: int | None = typer.Option(None, help="Stop generating after this many orders (keep serving)."),
    consumer_key: str | None = typer.Option(None, help="REST consumer key (default: derived from seed)."),
    consumer_secret: str | None = typer.Option(None, help="REST consumer secret (default: derived from seed)."),
    webhook_url: str | None = typer.Option(None, help="Create webhooks delivering to this URL at startup."),
    webhook_secret: str | None = typer.Option(None, help="Secret for those webhooks (default: random 50 chars)."),
    webhook_topic: list[str] | None = typer.Option(
        None, "--webhook-topic", help="Topic to subscribe (repeatable). Default: orders, customers, products, "
                                      "coupons and action.woocommerce_checkout_order_processed."),
    timezone: str = typer.Option("Europe/Warsaw", help="Store timezone (site-local dates)."),
    currency: str = typer.Option("PLN", help="Store currency."),
    public_url: str | None = typer.Option(None, help="Home URL to advertise (X-WC-Webhook-Source, links)."),
    delivery_delay: float = typer.Option(0.0, help="Seconds each webhook delivery waits in the queue."),
    delivery_jitter: float = typer.Option(0.0, help="Extra random 0..J seconds per delivery (reorders them)."),
) -> None:
    """Serve the store until Ctrl-C, placing orders at --orders-per-second."""

    def ready(server: SimulatorServer) -> None:
        store = server.store
        typer.echo(f"WooCommerce simulator at {server.url}/wp-json/wc/v3/")
        typer.echo(f"  consumer_key    = {store.consumer_key}")
        typer.echo(f"  consumer_secret = {store.consumer_secret}")
        for webhook in store.webhooks.values():
            ping = next((a for a in store.deliveries(webhook.id, "ping")), None)
            answer = (ping.status_code or ping.error) if ping else "no ping"
            typer.echo(f"  webhook #{webhook.id} {webhook.topic} -> {webhook.delivery_url} (ping: {answer})")
        if webhook_url and not webhook_secret and store.webhooks:
            typer.echo(f"  webhook secret  = {next(iter(store.webhooks.values())).secret!r} (first webhook)")

    serve(
        host, port, seed=seed, orders_per_second=orders_per_second, orders=orders,
        consumer_key=consumer_key, consumer_secret=consumer_secret, webhook_url=webhook_url,
        webhook_secret=webhook_secret, webhook_topics=webhook_topic or DEFAULT_WEBHOOK_TOPICS,
        timezone=timezone, currency=currency, public_url=public_url, delivery_delay=delivery_delay,
        delivery_jitter=delivery_jitter, on_ready=ready,
    )


if __name__ == "__main__":  # pragma: no cover
    app()
