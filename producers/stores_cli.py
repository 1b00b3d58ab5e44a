"""`wooflow stores add|list|consent|remove`: tenants, and the webhooks wooflow needs in each store.

`add` registers the store (URL, REST keys, timezone, currency), generates its webhook
secret and storefront public key, and — given the bridge's public URL and REST keys —
creates one webhook per topic in WooCommerce (POST /wp-json/wc/v3/webhooks) with that
secret, remembering their ids in `store_webhooks`. Run again for a registered store,
`add` is an update: options not given keep their values, and the store's existing
webhooks are updated in place (PUT) with the current secret — the way to rotate it —
while missing ones are recreated; WooCommerce never ends up with a second set. `remove`
deletes those webhooks in WooCommerce and then the store. Secrets are never printed.
`consent` shows or sets the store's marketing-consent policy (wooflow/consent_policy.py).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from wooflow.jsontypes import JSONObject

if TYPE_CHECKING:  # the REST client is imported when used: every `wooflow` command loads this module
    from wooflow.producers.woo_rest import WooRest
    from wooflow.stores import Store

app = typer.Typer(help="Stores (tenants).", no_args_is_help=True)
console = Console(stderr=True)

# What the pipeline consumes: every resource topic and the actions that carry facts
# webhooks of resources cannot (checkout, status transitions).
DEFAULT_TOPICS = (
    "order.created", "order.updated", "order.deleted", "order.restored",
    "customer.created", "customer.updated", "customer.deleted",
    "product.created", "product.updated", "product.deleted", "product.restored",
    "coupon.created", "coupon.updated", "coupon.deleted", "coupon.restored",
    "action.woocommerce_checkout_order_processed",
)


def _fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


@dataclass
class WebhookSync:
    """What `sync_webhooks` did; `webhooks`: topic → id of every webhook of the store
    delivering to wooflow afterwards."""

    webhooks: dict[str, int] = field(default_factory=dict)
    updated: int = 0
    created: int = 0
    duplicates_removed: int = 0


def _hook(store: Store, bridge_url: str) -> str:
    return f"{bridge_url.rstrip('/')}/webhooks/woocommerce/{store.id}"


def _delete(rest: WooRest, webhook_id: int) -> None:
    from wooflow.producers.woo_rest import RestError

    try:
        rest.request("DELETE", f"/webhooks/{webhook_id}", params={"force": "true"})
    except RestError as exc:
        if exc.status not in (400, 404):  # already gone in WooCommerce is fine
            raise


def _ours(rest: WooRest, delivery_url: str, known_ids: set[int]) -> list[JSONObject]:
    """The store's webhooks in WooCommerce: recorded by wooflow or delivering to its path,
    the recorded ones first."""
    listed = [w for page in rest.pages("webhooks", {"orderby": "id", "order": "asc"}) for w in page.items]
    ours = [w for w in listed if _id(w) in known_ids or w.get("delivery_url") == delivery_url]
    return sorted(ours, key=lambda w: (_id(w) not in known_ids, _id(w)))


def _id(webhook: JSONObject) -> int:
    wid = webhook["id"]
    if not isinstance(wid, (int, float, str)):
        raise TypeError(f"a webhook id is a number, not {wid!r}")
    return int(wid)


def sync_webhooks(store: Store, bridge_url: str, topics: tuple[str, ...], known_ids: set[int], *,
                  timeout: float = 30.0, max_attempts: int = 6) -> WebhookSync:
    """Make the store's webhooks deliver to the bridge with the store's current secret.

    Each of the store's webhooks (`_ours`) is updated in place (PUT: delivery URL, secret,
    active — a webhook WooCommerce disabled after failed deliveries is switched back on);
    a wanted topic without one — never created, or deleted in WooCommerce meanwhile — is
    created; further webhooks of a topic that already has one are deleted (one delivery
    per change).
    """
    from wooflow.producers.woo_rest import RestError, WooRest

    url = _hook(store, bridge_url)
    done = WebhookSync()
    with WooRest(store, timeout=timeout, max_attempts=max_attempts) as rest:
        for w in _ours(rest, url, known_ids):
            wid, topic = _id(w), str(w.get("topic", ""))
            if topic in done.webhooks:
                _delete(rest, wid)
                done.duplicates_removed += 1
                continue
            try:
                rest.request("PUT", f"/webhooks/{wid}",
                             json={"delivery_url": url, "secret": store.webhook_secret, "status": "active"})
            except RestError as exc:
                if exc.status not in (400, 404):  # deleted since the listing: created below
                    raise
                continue
            done.webhooks[topic] = wid
            done.updated += 1
        for topic in topics:
            if topic not in done.webhooks:
                resp = rest.request("POST", "/webhooks", json={
                    "name": f"wooflow {topic}", "topic": topic, "delivery_url": url,
                    "secret": store.webhook_secret, "status": "active"})
                done.webhooks[topic] = int(resp.json()["id"])
                done.created += 1
    return done


def delete_webhooks(store: Store, webhook_ids: list[int], *, timeout: float = 30.0) -> list[int]:
    from wooflow.producers.woo_rest import WooRest

    with WooRest(store, timeout=timeout) as rest:
        for wid in webhook_ids:
            _delete(rest, wid)
    return webhook_ids


@app.command("add")
def add(
    store_id: Annotated[str, typer.Argument(help="Short id, e.g. 'acme'")],
    url: Annotated[str, typer.Option(help="Store home URL")],
    consumer_key: Annotated[str, typer.Option(help="WooCommerce REST consumer key")] = "",
    consumer_secret: Annotated[str, typer.Option(help="WooCommerce REST consumer secret")] = "",
    timezone: Annotated[str | None, typer.Option(help="Store timezone (IANA; default UTC)")] = None,
    currency: Annotated[str | None, typer.Option(help="Store currency (ISO 4217; default USD)")] = None,
    name: Annotated[str, typer.Option(help="Display name")] = "",
    secret: Annotated[str | None, typer.Option(help="Webhook secret (generated for a new store)")] = None,
    rotate_secret: Annotated[bool, typer.Option("--rotate-secret", help="Generate a new webhook secret")] = False,
    bridge_url: Annotated[str | None, typer.Option(
        help="Public URL of the bridge; webhooks are created in WooCommerce when given "
             "(default: WOOFLOW_BRIDGE_PUBLIC_URL)")] = None,
    topics: Annotated[str, typer.Option(help="Comma-separated webhook topics to create")] = ",".join(DEFAULT_TOPICS),
    webhooks: Annotated[bool, typer.Option(help="Create webhooks in WooCommerce")] = True,
) -> None:
    """Register a store and create its webhooks in WooCommerce; run again to update it
    (e.g. rotate the webhook secret: the webhooks are updated in place)."""
    import re
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from sqlalchemy import delete, insert, select

    from wooflow.db.engine import get_engine
    from wooflow.db.tables import store_webhooks
    from wooflow.producers.woo_rest import RestError, Transient
    from wooflow.settings import get_settings
    from wooflow.stores import Store, StoreCache, upsert_store, valid_store_id

    if not valid_store_id(store_id):
        _fail("store id: 1-64 letters, digits, '-' or '_'")
    if not re.match(r"^https?://[^/\s]+", url):
        _fail(f"--url must be an http(s) URL, got {url!r}")
    if secret and rotate_secret:
        _fail("give --secret or --rotate-secret, not both")
    s = get_settings()
    engine = get_engine(s.database_url)
    existing = StoreCache(engine, ttl=0).get(store_id)
    timezone = timezone or (existing.timezone if existing else "UTC")
    currency = currency or (existing.currency if existing else "USD")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        _fail(f"unknown timezone {timezone!r}")
    if not re.fullmatch(r"[A-Z]{3}", currency):
        _fail(f"currency must be an ISO 4217 code like EUR, got {currency!r}")
    if rotate_secret or not (secret or existing):
        secret = secrets.token_urlsafe(36)
    store = Store(id=store_id, url=url.rstrip("/"), name=name or (existing.name if existing else ""),
                  webhook_secret=secret or (existing.webhook_secret if existing else ""),
                  consumer_key=consumer_key or (existing.consumer_key if existing else ""),
                  consumer_secret=consumer_secret or (existing.consumer_secret if existing else ""),
                  timezone=timezone, currency=currency,
                  public_key=existing.public_key if existing and existing.public_key
                  else "pk_" + secrets.token_urlsafe(18),
                  settings=existing.settings if existing else {})
    upsert_store(engine, store)
    console.print(f"store [bold]{store_id}[/bold] registered; webhook path /webhooks/woocommerce/{store_id}, "
                  f"storefront key {store.public_key}")
    bridge = bridge_url or s.bridge_public_url
    if not webhooks:
        return
    if not bridge:
        console.print("no --bridge-url (or WOOFLOW_BRIDGE_PUBLIC_URL): webhooks in WooCommerce not touched; create "
                      "or update them yourself with the store's secret, or give --bridge-url")
        return
    if not store.consumer_key:
        _fail("creating webhooks needs --consumer-key/--consumer-secret (WooCommerce REST keys, read/write)")
    wanted = tuple(t.strip() for t in topics.split(",") if t.strip())
    with engine.connect() as conn:
        known = {int(r[0]) for r in conn.execute(select(store_webhooks.c.webhook_id)
                                                 .where(store_webhooks.c.store_id == store_id))}
    try:
        done = sync_webhooks(store, bridge, wanted, known, timeout=s.rest_timeout_s, max_attempts=s.rest_max_attempts)
    except (RestError, Transient) as exc:
        _fail(f"webhooks in {store.url}: {exc} (the store row is saved; run the same command again)")
    with engine.begin() as conn:
        conn.execute(delete(store_webhooks).where(store_webhooks.c.store_id == store_id))
        if done.webhooks:
            conn.execute(insert(store_webhooks), [{"store_id": store_id, "webhook_id": wid, "topic": topic}
                                                  for topic, wid in done.webhooks.items()])
    console.print(f"webhooks delivering to {_hook(store, bridge)}: "
                  f"{done.updated} updated in place, {done.created} created"
                  + (f", {done.duplicates_removed} duplicates deleted" if done.duplicates_removed else ""))


@app.command("list")
def list_() -> None:
    """List registered stores."""
    from sqlalchemy import func, select

    from wooflow.db.engine import get_engine
    from wooflow.db.tables import store_webhooks
    from wooflow.settings import get_settings
    from wooflow.stores import list_stores

    engine = get_engine(get_settings().database_url)
    with engine.connect() as conn:
        rows = conn.execute(select(store_webhooks.c.store_id, func.count()).group_by(store_webhooks.c.store_id))
        counts: dict[str, int] = {str(r[0]): int(r[1]) for r in rows}
    table = Table("id", "url", "timezone", "currency", "webhooks", "REST keys")
    for st in list_stores(engine):
        table.add_row(st.id, st.url, st.timezone, st.currency, str(counts.get(st.id, 0)),
                      "yes" if st.consumer_key else "no")
    Console().print(table)


def _csv(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


@app.command("consent")
def consent(
    store_id: Annotated[str, typer.Argument(help="Store id")],
    policy: Annotated[str | None, typer.Option(
        help="opt_in: marketing needs a recorded grant; opt_out: it goes out unless the customer withdrew")] = None,
    grants_from: Annotated[str | None, typer.Option(
        help="Comma-separated sources whose grants count: api, order_meta, customer_meta, storefront")] = None,
    meta_key: Annotated[str | None, typer.Option(
        help="Order/customer meta key the checkout checkbox writes ('' to unset)")] = None,
    meta_yes: Annotated[str | None, typer.Option(help="Comma-separated meta values meaning 'yes'")] = None,
    meta_no: Annotated[str | None, typer.Option(
        help="Comma-separated meta values meaning 'withdrawn' ('' for none)")] = None,
) -> None:
    """Show or change the store's marketing-consent policy (only the options given change)."""
    from pydantic import ValidationError

    from wooflow.consent_policy import ConsentPolicy, policy_of, set_policy
    from wooflow.db.engine import get_engine
    from wooflow.settings import get_settings
    from wooflow.stores import StoreCache

    engine = get_engine(get_settings().database_url)
    store = StoreCache(engine, ttl=0).get(store_id)
    if store is None:
        _fail(f"no store {store_id!r}")
    changes = {k: v for k, v in {"policy": policy, "grants_from": _csv(grants_from), "meta_key": meta_key,
                                 "meta_yes": _csv(meta_yes), "meta_no": _csv(meta_no)}.items() if v is not None}
    current = policy_of(store)
    if changes:
        try:
            current = ConsentPolicy.model_validate({**current.model_dump(), **changes})
        except ValidationError as exc:
            _fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
        set_policy(engine, store_id, current)
        console.print(f"consent policy of [bold]{store_id}[/bold] saved (workers see it within "
                      f"WOOFLOW_STORE_CACHE_TTL_S)")
    Console().print_json(current.model_dump_json())


@app.command("remove")
def remove(
    store_id: Annotated[str, typer.Argument(help="Store id")],
    keep_webhooks: Annotated[bool, typer.Option(help="Leave the webhooks in WooCommerce")] = False,
) -> None:
    """Delete the store's webhooks in WooCommerce, then the store."""
    from sqlalchemy import delete, select

    from wooflow.db.engine import get_engine
    from wooflow.db.tables import store_webhooks, stores
    from wooflow.producers.woo_rest import RestError, Transient
    from wooflow.settings import get_settings
    from wooflow.stores import StoreCache

    s = get_settings()
    engine = get_engine(s.database_url)
    store = StoreCache(engine, ttl=0).get(store_id)
    if store is None:
        _fail(f"no store {store_id!r}")
    with engine.connect() as conn:
        ids = [int(r[0]) for r in conn.execute(select(store_webhooks.c.webhook_id)
                                               .where(store_webhooks.c.store_id == store_id))]
    if ids and not keep_webhooks:
        try:
            delete_webhooks(store, ids, timeout=s.rest_timeout_s)
        except (RestError, Transient) as exc:
            _fail(f"deleting webhooks in {store.url}: {exc} (use --keep-webhooks to remove the store anyway)")
        console.print(f"deleted {len(ids)} webhooks in {store.url}")
    with engine.begin() as conn:
        conn.execute(delete(stores).where(stores.c.id == store_id))
    console.print(f"store [bold]{store_id}[/bold] removed")
