"""PHP ``json_encode`` byte-for-byte, as WordPress' ``wp_json_encode`` emits it.

WooCommerce signs the *exact* body bytes it sends, and a receiver that
re-serialises the JSON before checking the HMAC breaks on real traffic.  So the
simulator must produce the same bytes PHP would, not merely equivalent JSON:

* ``/`` is escaped as ``\\/`` (PHP escapes slashes unless JSON_UNESCAPED_SLASHES);
* every non-ASCII code point is ``\\uXXXX`` with lowercase hex, astral code
  points as a UTF-16 surrogate pair (no JSON_UNESCAPED_UNICODE);
* floats use ``serialize_precision = -1`` (shortest round-trip digits) and a
  whole float such as ``19.0`` prints as ``19`` (no JSON_PRESERVE_ZERO_FRACTION);
  very large/small magnitudes switch to PHP's ``1.0e+25`` notation;
* no whitespace between tokens; a PHP list (Python list/tuple) is a JSON array,
  an associative array (Python dict) is an object, and PHP's empty ``array()``
  encodes as ``[]`` – callers pick ``[]`` or ``{}`` by passing a list or dict.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any

__all__ = ["php_float_repr", "php_json_encode"]

# PHP's escape table for the characters that get a short escape.
_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "/": "\\/",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


# Printable ASCII without DEL: every character stands for itself but the three below. Most
# strings of a payload are such (bench/e2e: the character loop was 70% of building a body).
_PRINTABLE = re.compile(r"[ -~]*")


def _encode_str(value: str) -> str:
    if _PRINTABLE.fullmatch(value):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("/", "\\/") + '"'
    return _encode_chars(value)


def _encode_chars(value: str) -> str:
    """Character by character, every rule of PHP's encoder."""
    out: list[str] = ['"']
    for ch in value:
        short = _SHORT_ESCAPES.get(ch)
        if short is not None:
            out.append(short)
            continue
        code = ord(ch)
        if 0x20 <= code < 0x80:
            # 0x7f (DEL) is printable for PHP's encoder and stays literal.
            out.append(ch)
        elif 0xD800 <= code <= 0xDFFF:
            # A lone surrogate is invalid UTF-8 in PHP: json_encode() fails
            # (JSON_ERROR_UTF8) instead of emitting something.
            raise ValueError("php_json_encode: malformed UTF-8 (lone surrogate)")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            code -= 0x10000
            out.append(f"\\u{0xD800 | (code >> 10):04x}\\u{0xDC00 | (code & 0x3FF):04x}")
    out.append('"')
    return "".join(out)


def php_float_repr(value: float) -> str:
    """Format a float the way PHP >= 7.1 json_encode does (php_gcvt, mode 0)."""
    if math.isnan(value) or math.isinf(value):
        # json_encode() returns false (JSON_ERROR_INF_OR_NAN) in PHP.
        raise ValueError("php_json_encode: INF and NAN cannot be JSON encoded")
    negative = math.copysign(1.0, value) < 0
    if value == 0:
        return "-0" if negative else "0"
    # repr() gives the shortest round-tripping digits, exactly what zend_dtoa
    # mode 0 produces; Decimal splits them into digits and exponent.
    _, digit_tuple, exponent = Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0") or "0"
    assert isinstance(exponent, int)
    # decpt = position of the decimal point relative to the first digit.
    decpt = len(digit_tuple) + exponent
    # strip leading zeros that Decimal may keep (e.g. "0.5" -> digits "5")
    stripped = digits.lstrip("0")
    decpt -= len(digits) - len(stripped)
    digits = stripped or "0"
    prefix = "-" if negative else ""
    if decpt < -3 or decpt > 17:
        # exponential format, e.g. 1.0e+25 / 1.5e-7
        exp = decpt - 1
        mantissa = digits[0] + "." + (digits[1:] or "0")
        return f"{prefix}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp)}"
    if decpt <= 0:
        return prefix + "0." + "0" * (-decpt) + digits
    if len(digits) <= decpt:
        return prefix + digits + "0" * (decpt - len(digits))
    return prefix + digits[:decpt] + "." + digits[decpt:]


def _encode(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_encode_str(value))
    elif isinstance(value, int):
        out.append(str(int(value)))
    elif isinstance(value, float):
        out.append(php_float_repr(value))
    elif isinstance(value, Decimal):
        # Decimals only appear if a caller forgot to format money as a
        # string; encode them as PHP would encode the equivalent float.
        out.append(php_float_repr(float(value)))
    elif isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        out.append("{")
        first = True
        for key, item in value.items():
            if not first:
                out.append(",")
            first = False
            out.append(_encode_str(str(key) if not isinstance(key, bool) else str(int(key))))
            out.append(":")
            _encode(item, out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise TypeError(f"php_json_encode: cannot encode {type(value).__name__}")


def php_json_encode(obj: Any) -> bytes:
    """Encode ``obj`` exactly as ``trim(wp_json_encode($obj))`` would, as bytes."""
    out: list[str] = []
    _encode(obj, out)
    # Every non-ASCII character is escaped, so the result is pure ASCII.
    return "".join(out).encode("ascii")
