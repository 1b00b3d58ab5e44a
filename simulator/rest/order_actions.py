"""Order actions REST (WooCommerce ≥ 9.8) and WordPress users' roles, as the simulator serves them.

- ``GET  /wc/v3/orders/{id}/actions/email_templates`` — templates available for the order;
- ``POST /wc/v3/orders/{id}/actions/send_order_details`` — WC()->mailer()->customer_invoice();
- ``POST /wc/v3/orders/{id}/actions/send_email`` (``template_id`` optional: best template by
  status) — the status email; both add the order note WooCommerce adds
  ("Order details sent to x." / 'Email template "T" sent to x.', added by the API user) and
  answer ``{"message": ...}``. Sent emails are recorded in ``store.sent_emails``.
- ``GET|POST /wp/v2/users/{id}`` — WordPress core users endpoint: ``roles`` is writable there
  (WooCommerce's customers endpoint keeps ``role`` read-only). It authenticates with an
  application password (``store.app_password`` for the admin user), not a consumer key.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from wooflow.jsontypes import JSONObject

from ..errors import RestError
from .api import API, Api, basic_credentials
from .responses import json_response

# OrderActionsRestController::STATUS_TEMPLATE_MAP + the customer invoice.
TEMPLATES = {
    "customer_invoice": ("Order details", "Order details sent to the customer"),
    "customer_completed_order": ("Completed order", "Order complete emails are sent to customers when their orders "
                                                    "are marked completed"),
    "customer_failed_order": ("Failed order", "Order failed emails are sent to customers when their orders are "
                                              "marked as failed"),
    "customer_on_hold_order": ("Order on-hold", "An email sent to the customer when an order is put on hold"),
    "customer_processing_order": ("Processing order", "An email sent to the customer when an order is paid for"),
    "customer_refunded_order": ("Refunded order", "Order refunded emails are sent to customers when their orders "
                                                  "are refunded"),
}
STATUS_TEMPLATE = {"completed": "customer_completed_order", "failed": "customer_failed_order",
                   "on-hold": "customer_on_hold_order", "processing": "customer_processing_order",
                   "refunded": "customer_refunded_order"}
WP_ROLES = {"administrator", "editor", "author", "contributor", "subscriber", "customer", "shop_manager"}


def _available(order: Any) -> list[str]:
    if not order.billing.get("email") or order.status in ("auto-draft", "draft", "checkout-draft", "trash"):
        return []
    out = ["customer_invoice"]
    if order.status in STATUS_TEMPLATE:
        out.append(STATUS_TEMPLATE[order.status])
    return sorted(out)


def routes(api: Api) -> list[Route]:
    store: Any = api.store  # given the attributes below on first use
    if not hasattr(store, "sent_emails"):
        store.sent_emails = []  # (order_id, template_id, to)
    if not hasattr(store, "app_password"):
        store.app_password = " ".join(secrets.token_hex(2) for _ in range(6))  # WordPress shows 6 groups of 4
    if not hasattr(store, "roles"):
        store.roles = set(WP_ROLES)

    def order_of(request: Request) -> Any:
        order = store.orders.get(int(request.path_params["id"]))
        if order is None or order.status == "trash":
            raise RestError("woocommerce_rest_not_found", "Order not found", 404)
        return order

    def send(order: Any, template_id: str) -> str:
        to = order.billing.get("email", "")
        with store.request():
            store.sent_emails.append((order.id, template_id, to))
            if template_id == "customer_invoice":
                text = f"Order details sent to {to}."
            else:
                text = f'Email template "{TEMPLATES[template_id][0]}" sent to {to}.'
            store._add_note(order, text, customer_note=False, added_by=store.admin.username)
        return text

    @api.endpoint("read")
    async def email_templates(request: Request, params: Any) -> Response:
        order = order_of(request)
        return json_response([{"id": t, "title": TEMPLATES[t][0], "description": TEMPLATES[t][1]}
                              for t in _available(order)])

    @api.endpoint("read")
    async def send_order_details(request: Request, params: Any) -> Response:
        order = order_of(request)
        if "@" not in order.billing.get("email", ""):
            raise RestError("woocommerce_rest_missing_email", "Order does not have an email address.", 400)
        return json_response({"message": send(order, "customer_invoice")})

    @api.endpoint("read")
    async def send_email(request: Request, params: Any) -> Response:
        order = order_of(request)
        if "@" not in order.billing.get("email", ""):
            raise RestError("woocommerce_rest_missing_email", "Order does not have an email address.", 400)
        available = _available(order)
        template_id = str(params.get("template_id") or "")
        if not template_id:
            preferred = [STATUS_TEMPLATE.get(order.status, ""), "customer_invoice"]
            template_id = next((t for t in preferred if t in available), "")
            if not template_id:
                raise RestError("woocommerce_rest_no_email_template", "No email template is available for this order.",
                                400)
        elif template_id not in available:
            raise RestError("woocommerce_rest_invalid_email_template",
                            f"{template_id} is not a valid template for this order.", 400)
        return json_response({"message": send(order, template_id)})

    def wp_auth(request: Request) -> None:
        user, password = basic_credentials(request)
        if not user:
            raise RestError("rest_forbidden", "Sorry, you are not allowed to do that.", 401)
        if user != store.admin.username or not hmac.compare_digest(password.replace(" ", ""),
                                                                   store.app_password.replace(" ", "")):
            raise RestError("incorrect_password", "The provided password is an invalid application password.", 401)

    def user_json(user: Any) -> JSONObject:
        return {"id": user.id, "username": user.username, "name": f"{user.first_name} {user.last_name}".strip(),
                "email": user.email, "roles": [user.role], "slug": user.username}

    async def wp_user(request: Request) -> Response:
        try:
            wp_auth(request)
            user = store.users.get(int(request.path_params["id"]))
            if user is None:
                raise RestError("rest_user_invalid_id", "Invalid user ID.", 404)
            if request.method == "POST":
                body = await request.json()
                roles = body.get("roles") if isinstance(body, dict) else None
                if roles is not None:
                    if not isinstance(roles, list) or not roles:
                        raise RestError("rest_invalid_param", "Invalid parameter(s): roles", 400)
                    for role in roles:
                        if role not in store.roles:
                            raise RestError("rest_user_invalid_role", f"The role {role} does not exist.", 400)
                    if user.id == store.admin.id:
                        raise RestError("rest_user_invalid_role", "Sorry, you are not allowed to give users that "
                                                                  "role.", 403)
                    store.update_customer(user.id, role=roles[0])  # profile_update → customer.updated
            return json_response(user_json(user))
        except RestError as error:
            return json_response(error.body(), error.status)

    return [
        Route(f"{API}/orders/{{id:int}}/actions/email_templates", email_templates, methods=["GET"]),
        Route(f"{API}/orders/{{id:int}}/actions/send_order_details", send_order_details, methods=["POST"]),
        Route(f"{API}/orders/{{id:int}}/actions/send_email", send_email, methods=["POST"]),
        Route("/wp-json/wp/v2/users/{id:int}", wp_user, methods=["GET", "POST", "PUT", "PATCH"]),
    ]
