"""Webhook topics and the WordPress hooks behind them.

A webhook does not listen to a topic, it listens to the *hooks* the topic maps
to (WC_Webhook::get_default_topic_hooks).  Which hooks a store change fires is
what decides which webhooks deliver – e.g. force-deleting an order fires
``woocommerce_delete_order``, which no topic listens to, so ``order.deleted``
is only delivered when an order goes to the trash.
"""

from __future__ import annotations

# Copied from WC_Webhook::get_default_topic_hooks() (WooCommerce 9.x).
TOPIC_HOOKS: dict[str, tuple[str, ...]] = {
    "coupon.created": ("woocommerce_process_shop_coupon_meta", "woocommerce_new_coupon"),
    "coupon.updated": ("woocommerce_process_shop_coupon_meta", "woocommerce_update_coupon"),
    "coupon.deleted": ("wp_trash_post",),
    "coupon.restored": ("untrashed_post",),
    "customer.created": ("user_register", "woocommerce_created_customer", "woocommerce_new_customer"),
    "customer.updated": ("profile_update", "woocommerce_update_customer"),
    "customer.deleted": ("delete_user",),
    "order.created": ("woocommerce_new_order",),
    "order.updated": ("woocommerce_update_order", "woocommerce_order_refunded", "woocommerce_delete_order_refund"),
    "order.deleted": ("wp_trash_post", "woocommerce_trash_order"),
    "order.restored": ("untrashed_post", "woocommerce_untrash_order"),
    "product.created": ("woocommerce_process_product_meta", "woocommerce_new_product",
                        "woocommerce_new_product_variation"),
    "product.updated": ("woocommerce_process_product_meta", "woocommerce_update_product",
                        "woocommerce_update_product_variation"),
    "product.deleted": ("wp_trash_post",),
    "product.restored": ("untrashed_post",),
    # WooCommerce Subscriptions (WCS_Webhooks::add_topics), with the plugin active
    "subscription.created": ("wcs_api_subscription_created", "wcs_webhook_subscription_created",
                             "woocommerce_process_shop_subscription_meta"),
    "subscription.updated": ("wcs_webhook_subscription_updated", "woocommerce_update_subscription"),
    "subscription.deleted": ("woocommerce_subscription_trashed", "woocommerce_subscription_deleted",
                             "woocommerce_api_delete_subscription"),
    "subscription.switched": ("wcs_webhook_subscription_switched",),
}
# WooCommerce Subscriptions also delivers renewal orders on order.created (wcs_new_order_created).
TOPIC_HOOKS["order.created"] = (*TOPIC_HOOKS["order.created"], "wcs_webhook_order_created")

# ... and adds its resource and the `switched` event (woocommerce_valid_webhook_resources/_events)
VALID_RESOURCES = ("coupon", "customer", "order", "product", "subscription")
VALID_EVENTS = ("created", "updated", "deleted", "restored", "switched")

# wc_is_webhook_valid_topic() refuses these even though they look like actions.
_INVALID_ACTION_TOPICS = frozenset({
    "action.woocommerce_login_credentials",
    "action.woocommerce_product_csv_importer_check_import_file_path",
    "action.woocommerce_webhook_should_deliver",
})

# Post-level hooks fire for every post type; WooCommerce checks the post type
# of the argument against the webhook's resource (is_valid_post_action).
POST_HOOKS = frozenset({"wp_trash_post", "untrashed_post", "delete_post"})


def is_valid_topic(topic: str) -> bool:
    """Port of wc_is_webhook_valid_topic()."""
    if topic in _INVALID_ACTION_TOPICS:
        return False
    if topic.startswith("action.woocommerce_") or topic.startswith("action.wc_"):
        return True
    parts = topic.split(".")
    if len(parts) < 2:
        return False
    return parts[0] in VALID_RESOURCES and parts[1] in VALID_EVENTS


def hooks_for_topic(topic: str) -> tuple[str, ...]:
    """Port of WC_Webhook::get_hooks(): an action topic listens to its own hook."""
    resource, _, event = topic.partition(".")
    if resource == "action":
        return (event,)
    return TOPIC_HOOKS.get(topic, ())
