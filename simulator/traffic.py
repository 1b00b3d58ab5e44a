"""Seeded, realistic shop traffic for the simulated store.

What it produces, and why it looks like this:

* a catalog (categories, products – some on sale – and coupons) if the store
  has none, so the generator works on a fresh store;
* a pool of shoppers from PL/DE/FR/GB/US/CZ/NL/IT/ES with local names,
  addresses and phone formats; shoppers are picked with a Zipf-like weight, so
  a few come back often (repeat customers) and most buy once;
* registered customers (some existing, some registering at first checkout –
  ``customer.created``) and guests (``customer_id`` 0, some repeating by email);
* 1–4 products per cart, so totals spread from ~10 to several hundred (many
  above 100);
* gateway-realistic flows: cash on delivery -> processing at checkout, bank
  transfer -> on-hold then processing, card -> paid at checkout, PayPal ->
  pending then paid (or cancelled when never paid); later completed, and a
  few cancelled, fully or partially refunded, with shipping notes;
* abandoned carts, kept as plain dicts in ``store.abandoned_carts`` for the
  storefront events to use later;
* optionally (``consent``), a marketing-consent checkbox at checkout: a share of the
  shoppers tick it, and their orders carry the meta key the store's plugin writes.
  Who ticks is decided apart from the main random stream, so runs without it are
  unchanged.

Changes to different orders interleave (an order is completed several
sessions after it was placed), as on a live shop.  With a
:class:`~wooflow.simulator.state.ManualClock` the generator advances the clock
between sessions, so dates spread realistically and runs are reproducible
byte for byte; ``rate_per_s`` paces orders in real time instead.
"""

from __future__ import annotations

import heapq
import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from .errors import RestError
from .models import Product
from .state import ManualClock, SimulatedStore

__all__ = ["ConsentBox", "TrafficReport", "ensure_catalog", "generate"]

# ------------------------------------------------------------------ data

_COUNTRY_WEIGHTS = {"PL": 40, "DE": 18, "GB": 9, "US": 10, "FR": 8, "CZ": 5, "NL": 4, "IT": 3, "ES": 3}

# One entry per country, the same keys in each (data, not repeated logic).
_PEOPLE: dict[str, dict[str, Any]] = {
    "PL": {
        "first": ["Anna", "Katarzyna", "Małgorzata", "Agnieszka", "Piotr", "Krzysztof", "Łukasz", "Paweł",
                  "Zofia", "Michał", "Jędrzej", "Grażyna"],
        "last": ["Nowak", "Kowalska", "Wiśniewski", "Wójcik", "Kamińska", "Lewandowski", "Zieliński",
                 "Szymańska", "Woźniak", "Dąbrowski"],
        "cities": [("Warszawa", "00-{:03d}"), ("Kraków", "30-{:03d}"), ("Łódź", "90-{:03d}"),
                   ("Wrocław", "50-{:03d}"), ("Gdańsk", "80-{:03d}"), ("Poznań", "60-{:03d}")],
        "streets": ["ul. Marszałkowska", "ul. Długa", "ul. Piotrkowska", "al. Jerozolimskie", "ul. Świętojańska"],
        "phone": "+48 {:03d} {:03d} {:03d}", "domains": ["gmail.com", "wp.pl", "onet.pl", "o2.pl", "interia.pl"],
        "note": ["Proszę o fakturę VAT.", "Proszę dzwonić przed dostawą.", "Paczkomat obok sklepu Żabka."],
    },
    "DE": {
        "first": ["Lukas", "Jürgen", "Sophie", "Maximilian", "Hannah", "Jörg", "Lena"],
        "last": ["Müller", "Schmidt", "Schneider", "Fischer", "Weiß", "Größer", "Becker"],
        "cities": [("Berlin", "10{:03d}"), ("München", "80{:03d}"), ("Köln", "50{:03d}"), ("Hamburg", "20{:03d}")],
        "streets": ["Hauptstraße", "Schloßallee", "Bahnhofstraße", "Gartenweg"],
        "phone": "+49 {:03d} {:04d}{:03d}", "domains": ["gmx.de", "web.de", "t-online.de", "gmail.com"],
        "note": ["Bitte beim Nachbarn abgeben.", "Bitte klingeln."],
    },
    "GB": {
        "first": ["Oliver", "Amelia", "Harry", "Isla", "George", "Siobhán"],
        "last": ["Smith", "Jones", "Taylor", "Brown", "O'Connor", "Evans"],
        "cities": [("London", "SW1A {:d}AA"), ("Manchester", "M{:d} 1AE"), ("Bristol", "BS{:d} 4DJ")],
        "streets": ["High Street", "Station Road", "Church Lane"],
        "phone": "+44 7{:03d} {:03d}{:03d}", "domains": ["gmail.com", "outlook.com", "btinternet.com"],
        "note": ["Leave with the porter, please.", "Gift – please don't include the receipt."],
    },
    "US": {
        "first": ["James", "Emma", "Michael", "Olivia", "José", "Ava"],
        "last": ["Johnson", "Williams", "García", "Miller", "Davis", "Martinez"],
        "cities": [("New York", "100{:02d}"), ("Los Angeles", "900{:02d}"), ("Austin", "787{:02d}"),
                   ("Chicago", "606{:02d}")],
        "states": {"New York": "NY", "Los Angeles": "CA", "Austin": "TX", "Chicago": "IL"},
        "streets": ["Main St", "Oak Ave", "5th Ave", "Sunset Blvd"],
        "phone": "+1 ({:03d}) {:03d}-{:04d}", "domains": ["gmail.com", "yahoo.com", "icloud.com"],
        "note": ["Please ship ASAP, it's a birthday gift!"],
    },
    "FR": {
        "first": ["Léa", "Hugo", "Chloé", "Jérôme", "Inès", "François"],
        "last": ["Martin", "Bernard", "Lefèvre", "Dubois", "Moreau", "Girard"],
        "cities": [("Paris", "750{:02d}"), ("Lyon", "690{:02d}"), ("Marseille", "130{:02d}")],
        "streets": ["rue de la Paix", "avenue des Champs-Élysées", "rue Saint-Honoré"],
        "phone": "+33 6 {:02d} {:02d} {:02d} {:02d}", "domains": ["orange.fr", "free.fr", "gmail.com"],
        "note": ["Merci de livrer après 18h."],
    },
    "CZ": {
        "first": ["Jiří", "Tereza", "Petr", "Kateřina"], "last": ["Novák", "Svobodová", "Dvořák", "Černá"],
        "cities": [("Praha", "110 {:02d}"), ("Brno", "602 {:02d}")], "streets": ["Václavské náměstí", "Národní"],
        "phone": "+420 {:03d} {:03d} {:03d}", "domains": ["seznam.cz", "email.cz"], "note": [],
    },
    "NL": {
        "first": ["Daan", "Sanne", "Bram", "Eva"], "last": ["de Jong", "Jansen", "van Dijk", "Bakker"],
        "cities": [("Amsterdam", "10{:02d} AB"), ("Utrecht", "35{:02d} CD")], "streets": ["Keizersgracht", "Damrak"],
        "phone": "+31 6 {:04d} {:04d}", "domains": ["ziggo.nl", "gmail.com"], "note": [],
    },
    "IT": {
        "first": ["Giulia", "Luca", "Niccolò"], "last": ["Rossi", "Bianchi", "Esposito"],
        "cities": [("Roma", "001{:02d}"), ("Milano", "201{:02d}")], "streets": ["Via del Corso", "Via Roma"],
        "phone": "+39 3{:02d} {:03d} {:04d}", "domains": ["libero.it", "gmail.com"], "note": [],
    },
    "ES": {
        "first": ["Lucía", "Alejandro", "Martín"], "last": ["García", "Fernández", "Muñoz"],
        "cities": [("Madrid", "280{:02d}"), ("Barcelona", "080{:02d}")], "streets": ["Calle Mayor", "Gran Vía"],
        "phone": "+34 6{:02d} {:03d} {:03d}", "domains": ["gmail.com", "hotmail.es"], "note": [],
    },
}

_CATALOG: list[tuple[str, list[tuple[str, str, str | None]]]] = [
    ("Kawa", [("Kawa ziarnista Etiopia Yirgacheffe 250 g", "49.99", None),
              ("Kawa ziarnista Brazylia Santos 1 kg", "119.00", "99.00"),
              ("Espresso Blend „Kraków” 500 g", "74.50", None),
              ("Kawa mielona Kolumbia Supremo 250 g", "39.90", None),
              ("Zestaw degustacyjny 4×100 g", "89.00", None)]),
    ("Herbata", [("Herbata zielona Sencha 100 g", "29.99", None),
                 ("Matcha ceremonialna 30 g", "79.00", "69.00"),
                 ("Herbata czarna Assam 200 g", "24.50", None),
                 ("Rooibos z wanilią 100 g", "19.99", None)]),
    ("Akcesoria", [("Młynek ręczny stal nierdzewna", "249.00", None),
                   ("Drip V60 ceramiczny", "119.00", None),
                   ("Waga baristyczna z timerem", "189.00", "159.00"),
                   ("Czajnik z gęsią szyjką 1 l", "329.00", None),
                   ("Filtry papierowe 100 szt.", "12.99", None),
                   ("Ekspres kolbowy Domowy Barista", "1499.00", "1299.00")]),
    ("Ceramika", [("Kubek – Bolesławiec, 350 ml", "59.00", None),
                  ("Filiżanka espresso z podstawką", "34.99", None),
                  ("Dzbanek do herbaty 1,2 l", "149.00", None)]),
    ("Słodycze", [("Pierniki toruńskie 200 g", "18.50", None),
                  ("Czekolada gorzka 85% 100 g", "14.99", None),
                  ("Krówki ciągutki 250 g", "11.90", None)]),
]

_COUPONS = [("WITAJ10", "10", "percent"), ("LATO20", "20", "fixed_cart"), ("KAWA5", "5", "fixed_product")]

_USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
]

# (gateway id, title, weight); cash on delivery is offered in Poland only.
_GATEWAYS = [("stripe", "Credit Card (Stripe)", 45), ("paypal", "PayPal", 20),
             ("bacs", "Direct bank transfer", 15), ("cod", "Cash on delivery", 20)]


# --------------------------------------------------------------- shoppers


@dataclass
class Shopper:
    key: int
    country: str
    first_name: str
    last_name: str
    email: str
    billing: dict[str, str]
    registered: bool  # has or will create an account
    customer_id: int = 0
    orders: int = 0


@dataclass(frozen=True)
class ConsentBox:
    """A checkout checkbox: ticked by `share` of the shoppers, written as `meta_key` = `value`."""

    meta_key: str = "_wooflow_marketing_consent"
    value: str = "yes"
    share: float = 0.5

    def ticked(self, seed: int, shopper: Shopper) -> bool:
        return random.Random(f"{seed}:consent:{shopper.key}").random() < self.share


@dataclass
class TrafficReport:
    """What a :func:`generate` run did (ids refer to the store)."""

    orders: list[int] = field(default_factory=list)
    customers_created: list[int] = field(default_factory=list)
    guest_orders: int = 0
    repeat_orders: int = 0
    abandoned_carts: int = 0
    refunds: int = 0
    consented_orders: int = 0
    countries: Counter[str] = field(default_factory=Counter)
    final_statuses: Counter[str] = field(default_factory=Counter)
    totals: list[Decimal] = field(default_factory=list)


def _ascii(text: str) -> str:
    import unicodedata

    text = text.lower().replace("ł", "l").replace("ß", "ss").replace("'", "").replace(" ", "")
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def _make_shopper(rng: random.Random, key: int) -> Shopper:
    countries, weights = zip(*_COUNTRY_WEIGHTS.items(), strict=True)
    country = rng.choices(countries, weights)[0]
    data = _PEOPLE[country]
    first, last = rng.choice(data["first"]), rng.choice(data["last"])
    city, postcode_fmt = rng.choice(data["cities"])
    email = f"{_ascii(first)}.{_ascii(last)}{rng.randint(1, 999)}@{rng.choice(data['domains'])}"
    phone_fmt: str = data["phone"]
    phone = phone_fmt.format(*(rng.randint(10, 99) for _ in range(phone_fmt.count("{"))))
    billing = {
        "first_name": first, "last_name": last, "company": rng.choice(["", "", "", "Studio Kawy sp. z o.o."])
        if country == "PL" else "",
        "address_1": f"{rng.choice(data['streets'])} {rng.randint(1, 180)}",
        "address_2": rng.choice(["", "", f"m. {rng.randint(1, 60)}"]),
        "city": city, "state": data.get("states", {}).get(city, ""),
        "postcode": postcode_fmt.format(rng.randint(1, 9)), "country": country, "email": email, "phone": phone,
    }
    return Shopper(key, country, first, last, email, billing, registered=rng.random() < 0.6)


def ensure_catalog(store: SimulatedStore, seed: int = 42) -> list[Product]:
    """Create categories, products and coupons unless the store has products."""
    with store.lock:
        existing = [p for p in store.products.values() if p.status == "publish"]
    if existing:
        return existing
    rng = random.Random(seed)
    products = []
    for category, items in _CATALOG:
        for name, price, sale in items:
            sku = f"{_ascii(category)[:3].upper()}-{rng.randint(1000, 9999)}"
            products.append(store.create_product(name, price, sale_price=sale, sku=sku, categories=[category],
                                                 tags=rng.sample(["bestseller", "nowość", "eko", "prezent"], 1)))
    for code, amount, kind in _COUPONS:
        if store.coupon_by_code(code) is None:
            store.create_coupon(code, amount, kind, description=f"Kupon {code}")
    return products


# --------------------------------------------------------------- generator


class _Generator:
    def __init__(self, store: SimulatedStore, seed: int, abandon_rate: float,
                 consent: ConsentBox | None = None) -> None:
        self.store = store
        self.seed = seed
        self.consent = consent
        self.rng = random.Random(seed)
        self.abandon_rate = abandon_rate
        self.report = TrafficReport()
        self.products = ensure_catalog(store, seed)
        self.shoppers: list[Shopper] = []
        self.tick = 0
        # (tick, seq, action) – later steps of orders already placed.
        self.pending: list[tuple[int, int, Callable[[], object]]] = []
        self._seq = 0
        self._grow_pool(24)

    # -- shoppers

    def _grow_pool(self, count: int) -> None:
        for _ in range(count):
            shopper = _make_shopper(self.rng, len(self.shoppers))
            self.shoppers.append(shopper)
            # About half of the registered shoppers already had an account.
            if shopper.registered and self.rng.random() < 0.5:
                self._register(shopper)

    def _register(self, shopper: Shopper) -> None:
        try:
            user = self.store.create_customer(
                shopper.email, first_name=shopper.first_name, last_name=shopper.last_name,
                billing=shopper.billing, shipping={k: v for k, v in shopper.billing.items() if k != "email"},
            )
        except RestError:
            return
        shopper.customer_id = user.id
        self.report.customers_created.append(user.id)

    def _pick_shopper(self) -> Shopper:
        # New faces keep arriving; returning ones are Zipf-weighted.
        if self.rng.random() < 0.35:
            self._grow_pool(1)
            return self.shoppers[-1]
        weights = [1.0 / (rank + 1) ** 0.9 for rank in range(len(self.shoppers))]
        return self.rng.choices(self.shoppers, weights)[0]

    # -- scheduling

    def _later(self, ticks: int, action: Callable[[], object]) -> None:
        self._seq += 1
        heapq.heappush(self.pending, (self.tick + max(1, ticks), self._seq, action))

    def _run_due(self) -> None:
        while self.pending and self.pending[0][0] <= self.tick:
            _, _, action = heapq.heappop(self.pending)
            try:
                action()
            except RestError:
                pass  # e.g. the order was changed meanwhile; a real shop shrugs too

    def _advance_clock(self) -> None:
        clock = self.store.clock
        if isinstance(clock, ManualClock):
            clock.advance(max(1, int(self.rng.expovariate(1 / 120.0))))

    # -- sessions

    def _cart(self) -> list[dict[str, Any]]:
        count = self.rng.choices([1, 2, 3, 4], [45, 30, 17, 8])[0]
        picked = self.rng.sample(self.products, min(count, len(self.products)))
        return [{"product_id": p.id, "quantity": self.rng.choices([1, 2, 3], [75, 18, 7])[0]} for p in picked]

    def session(self) -> int | None:
        """One storefront visit that reaches a cart; returns the order id if it converts."""
        self.tick += 1
        self._advance_clock()
        self._run_due()
        shopper = self._pick_shopper()
        cart = self._cart()
        if self.rng.random() < self.abandon_rate:
            self._abandon(shopper, cart)
            return None
        return self._checkout(shopper, cart)

    def _abandon(self, shopper: Shopper, cart: list[dict[str, Any]]) -> None:
        store = self.store
        items = []
        subtotal = Decimal("0")
        for line in cart:
            product = store.products[line["product_id"]]
            line_total = product.price * line["quantity"]
            subtotal += line_total
            items.append({"product_id": product.id, "name": product.name, "sku": product.sku,
                          "quantity": line["quantity"], "price": f"{product.price:.2f}",
                          "line_total": f"{line_total:.2f}"})
        reached_checkout = self.rng.random() < 0.5
        known = shopper.customer_id != 0 or reached_checkout  # guests leave an email only at checkout
        now = int(store.clock())
        store.record_abandoned_cart({
            "cart_id": f"cart_{self.rng.getrandbits(64):016x}",
            "session_key": f"t_{self.rng.getrandbits(120):030x}",
            "customer_id": shopper.customer_id,
            "email": shopper.email if known else None,
            "first_name": shopper.first_name if known else None,
            "country": shopper.country,
            "currency": store.currency,
            "items": items,
            "subtotal": f"{subtotal:.2f}",
            "checkout_started": reached_checkout,
            "created_at": now,
            "created_at_gmt": datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
            "recovered": False,
        })
        self.report.abandoned_carts += 1

    def _shipping(self, shopper: Shopper, cart: list[dict[str, Any]]) -> dict[str, Any]:
        subtotal = sum((self.store.products[line["product_id"]].price * line["quantity"] for line in cart), Decimal(0))
        if shopper.country == "PL":
            if subtotal >= 200:
                return {"method_id": "free_shipping", "method_title": "Darmowa wysyłka", "instance_id": "3",
                        "total": "0.00"}
            if self.rng.random() < 0.6:
                return {"method_id": "flexible_shipping_single", "method_title": "Paczkomaty InPost",
                        "instance_id": "5", "total": "13.99"}
            return {"method_id": "flat_rate", "method_title": "Kurier DPD", "instance_id": "1", "total": "16.99"}
        if shopper.country in ("US", "GB"):
            return {"method_id": "flat_rate", "method_title": "International shipping", "instance_id": "7",
                    "total": "89.00"}
        return {"method_id": "flat_rate", "method_title": "EU shipping", "instance_id": "6", "total": "39.00"}

    def _checkout(self, shopper: Shopper, cart: list[dict[str, Any]]) -> int | None:
        store, rng = self.store, self.rng
        if shopper.registered and not shopper.customer_id:
            self._register(shopper)  # "Create an account?" ticked at checkout
        gateways = [g for g in _GATEWAYS if g[0] != "cod" or shopper.country == "PL"]
        method, title, _ = rng.choices(gateways, [g[2] for g in gateways])[0]
        notes = _PEOPLE[shopper.country]["note"]
        try:
            order = store.checkout(
                line_items=cart, billing=shopper.billing, customer_id=shopper.customer_id,
                shipping={k: v for k, v in shopper.billing.items() if k != "email"},
                payment_method=method, payment_method_title=title, shipping_lines=[self._shipping(shopper, cart)],
                coupon_codes=[rng.choice(_COUPONS)[0]] if rng.random() < 0.12 else [],
                customer_note=rng.choice(notes) if notes and rng.random() < 0.12 else "",
                customer_ip_address=f"{rng.choice([31, 46, 83, 89, 178, 212])}.{rng.randint(0, 255)}."
                                    f"{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                customer_user_agent=rng.choice(_USER_AGENTS), meta_data=self._consent_meta(shopper),
            )
        except RestError:
            return None
        if shopper.orders:
            self.report.repeat_orders += 1
        shopper.orders += 1
        if not shopper.customer_id:
            self.report.guest_orders += 1
        self.report.orders.append(order.id)
        self.report.countries[shopper.country] += 1
        self._plan(order.id, method)
        return order.id

    def _consent_meta(self, shopper: Shopper) -> list[dict[str, Any]] | None:
        if self.consent is None or not self.consent.ticked(self.seed, shopper):
            return None
        self.report.consented_orders += 1
        return [{"key": self.consent.meta_key, "value": self.consent.value}]

    # -- order lifecycles

    def _plan(self, order_id: int, method: str) -> None:
        rng, store = self.rng, self.store
        if method == "paypal":
            if rng.random() < 0.2:  # never paid: held stock released -> cancelled
                self._later(rng.randint(4, 9), lambda: store.set_order_status(
                    order_id, "cancelled", "Unpaid order cancelled - time limit reached."))
                return
            def paid() -> None:  # PayPal IPN arrives
                store.payment_complete(order_id, f"{rng.getrandbits(40):010X}")
                self._fulfil(order_id)

            self._later(rng.randint(1, 3), paid)
            return
        if method == "bacs":
            if rng.random() < 0.15:
                self._later(rng.randint(5, 12), lambda: store.set_order_status(order_id, "cancelled"))
                return
            def transfer_arrived() -> None:  # shop owner marks the bank transfer received
                store.set_order_status(order_id, "processing")
                self._fulfil(order_id)

            self._later(rng.randint(2, 6), transfer_arrived)
            return
        self._fulfil(order_id)

    def _fulfil(self, order_id: int) -> None:
        rng, store = self.rng, self.store
        roll = rng.random()
        if roll < 0.03:
            self._later(rng.randint(1, 3), lambda: store.set_order_status(
                order_id, "cancelled", "Customer asked to cancel."))
            return

        def complete() -> None:
            store.add_order_note(order_id, f"Przesyłka nadana, numer: {rng.randint(10**11, 10**12 - 1)}",
                                 customer_note=True, added_by_user=True)
            store.set_order_status(order_id, "completed")
            after = rng.random()
            if after < 0.05:
                self._later(rng.randint(2, 6), lambda: self._refund(order_id, full=True))
            elif after < 0.09:
                self._later(rng.randint(2, 6), lambda: self._refund(order_id, full=False))

        self._later(rng.randint(3, 10), complete)

    def _refund(self, order_id: int, full: bool) -> None:
        order = self.store.get_order(order_id)
        if order is None or order.total <= 0:
            return
        amount = None if full else (order.total * Decimal("0.3")).quantize(Decimal("0.01"))
        reason = "Zwrot – towar uszkodzony" if not full else "Odstąpienie od umowy"
        self.store.refund_order(order_id, amount, reason)
        self.report.refunds += 1

    def drain(self) -> None:
        """Play out every pending lifecycle step (end of a bounded run)."""
        while self.pending:
            self.tick = self.pending[0][0]
            self._advance_clock()
            self._run_due()


def generate(
    store: SimulatedStore,
    n_orders: int | None,
    rate_per_s: float | None = None,
    *,
    seed: int = 42,
    abandon_rate: float = 0.25,
    drain: bool = True,
    stop_event: threading.Event | None = None,
    consent: ConsentBox | None = None,
) -> TrafficReport:
    """Place ``n_orders`` orders (``None`` = until ``stop_event`` is set).

    ``rate_per_s`` paces orders in real time (exponential gaps, seeded); without
    it everything runs as fast as possible.  ``drain`` finishes the lifecycles
    of the placed orders before returning, so statuses reach their final
    values (completed, cancelled, refunded, ...).  ``consent`` adds a marketing-consent
    checkbox to the checkout.
    """
    generator = _Generator(store, seed, abandon_rate, consent)
    stop = stop_event or threading.Event()
    placed = 0
    while n_orders is None or placed < n_orders:
        if stop.is_set():
            break
        if generator.session() is not None:
            placed += 1
            if rate_per_s and stop.wait(generator.rng.expovariate(rate_per_s)):
                break
    if drain and not stop.is_set():
        generator.drain()
    report = generator.report
    with store.lock:
        for order_id in report.orders:
            order = store.orders.get(order_id)
            if order is not None:
                report.final_statuses[order.status] += 1
                report.totals.append(order.total)
    return report
