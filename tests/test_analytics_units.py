"""Analytics without services: tracking tokens and rewritten messages, holdout membership,
the lift and its intervals, machine hits, refunds in normalised orders."""

from __future__ import annotations

import html
import math
import random
import re
from datetime import timezone
from urllib.parse import parse_qs, urlsplit

import pytest

from wooflow import engagement, holdout, lift
from wooflow.settings import Settings

pytestmark = pytest.mark.unit

KEY = engagement.signing_key(Settings(tracking_secret="s3cret"), "")
MSG = engagement.Message("acme", "k" * 40, "c42", 7, 1, 1_700_000_000, 1_700_000_000 + 86_400)
BASE = "https://api.example"


def test_a_token_says_what_was_signed_and_nothing_else_verifies() -> None:
    token = engagement.sign(KEY, MSG, 3, "https://shop.example/p/1")
    claim = engagement.verify(KEY, token, MSG.issued + 10)
    assert claim.message == MSG and claim.link == 3 and claim.kind == "click"
    assert claim.digest == engagement.url_digest("https://shop.example/p/1")
    body, mac = token.split(".")
    forged = engagement.sign(KEY, engagement.Message("acme", "k" * 40, "c43", 7, 1, MSG.issued, MSG.expires))
    with pytest.raises(engagement.BadToken, match="signature"):  # another payload under this mac
        engagement.verify(KEY, f"{forged.split('.')[0]}.{mac}", MSG.issued)
    with pytest.raises(engagement.BadToken, match="signature"):  # one bit of the mac flipped
        engagement.verify(KEY, f"{body}.{'A' if mac[0] != 'A' else 'B'}{mac[1:]}", MSG.issued)
    with pytest.raises(engagement.BadToken, match="signature"):  # another key
        engagement.verify(engagement.signing_key(Settings(tracking_secret="other"), ""), token, MSG.issued)
    for garbage in ("", "abc", "abc.def", "e30.AAAA", f"{body}"):
        with pytest.raises(engagement.BadToken):
            engagement.verify(KEY, garbage, MSG.issued)


def test_an_expired_token_is_told_apart_and_still_carries_its_claim() -> None:
    token = engagement.sign(KEY, MSG)
    assert engagement.verify(KEY, token, MSG.expires).kind == "open"
    with pytest.raises(engagement.Expired) as err:
        engagement.verify(KEY, token, MSG.expires + 1)
    assert err.value.claim.message == MSG


def test_the_store_key_is_the_default_and_the_secret_replaces_it() -> None:
    link_key = "ab" * 32
    own = engagement.signing_key(Settings(), link_key)
    assert own != engagement.signing_key(Settings(), "cd" * 32)
    assert engagement.signing_key(Settings(tracking_secret="x"), link_key) != own
    with pytest.raises(ValueError):
        engagement.signing_key(Settings(), "")


def _clicks(body: str) -> list[tuple[str, str]]:
    """(token, destination) of every click link in a body."""
    out = []
    for url in re.findall(r"https://api\.example/t/c/[^\s\"'<>]+", body):
        parts = urlsplit(html.unescape(url).rstrip(".,;:!?"))
        out.append((parts.path.rsplit("/", 1)[1], parse_qs(parts.query)["u"][0]))
    return out


def test_a_message_gets_signed_links_one_index_per_url_and_a_pixel() -> None:
    unsub = "https://api.example/unsubscribe/tok"
    rw = engagement.Rewriter(BASE, KEY, MSG, skip=frozenset({unsub}))
    body = ('<html><body><a href="https://shop.example/p?a=1&amp;b=2">A</a> <a class="x" href=\'https://shop.example/'
            f'cart\'>Cart</a> <a href="mailto:x@y.z">m</a> <a href="{unsub}">u</a></body></html>')
    out = rw.html(body)
    text = rw.text("See https://shop.example/cart. Or https://shop.example/new (today)\nmailto:x@y.z")
    assert rw.links == ["https://shop.example/p?a=1&b=2", "https://shop.example/cart", "https://shop.example/new"]
    clicks = _clicks(out) + _clicks(text)
    assert [u for _, u in clicks] == ["https://shop.example/p?a=1&b=2", "https://shop.example/cart",
                                      "https://shop.example/cart", "https://shop.example/new"]
    for token, url in clicks:
        claim = engagement.verify(KEY, token, MSG.issued)
        assert rw.links[claim.link] == url and claim.digest == engagement.url_digest(url)
    assert "mailto:x@y.z" in out and unsub in out and text.endswith("mailto:x@y.z")
    assert re.search(r"/t/c/\S+%2Fcart\. Or https://api", text)  # the sentence's full stop stays outside
    assert re.search(r"/t/c/\S+%2Fnew \(today\)", text)
    pixel = re.search(r'<img src="https://api\.example/t/o/([^"]+)\.gif"', out)
    assert pixel is not None and out.index(pixel.group(0)) < out.index("</body>")
    assert engagement.verify(KEY, pixel.group(1), MSG.issued).kind == "open"


def test_a_body_without_html_ending_gets_the_pixel_at_its_end() -> None:
    out = engagement.Rewriter(BASE, KEY, MSG).html("<p>Hi</p>")
    assert out.rstrip().endswith('height:1px">')


def test_holdout_membership_is_stable_and_near_its_share() -> None:
    keys = [f"c{i}" for i in range(100_000)]
    ten = [holdout.held_out(9, k, 10) for k in keys]
    assert ten == [holdout.held_out(9, k, 10) for k in keys]  # a pure function
    share = sum(ten) / len(keys)
    assert abs(share - 0.10) < 4 * math.sqrt(0.1 * 0.9 / len(keys))  # within 4 standard errors
    # raising the share only adds customers; another rule draws other customers
    assert all(holdout.held_out(9, k, 20) for k, held in zip(keys, ten, strict=True) if held)
    other = [holdout.held_out(10, k, 10) for k in keys]
    both = sum(a and b for a, b in zip(ten, other, strict=True)) / len(keys)
    assert abs(both - 0.01) < 0.003
    assert not any(holdout.held_out(9, k, 0) for k in keys[:1000])


def reference_lift(t: list[float], c: list[float], z: float = 1.959963984540054) -> tuple[float, float, float]:
    """Difference of conversion rates with the textbook Wald interval, from raw outcomes."""
    pt, pc = sum(1 for x in t if x > 0) / len(t), sum(1 for x in c if x > 0) / len(c)
    half = z * math.sqrt(pt * (1 - pt) / len(t) + pc * (1 - pc) / len(c))
    return pt - pc, pt - pc - half, pt - pc + half


def test_lift_matches_the_textbook_intervals_and_says_when_it_cannot_conclude() -> None:
    import statistics

    rng = random.Random(5)
    t = [rng.choice([0.0, 0.0, 0.0, 40.0, 55.5]) for _ in range(900)]
    c = [rng.choice([0.0, 0.0, 0.0, 0.0, 40.0]) for _ in range(100)]

    def group(xs: list[float]) -> lift.Group:
        return lift.Group(len(xs), sum(1 for x in xs if x > 0), sum(xs), sum(x * x for x in xs))

    got = lift.compare(group(t), group(c))
    est, lo, hi = reference_lift(t, c)
    assert got.conversion is not None and got.revenue_per_customer is not None
    assert (got.conversion.estimate, got.conversion.low, got.conversion.high) == pytest.approx((est, lo, hi))
    d = statistics.fmean(t) - statistics.fmean(c)
    half = 1.959963984540054 * math.sqrt(statistics.variance(t) / len(t) + statistics.variance(c) / len(c))
    r = got.revenue_per_customer
    assert (r.estimate, r.low, r.high) == pytest.approx((d, d - half, d + half))
    assert got.incremental_revenue is not None and got.incremental_revenue.estimate == pytest.approx(d * 900)
    assert got.conclusive and got.note == ""
    small = lift.compare(group(t), group(c[:20]))
    assert not small.conclusive and not small.significant and "too small" in small.note
    assert lift.compare(group(t), group(c[:1])).conversion is None


def test_machine_hits() -> None:
    human = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
    assert not engagement.is_machine(human, "203.0.113.9")
    assert engagement.is_machine(human, "17.58.1.2")  # Apple Mail Privacy Protection
    assert engagement.is_machine("", "203.0.113.9")
    assert engagement.is_machine("Mozilla/5.0 (compatible; Barracuda Sentinel)", "203.0.113.9")
    assert not engagement.is_machine(human, "not an address")


def test_an_orders_refunds_become_one_positive_amount() -> None:
    from decimal import Decimal

    from wooflow.producers.normalise import order_record

    base = {"id": 5, "total": "80.00", "date_created_gmt": "2026-01-05T12:00:00",
            "date_modified_gmt": "2026-01-06T12:00:00"}
    assert order_record({**base, "refunds": [{"id": 9, "total": "-12.50"}, {"id": 10, "total": "-7.50"}]},
                        timezone.utc)["total_refunded"] == Decimal("20")
    assert order_record({**base, "refunds": []}, timezone.utc)["total_refunded"] == Decimal(0)
    assert order_record(base, timezone.utc)["total_refunded"] is None


def test_the_client_address_is_believed_from_trusted_proxies_only() -> None:
    from wooflow.api.tracking import ClientAddress

    proxies = ClientAddress("127.0.0.1, 10.0.0.0/8")
    assert proxies("127.0.0.1", "203.0.113.9") == "203.0.113.9"
    assert proxies("127.0.0.1", "198.51.100.1, 203.0.113.9, 10.2.3.4") == "203.0.113.9"  # the rightmost not trusted
    assert proxies("198.51.100.7", "203.0.113.9") == "198.51.100.7"  # a client cannot claim another address
    assert proxies("127.0.0.1", "") == "127.0.0.1" and proxies("127.0.0.1", "10.1.1.1") == "10.1.1.1"
    assert proxies("10.9.9.9", "not-an-address") == "not-an-address"
    assert ClientAddress("*")("198.51.100.7", "203.0.113.9") == "203.0.113.9"
    assert ClientAddress("")("127.0.0.1", "203.0.113.9") == "127.0.0.1"


def test_urls_with_whitespace_or_control_characters_are_not_tracked() -> None:
    rw = engagement.Rewriter(BASE, KEY, MSG)
    out = rw.html('<a href="https://a.example/x&#13;&#10;Set-Cookie: a=b">x</a> <a href="https://a.example/ok">ok</a>')
    assert rw.links == ["https://a.example/ok"] and "https://a.example/x&#13;&#10;Set-Cookie" in out


def test_a_redirect_location_is_ascii() -> None:
    from wooflow.api.tracking import _location

    assert _location("https://shop.example/zażółć?q=a b&x=%2F#top") == \
        b"https://shop.example/za%C5%BC%C3%B3%C5%82%C4%87?q=a%20b&x=%2F#top"
