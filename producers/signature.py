"""WooCommerce webhook signatures: base64(HMAC-SHA256(raw body bytes, secret))."""

from __future__ import annotations

import base64
import hashlib
import hmac
import html


def sign(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def verify(body: bytes, secret: str, signature: str | None) -> bool:
    """Constant-time check over the raw bytes, before anything parses them.

    WooCommerce decodes HTML entities in a secret typed into wp-admin before signing,
    so a secret stored with `&amp;` is also tried decoded.
    """
    if not signature:
        return False
    given = signature.strip().encode()
    ok = hmac.compare_digest(sign(body, secret).encode(), given)
    decoded = html.unescape(secret)
    if decoded != secret:
        ok |= hmac.compare_digest(sign(body, decoded).encode(), given)
    return ok
