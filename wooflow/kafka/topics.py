"""The topics between the roles, and how each is created.

producers/ ──► woo.orders · woo.customers · woo.products · woo.storefront · woo.coupons
             · woo.subscriptions ──► consumer/
consumer/ (and the scheduler) ──► automation.commands ──► workers/
workers/ ──► automation.logs ──► sink/
any role ──► automation.dlq (messages that cannot be processed, with the reason)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wooflow.settings import Settings

ORDERS = "woo.orders"
CUSTOMERS = "woo.customers"
PRODUCTS = "woo.products"
STOREFRONT = "woo.storefront"
COUPONS = "woo.coupons"  # bridge: coupon.* webhooks (CouponEvent), keyed per coupon
# bridge: WooCommerce Subscriptions' subscription.* webhooks (SubscriptionEvent), keyed per customer
SUBSCRIPTIONS = "woo.subscriptions"
COMMANDS = "automation.commands"
LOGS = "automation.logs"
DLQ = "automation.dlq"

EVENT_TOPICS = (ORDERS, CUSTOMERS, PRODUCTS, STOREFRONT, COUPONS, SUBSCRIPTIONS)

# Which Avro schema each topic carries.
SCHEMA_OF_TOPIC = {
    ORDERS: "OrderEvent",
    CUSTOMERS: "CustomerEvent",
    PRODUCTS: "ProductEvent",
    STOREFRONT: "StorefrontEvent",
    COUPONS: "CouponEvent",
    SUBSCRIPTIONS: "SubscriptionEvent",
    COMMANDS: "ActionCommand",
    LOGS: "ExecutionLog",
    DLQ: "DeadLetter",
}


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication: int
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(s: Settings) -> list[TopicSpec]:
    def spec(base: str, retention_ms: int, *, partitions: int | None = None, cleanup: str = "delete") -> TopicSpec:
        config = {"retention.ms": str(retention_ms), "cleanup.policy": cleanup}
        if s.topic_replication > 1:
            config["min.insync.replicas"] = str(min(2, s.topic_replication))
        return TopicSpec(s.topic(base), partitions or s.topic_partitions, s.topic_replication, config)

    return [
        spec(ORDERS, s.topic_retention_ms),
        spec(CUSTOMERS, s.topic_retention_ms),
        # Products are keyed per product: compaction keeps the latest state for replays.
        spec(PRODUCTS, s.topic_retention_ms, cleanup="compact,delete"),
        spec(STOREFRONT, s.topic_retention_ms),
        # Coupons, like products, are keyed per coupon: compaction keeps the latest state.
        spec(COUPONS, s.topic_retention_ms, cleanup="compact,delete"),
        # Subscriptions are keyed per customer, like orders: one customer's changes in order.
        spec(SUBSCRIPTIONS, s.topic_retention_ms),
        spec(COMMANDS, s.topic_retention_ms),
        spec(LOGS, s.logs_retention_ms),
        spec(DLQ, s.dlq_retention_ms, partitions=min(3, s.topic_partitions)),
    ]
