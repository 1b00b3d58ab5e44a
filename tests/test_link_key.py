"""Unsubscribe links outlive a webhook-secret rotation, and links sent before stores had a
link key of their own still work after the migration that gave them one."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import text

from tests.harness import ApiThread
from tests.support import fresh_database as support_fresh_database
from tests.support import unique
from wooflow.db.engine import get_engine
from wooflow.db.migrate import upgrade
from wooflow.stores import Store, StoreCache, upsert_store
from wooflow.workers import unsubscribe

pytestmark = pytest.mark.integration


def _post(api: ApiThread, token: str) -> httpx.Response:
    return httpx.post(f"{api.url}/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}, timeout=10)


def test_a_rotated_webhook_secret_keeps_sent_unsubscribe_links_working(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = Store(id=unique("store"), url="http://127.0.0.1:1", webhook_secret="before-rotation")
    upsert_store(engine, store)
    saved = StoreCache(engine).get(store.id)
    assert saved is not None and len(saved.link_key) == 64
    token = unsubscribe.make_token(settings, saved, email="fan@example.com", customer_key="c1")

    # stores add --rotate-secret
    upsert_store(engine, Store(id=store.id, url=store.url, webhook_secret="after-rotation"))
    rotated = StoreCache(engine).get(store.id)
    assert rotated is not None and rotated.webhook_secret == "after-rotation"
    assert rotated.link_key == saved.link_key
    with ApiThread(settings) as api:
        assert _post(api, token).status_code == 200
        from_secret = hmac.new(b"after-rotation", b"wooflow-unsubscribe", hashlib.sha256).hexdigest()
        forged = unsubscribe.make_token(settings, Store(id=store.id, url="", webhook_secret="", link_key=from_secret),
                                        email="fan@example.com", customer_key="c1")
        assert _post(api, forged).status_code == 404  # links are not signed with the webhook secret
    with engine.connect() as conn:
        withdrawn = conn.execute(text("SELECT granted FROM consents WHERE store_id = :s AND email = :e"),
                                 {"s": store.id, "e": "fan@example.com"}).scalars().all()
    assert withdrawn == [False]


@pytest.fixture
def fresh_database(migrated: str) -> Iterator[str]:
    with support_fresh_database(migrated, "linkkey") as url:
        yield url


def test_links_signed_before_the_migration_still_verify(settings, fresh_database) -> None:  # type: ignore[no-untyped-def]
    upgrade(fresh_database, "0010_consent")
    db = get_engine(fresh_database)
    with db.begin() as conn:
        conn.execute(text("INSERT INTO stores (id, url, webhook_secret) "
                          "VALUES ('old', 'http://127.0.0.1:1', 's3cret')"))
    legacy_key = hmac.new(b"s3cret", b"wooflow-unsubscribe", hashlib.sha256).hexdigest()
    old_link = unsubscribe.make_token(settings, Store(id="old", url="", webhook_secret="", link_key=legacy_key),
                                      email="a@example.com", customer_key=None)
    upgrade(fresh_database)
    store = StoreCache(db).get("old")
    assert store is not None and store.link_key == legacy_key
    assert unsubscribe.verify(settings, store, old_link)["e"] == "a@example.com"
