"""WooCommerce webhook signatures: base64(HMAC-SHA256(raw body bytes, secret)).

WooCommerce signs with `wp_specialchars_decode($secret, ENT_QUOTES)`: a secret typed into
wp-admin as `a&amp;b` is keyed as `a&b`. That decode is narrower than `html.unescape`
(only &amp; &lt; &gt; &quot; and the quote/ampersand numeric forms), so it is ported
literally; a stored secret is tried as-is and, if it differs, decoded.
"""

from __future__ import annotations

import base64
import hmac
import re
from functools import lru_cache

_ENTITY_PADDING = [
    (re.compile(r"&#0*39;"), "&#039;"), (re.compile(r"&#x0*27;", re.I), "&#x27;"),
    (re.compile(r"&#0*34;"), "&#034;"), (re.compile(r"&#x0*22;", re.I), "&#x22;"),
    (re.compile(r"&#0*60;"), "&#060;"), (re.compile(r"&#0*62;"), "&#062;"),
    (re.compile(r"&#0*38;"), "&#038;"), (re.compile(r"&#x0*26;", re.I), "&#x26;"),
]
_ENTITIES = {
    "&#039;": "'", "&#x27;": "'", "&quot;": '"', "&#034;": '"', "&#x22;": '"',
    "&lt;": "<", "&#060;": "<", "&gt;": ">", "&#062;": ">", "&amp;": "&", "&#038;": "&", "&#x26;": "&",
}
_ENTITY_RE = re.compile("|".join(re.escape(k) for k in sorted(_ENTITIES, key=len, reverse=True)))


@lru_cache(maxsize=1024)  # per store secret: the regex passes cost more than the HMAC
def wp_specialchars_decode(text: str) -> str:
    """WordPress' wp_specialchars_decode($text, ENT_QUOTES), one pass like PHP's strtr()."""
    if "&" not in text:
        return text
    for pattern, replacement in _ENTITY_PADDING:
        text = pattern.sub(replacement, text)
    return _ENTITY_RE.sub(lambda m: _ENTITIES[m.group(0)], text)


def sign(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.digest(secret.encode(), body, "sha256")).decode()


def verify(body: bytes, secret: str, signature: str | None) -> bool:
    """Constant-time check over the raw bytes, before anything parses them."""
    if not signature:
        return False
    given = signature.strip().encode()
    ok = hmac.compare_digest(sign(body, secret).encode(), given)
    decoded = wp_specialchars_decode(secret)
    if decoded != secret:
        ok |= hmac.compare_digest(sign(body, decoded).encode(), given)
    return ok
