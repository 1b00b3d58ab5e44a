"""Open and click tracking of the messages wooflow sends: signed links and rewritten bodies.

A tracked email carries, for each http(s) link, `<public_base_url>/t/c/<token>?u=<URL>`, and
an open pixel `<public_base_url>/t/o/<token>.gif`. A token is
`base64url(payload).base64url(mac)`: the payload is the JSON array
`[store, message id, customer key, rule, step, issued, expires, link index, URL digest]`
(the message id is the command's idempotency key; times are epoch seconds of the workflow
clock) and the mac is HMAC-SHA256 over those bytes, truncated to 128 bits and compared in
constant time. The destination travels in clear next to the token, which holds its digest:
the tracker (wooflow/api/tracking.py) redirects only to a URL whose digest the worker
signed while rendering that very message — never an open redirect — and needs no
database read to decide.

The key: `WOOFLOW_TRACKING_SECRET` when set (one key for every store), else derived from
the store's own `link_key` (the key its unsubscribe links use, kept across webhook-secret
rotations). Neither is ever logged: tokens carry only their mac.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import html as html_lib
import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import quote

import orjson

from wooflow.settings import Settings

OPEN, CLICK = "open", "click"
PIXEL = -1  # the link index of the open pixel
PATH_OPEN, PATH_CLICK = "/t/o/", "/t/c/"
MAC_BYTES = 16
DIGEST_BYTES = 12
_CONTEXT = b"wooflow-tracking"


class BadToken(ValueError):
    """A token that is not one wooflow signed: `reason` is `malformed` (not a token at all)
    or `bad_signature` (tampered with, another key, a store that does not exist)."""

    def __init__(self, message: str, reason: str = "bad_signature") -> None:
        super().__init__(message)
        self.reason = reason


def _malformed() -> BadToken:
    return BadToken("malformed tracking token", "malformed")


class Expired(ValueError):
    """A genuine token past its expiry."""

    def __init__(self, claim: Claim) -> None:
        super().__init__("this link has expired")
        self.claim = claim


@dataclass(frozen=True, slots=True)
class Message:
    """Who a tracked message went to, and from which rule and step."""

    store_id: str
    message_id: str
    customer_key: str
    rule_id: int
    step: int
    issued: int  # epoch seconds
    expires: int


@dataclass(frozen=True, slots=True)
class Claim:
    """What a verified token says: the message, and which of its links (PIXEL for opens)."""

    message: Message
    link: int
    digest: str  # of the link's URL; "" for the pixel

    @property
    def kind(self) -> str:
        return OPEN if self.link == PIXEL else CLICK


def b64(data: bytes) -> str:
    """URL-safe base64 without padding (the signed links' encoding, unsubscribe links too)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signing_key(settings: Settings, link_key: str) -> bytes:
    """The tracking key: from `WOOFLOW_TRACKING_SECRET`, else from the store's `link_key`."""
    if settings.tracking_secret is not None:
        base = settings.tracking_secret.get_secret_value().encode()
    elif link_key:
        base = bytes.fromhex(link_key)
    else:  # a Store built in memory: its key exists only in its row
        raise ValueError("no tracking key: set WOOFLOW_TRACKING_SECRET or read the store from the database")
    return hmac.new(base, _CONTEXT, hashlib.sha256).digest()


def url_digest(url: str) -> str:
    return b64(hashlib.sha256(url.encode()).digest()[:DIGEST_BYTES])


def sign(key: bytes, m: Message, link: int = PIXEL, url: str = "") -> str:
    payload = orjson.dumps([m.store_id, m.message_id, m.customer_key, m.rule_id, m.step, m.issued, m.expires,
                            link, url_digest(url) if link != PIXEL else ""])
    return f"{b64(payload)}.{b64(hmac.new(key, payload, hashlib.sha256).digest()[:MAC_BYTES])}"


@dataclass(frozen=True, slots=True)
class Parsed:
    """A token taken apart, not verified yet."""

    payload: bytes
    mac: bytes
    fields: list[object]

    @property
    def store_id(self) -> str:
        """The store it names (unverified: only to find the key it must be checked with)."""
        store = self.fields[0]
        if not isinstance(store, str):
            raise _malformed()
        return store


def parse(token: str) -> Parsed:
    try:
        body, mac = token.split(".", 1)
        payload, given = unb64(body), unb64(mac)
        fields = orjson.loads(payload)
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise _malformed() from exc
    if not isinstance(fields, list) or len(fields) != 9:
        raise _malformed()
    return Parsed(payload, given, fields)


def check(key: bytes, token: Parsed, now: float) -> Claim:
    """The token's claim; BadToken if wooflow did not sign it, Expired if it is past `expires`."""
    if not hmac.compare_digest(token.mac, hmac.new(key, token.payload, hashlib.sha256).digest()[:MAC_BYTES]):
        raise BadToken("tracking token signature does not match")
    s, m, k, r, p, t, x, link, digest = token.fields
    if not (isinstance(s, str) and isinstance(m, str) and isinstance(k, str) and isinstance(r, int)
            and isinstance(p, int) and isinstance(t, int) and isinstance(x, int) and isinstance(link, int)
            and isinstance(digest, str)):
        raise _malformed()
    claim = Claim(Message(s, m, k, r, p, t, x), link, digest)
    if now > x:
        raise Expired(claim)
    return claim


def verify(key: bytes, token: str, now: float) -> Claim:
    return check(key, parse(token), now)


def open_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}{PATH_OPEN}{token}.gif"


def click_url(base_url: str, token: str, url: str) -> str:
    return f"{base_url.rstrip('/')}{PATH_CLICK}{token}?u={quote(url, safe='')}"


# --- rewriting a message ---------------------------------------------------------------
_HREF = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
_TEXT_URL = re.compile(r"""https?://[^\s<>"'()\[\]]+""", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
_TRAILING = ".,;:!?"
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")  # whitespace and control characters: no URL a redirect may carry


@dataclass
class Rewriter:
    """Rewrites one message's links to signed click links and adds its open pixel. A URL
    gets one index, the same in the HTML and the text part; `skip` (the unsubscribe link)
    stays as it is."""

    base_url: str
    key: bytes
    message: Message
    skip: frozenset[str] = frozenset()
    links: list[str] = field(default_factory=list)

    def _tracked(self, url: str) -> str | None:
        if not url.lower().startswith(("http://", "https://")) or url in self.skip or _UNSAFE.search(url):
            return None
        if url.startswith(self.base_url.rstrip("/") + "/t/"):
            return None
        if url not in self.links:
            self.links.append(url)
        return click_url(self.base_url, sign(self.key, self.message, self.links.index(url), url), url)

    def html(self, body: str) -> str:
        def link(m: re.Match[str]) -> str:
            url = html_lib.unescape(m.group(3)).strip()
            tracked = self._tracked(url)
            if tracked is None:
                return m.group(0)
            return f"{m.group(1)}{m.group(2)}{html_lib.escape(tracked, quote=True)}{m.group(2)}"

        body = _HREF.sub(link, body)
        pixel = (f'<img src="{html_lib.escape(open_url(self.base_url, sign(self.key, self.message)))}" '
                 'width="1" height="1" alt="" style="display:block;border:0;width:1px;height:1px">')
        ends = list(_BODY_END.finditer(body))
        if ends:
            at = ends[-1].start()
            return f"{body[:at]}{pixel}{body[at:]}"
        return f"{body}\n{pixel}\n"

    def text(self, body: str) -> str:
        def link(m: re.Match[str]) -> str:
            raw = m.group(0)
            url = raw.rstrip(_TRAILING)
            tracked = self._tracked(url)
            return raw if tracked is None else tracked + raw[len(url):]

        return _TEXT_URL.sub(link, body)


# --- machine opens and clicks ------------------------------------------------------------
# Link scanners and security gateways that fetch every link or image of a message before
# (or instead of) a person. Gmail's image proxy is a person's open (it fetches on open) and
# is not listed; Apple Mail Privacy Protection fetches from Apple's own network (17.0.0.0/8).
_MACHINE_AGENTS = re.compile(
    r"bot\b|crawler|spider|scanner|preview|proofpoint|mimecast|barracuda|symantec|forcepoint|safelinks|"
    r"urldefense|trendmicro|sophos|fireeye|messagelabs|cisco|ironport|python-requests|curl/|wget/|"
    r"headlesschrome|phantomjs", re.IGNORECASE)
_APPLE_PROXIES = ipaddress.ip_network("17.0.0.0/8")


@functools.lru_cache(maxsize=4096)
def _machine_agent(user_agent: str) -> bool:
    # a handful of user agents make most hits: the regex runs once per agent, not per hit
    return not user_agent.strip() or _MACHINE_AGENTS.search(user_agent) is not None


def is_machine(user_agent: str, client_ip: str) -> bool:
    """A hit that a scanner or mail proxy made, not a person (excluded from opens, clicks
    and attribution by default)."""
    if _machine_agent(user_agent):
        return True
    if client_ip.startswith("17."):
        try:
            return ipaddress.ip_address(client_ip) in _APPLE_PROXIES
        except ValueError:
            return False
    return False
