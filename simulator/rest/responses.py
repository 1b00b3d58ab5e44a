"""Answers as WordPress sends them: PHP `json_encode` bodies, WP_Error rendering."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from ..errors import RestError
from ..phpjson import php_json_encode


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(php_json_encode(data), status_code=status, headers=headers,
                    media_type="application/json; charset=UTF-8")


def error_response(error: RestError) -> Response:
    headers = None
    if error.status == 401:
        # WC_REST_Authentication::send_unauthorized_headers()
        headers = {"WWW-Authenticate": 'Basic realm="WooCommerce API. Use a consumer key in the username field '
                                       'and a consumer secret in the password field."'}
    return json_response(error.body(), error.status, headers)
