"""WordPress REST errors (WP_Error) as raised by the simulated store."""

from __future__ import annotations

from wooflow.jsontypes import JSONObject


class RestError(Exception):
    """A WP_Error that the REST layer turns into ``{"code","message","data"}``.

    The store raises these from its mutations too, so that a direct Python
    caller gets the very error WooCommerce's REST API would have answered.
    """

    def __init__(self, code: str, message: str, status: int, extra: JSONObject | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.extra = extra or {}

    def body(self) -> JSONObject:
        data: JSONObject = {"status": self.status}
        data.update(self.extra)
        return {"code": self.code, "message": self.message, "data": data}


# The 404 each resource answers for an unknown id (code, message).
NOT_FOUND = {
    "order": ("woocommerce_rest_shop_order_invalid_id", "Invalid ID."),
    "subscription": ("woocommerce_rest_shop_subscription_invalid_id", "Invalid ID."),
    "product": ("woocommerce_rest_product_invalid_id", "Invalid ID."),
    "coupon": ("woocommerce_rest_shop_coupon_invalid_id", "Invalid ID."),
    "customer": ("woocommerce_rest_invalid_id", "Invalid resource ID."),
    "webhook": ("woocommerce_rest_shop_webhook_invalid_id", "Invalid ID."),
    "order_note": ("woocommerce_rest_invalid_id", "Invalid resource ID."),
    "order_refund": ("woocommerce_rest_invalid_id", "Invalid resource ID."),
    "product_cat": ("woocommerce_rest_term_invalid", "Resource does not exist."),
}


def not_found(resource: str) -> RestError:
    code, message = NOT_FOUND[resource]
    return RestError(code, message, 404)
