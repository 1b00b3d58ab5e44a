"""Fixed mixed traffic for a chaos run, and the ledger of the effects it calls for.

Traffic (seeded; every kind paced at its own share of the target rate): checkouts —
registered customers and guests, cash on delivery, so `processing` — most of them
completed 8–20 s later; sign-ups (new customers, never touched again); profile edits of
registered customers; product price changes; storefront browsing (views, categories,
searches, batched per session like the snippet does) and abandoned carts (a cart and a
captured email, then nothing). Store changes reach the bridge by webhook; storefront
batches are POSTed to the bridge by the "browser", which retries a refused batch with the
same event ids (the bridge de-duplicates them) until the run drains.

The rules (`rules()`) turn that into effects, and the ledger records each effect the
store's own truth demands, with whether it is a *must* or only a *may*:

* an order placed: note `chaos:new:<id>`, webhook `order:<id>`, and one minute later note
  `chaos:later:<id>` — always a must (the poller finds an order whose webhooks were lost);
* an order completed: a coupon for the customer and the email `chaos:coupon:<id>:<code>` —
  a must when WooCommerce delivered the order while it was `processing` (answered 2xx)
  before it was completed; otherwise a may: with that webhook lost, the poller may only
  ever see the completed order, and no status change is there to be seen;
* a sign-up: email `chaos:welcome:<id>` — always;
* an abandoned cart: email `chaos:cart:<session>` — when the bridge accepted the batch.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import httpx

from wooflow.ops.chaos.world import ChaosStore
from wooflow.simulator.models import OrderNote
from wooflow.simulator.traffic import ensure_catalog

ORDER, LATER, HOOK, COUPON_MAIL, WELCOME, CART = "note", "later_note", "webhook", "coupon_email", "welcome_email", \
    "cart_email"
EFFECT_KINDS = (ORDER, LATER, HOOK, COUPON_MAIL, WELCOME, CART)
COUPON_PREFIX = "CHAOS"


def rules(receiver_url: str) -> list[dict[str, Any]]:
    """The chaos store's rules: notes, an outbound webhook, a delayed step, a coupon handed
    to an email, a welcome email and a (marketing) cart-recovery email."""
    return [
        {"name": "chaos: order placed", "trigger": "new_order", "actions": [
            {"type": "add_order_note", "params": {"note": "chaos:new:{{ order.id }}"}},
            {"type": "webhook", "params": {"url": f"{receiver_url}/hooks/order", "include_context": False,
                                           "payload": {"subject": "order:{{ order.id }}"}}},
            {"type": "add_order_note", "params": {"note": "chaos:later:{{ order.id }}"}, "delay": "1m"}]},
        {"name": "chaos: order completed", "trigger": "order_status_changed", "trigger_options": {"to": ["completed"]},
         "actions": [
             {"type": "apply_coupon", "params": {"amount": "5", "prefix": COUPON_PREFIX, "expires_in_days": 30}},
             {"type": "send_email", "params": {"subject": "chaos:coupon:{{ order.id }}:{{ coupon.code }}",
                                               "text": "Thank you! {{ coupon.code }} takes 5% off your next order."}}]},
        {"name": "chaos: welcome", "trigger": "new_customer", "actions": [
            {"type": "send_email", "params": {"subject": "chaos:welcome:{{ customer.id }}",
                                              "text": "Welcome to the shop."}}]},
        {"name": "chaos: cart recovery", "trigger": "abandoned_cart", "actions": [
            {"type": "send_email", "params": {"subject": "chaos:cart:{{ cart.session_id }}", "marketing": True,
                                              "text": "You left something in your cart: {{ cart.recovery_url }}"}}]},
    ]


@dataclass
class Expect:
    kind: str
    subject: str  # note text, email subject (without the coupon code), webhook payload subject
    must: bool
    email: str = ""  # coupon emails: whose coupon


@dataclass
class Ledger:
    """The effects the traffic called for. Thread-safe: traffic, faults and the browser add."""

    expected: dict[tuple[str, str], Expect] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def expect(self, kind: str, subject: str, *, must: bool, email: str = "") -> None:
        with self.lock:
            old = self.expected.get((kind, subject))
            self.expected[(kind, subject)] = Expect(kind, subject, must or bool(old and old.must), email)

    def order_placed(self, oid: int) -> None:
        self.expect(ORDER, f"chaos:new:{oid}", must=True)
        self.expect(HOOK, f"order:{oid}", must=True)
        self.expect(LATER, f"chaos:later:{oid}", must=True)

    def counts(self) -> Counter[str]:
        with self.lock:
            return Counter(e.kind for e in self.expected.values())

    def all(self) -> list[Expect]:
        with self.lock:
            return list(self.expected.values())


class NotedStore(ChaosStore):
    """The chaos store, remembering when each `chaos:` note first appeared (recovery times)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.note_seen: dict[str, float] = {}

    def add_order_note(self, order_id: int, note: str, *, customer_note: bool = False,
                       added_by_user: bool = False) -> OrderNote:
        added = super().add_order_note(order_id, note, customer_note=customer_note, added_by_user=added_by_user)
        if note.startswith("chaos:"):
            self.note_seen.setdefault(note, time.monotonic())
        return added


@dataclass
class Batch:
    """A storefront request as the browser sends it (retried as is until accepted)."""

    body: dict[str, Any]
    ip: str
    cart: tuple[str, str] | None = None  # (session, email) of an abandoned cart
    tries: int = 0
    next_try: float = 0.0


@dataclass
class Counts:
    checkouts: int = 0
    completions: int = 0
    signups: int = 0
    profile_edits: int = 0
    product_edits: int = 0
    browse_batches: int = 0
    carts: int = 0
    storefront_events: int = 0
    storefront_refused: int = 0  # answers other than 2xx (retried)
    canaries: int = 0


# Actions per second per event per second of target rate (storefront takes the rest).
_SHARE = {"checkout": 1 / 50, "signup": 1 / 400, "profile": 1 / 200, "product": 1 / 100, "cart": 1 / 200}
_BROWSE_EVENTS = 10


class Traffic:
    def __init__(self, store: NotedStore, ledger: Ledger, *, bridge_url: str, store_id: str, public_key: str,
                 rate: float, seed: int) -> None:
        self.store, self.ledger, self.rate = store, ledger, rate
        self.url = f"{bridge_url}/storefront/{store_id}/events"
        self.public_key = public_key
        self.rng = random.Random(seed)
        self.seed = seed
        self.counts = Counts()
        self.customers: list[tuple[int, str]] = []
        self.products: list[tuple[int, str, str]] = []  # id, name, price
        self.categories: list[int] = []
        self._completions: list[tuple[float, int, str]] = []  # (due, order id, email)
        self._retry: deque[Batch] = deque()
        self._retry_lock = threading.Lock()
        self._http = httpx.Client(timeout=10.0)
        self._n = 0
        self._n_lock = threading.Lock()
        self._canary_rng = random.Random(seed + 1)  # canaries come from fault threads: their own draws

    # --- set-up ---------------------------------------------------------------------------
    def prepare(self, customers: int = 150) -> None:
        """Catalog and registered customers, dated two days back: no webhook and no poller
        pass reports them as new (the poller reads a window back from its first pass)."""
        store = self.store
        for p in ensure_catalog(store, self.seed):
            self.products.append((p.id, p.name, f"{p.price:.2f}"))
            self.categories.extend(p.category_ids)
        past = int(time.time()) - 2 * 86400
        for i in range(customers):
            email = f"regular-{self.seed}-{i}@chaos.example"
            c = store.create_customer(email, first_name=f"Regular{i}", last_name="Shopper", created_at=past,
                                      billing={"first_name": f"Regular{i}", "email": email, "country": "PL"})
            self.customers.append((c.id, email))

    # --- the loop -------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        started = time.monotonic()
        done: Counter[str] = Counter()
        storefront_per_s = self.rate * (1 - 3 * _SHARE["checkout"] - _SHARE["signup"] - _SHARE["profile"]
                                        - _SHARE["product"] - 3 * _SHARE["cart"])
        shares = {**{k: v * self.rate for k, v in _SHARE.items()}, "browse": storefront_per_s / _BROWSE_EVENTS}
        actions = {"checkout": self._checkout, "signup": self._signup, "profile": self._profile,
                   "product": self._product, "cart": self._cart, "browse": self._browse}
        while not stop.is_set():
            elapsed = time.monotonic() - started
            for kind, per_s in shares.items():
                for _ in range(int(per_s * elapsed) - done[kind]):
                    done[kind] += 1
                    actions[kind]()
            self._complete_due()
            stop.wait(0.02)

    def _next(self) -> int:
        with self._n_lock:
            self._n += 1
            return self._n

    def _items(self, rng: random.Random) -> list[dict[str, Any]]:
        picked = rng.sample(self.products, rng.choice((1, 1, 2, 3)))
        return [{"product_id": pid, "quantity": rng.choice((1, 1, 2))} for pid, _, _ in picked]

    def place_order(self, email: str, customer_id: int = 0, rng: random.Random | None = None) -> int:
        order = self.store.checkout(line_items=self._items(rng or self.rng), customer_id=customer_id,
                                    payment_method="cod",
                                    billing={"first_name": "Chaos", "last_name": "Shopper", "email": email,
                                             "country": "PL", "city": "Kraków"})
        self.ledger.order_placed(order.id)
        return order.id

    def _checkout(self) -> None:
        if self.rng.random() < 0.5:
            cid, email = self.rng.choice(self.customers)
        else:
            cid, email = 0, f"guest-{self.seed}-{self._next()}@chaos.example"
        oid = self.place_order(email, cid)
        self.counts.checkouts += 1
        if self.rng.random() < 0.8:
            heapq.heappush(self._completions, (time.monotonic() + self.rng.uniform(8, 20), oid, email))

    def canary(self) -> int:
        """An order placed now: its first note says the pipeline works end to end again."""
        self.counts.canaries += 1
        return self.place_order(f"canary-{self.seed}-{self._next()}@chaos.example", rng=self._canary_rng)

    def _complete_due(self) -> None:
        now = time.monotonic()
        while self._completions and self._completions[0][0] <= now:
            _, oid, email = heapq.heappop(self._completions)
            # Decided before the change: was the order durably seen `processing`?
            must = oid in self.store.acked_processing
            self.store.set_order_status(oid, "completed")
            self.counts.completions += 1
            self.ledger.expect(COUPON_MAIL, f"chaos:coupon:{oid}", must=must, email=email)

    def _signup(self) -> None:
        n = self._next()
        c = self.store.create_customer(f"new-{self.seed}-{n}@chaos.example", first_name=f"New{n}",
                                       last_name="Customer")
        self.counts.signups += 1
        self.ledger.expect(WELCOME, f"chaos:welcome:{c.id}", must=True)

    def _profile(self) -> None:
        cid, _ = self.rng.choice(self.customers)
        self.store.update_customer(cid, last_name=f"Shopper{self.rng.randrange(10**6)}")
        self.counts.profile_edits += 1

    def _product(self) -> None:
        pid, _, _ = self.rng.choice(self.products)
        self.store.update_product(pid, stock_quantity=self.rng.randrange(1, 500))
        self.counts.product_edits += 1

    # --- storefront -------------------------------------------------------------------------
    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, "id": uuid.UUID(int=self.rng.getrandbits(128)).hex, **fields}

    def _session(self) -> str:
        return f"chaos_{self.rng.getrandbits(64):016x}"

    def _ip(self) -> str:
        return f"10.{self.rng.randrange(256)}.{self.rng.randrange(256)}.{self.rng.randrange(1, 255)}"

    def _browse(self) -> None:
        events = []
        for _ in range(_BROWSE_EVENTS):
            roll = self.rng.random()
            if roll < 0.6:
                pid, _, _ = self.rng.choice(self.products)
                events.append(self._event("product_viewed", product_id=pid))
            elif roll < 0.8:
                events.append(self._event("category_viewed", category_id=self.rng.choice(self.categories)))
            else:
                events.append(self._event("search", query=self.rng.choice(("kawa", "herbata", "kubek", "młynek"))))
        self.counts.browse_batches += 1
        self._post(Batch({"session_id": self._session(), "events": events}, self._ip()))

    def _cart(self) -> None:
        session, n = self._session(), self._next()
        email = f"cart-{self.seed}-{n}@chaos.example"
        pid, name, price = self.rng.choice(self.products)
        events = [self._event("product_viewed", product_id=pid),
                  self._event("cart_updated", cart=[{"product_id": pid, "quantity": 1, "price": price, "name": name}],
                              currency=self.store.currency),
                  self._event("email_captured", email=email, properties={"first_name": f"Cart{n}"})]
        self.counts.carts += 1
        self._post(Batch({"session_id": session, "events": events}, self._ip(), cart=(session, email)))

    def _post(self, batch: Batch) -> bool:
        batch.tries += 1
        try:
            r = self._http.post(self.url, json=batch.body, headers={
                "Origin": self.store.url, "X-Wooflow-Key": self.public_key, "X-Forwarded-For": batch.ip})
            ok = 200 <= r.status_code < 300
        except httpx.HTTPError:
            ok = False
        if ok:
            self.counts.storefront_events += len(batch.body["events"])
            if batch.cart is not None:
                self.ledger.expect(CART, f"chaos:cart:{batch.cart[0]}", must=True)
            return True
        self.counts.storefront_refused += 1
        batch.next_try = time.monotonic() + min(5.0, 0.5 * batch.tries)
        with self._retry_lock:
            self._retry.append(batch)
        return False

    def retry_refused(self) -> int:
        """Send the refused batches that are due again; returns how many still wait."""
        now = time.monotonic()
        with self._retry_lock:
            due = [b for b in self._retry if b.next_try <= now]
            self._retry = deque(b for b in self._retry if b.next_try > now)
        for b in due:
            self._post(b)
        with self._retry_lock:
            return len(self._retry)

    def give_up(self) -> int:
        """At the end: carts never accepted are no must (their events may never have counted)."""
        with self._retry_lock:
            left, self._retry = list(self._retry), deque()
        for b in left:
            if b.cart is not None:
                self.ledger.expect(CART, f"chaos:cart:{b.cart[0]}", must=False)
        return len(left)

    def close(self) -> None:
        self._http.close()
