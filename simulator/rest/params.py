"""Request parameters as WordPress' REST server merges and validates them: query < body
(JSON or form-encoded), `rest_invalid_param` / `rest_invalid_json` answers word for word.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

from starlette.requests import Request

from ..errors import RestError

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|z|[+-]\d{2}(:?\d{2})?)?$")


def invalid_param(name: str, code: str, message: str) -> RestError:
    return RestError("rest_invalid_param", f"Invalid parameter(s): {name}", 400, {
        "params": {name: message},
        "details": {name: {"code": code, "message": message, "data": None}},
    })


class Params:
    """Merged request parameters (query < body), with WP-style validation."""

    def __init__(self, query: list[tuple[str, str]], body: dict[str, Any]) -> None:
        self.query_items = query
        merged: dict[str, Any] = {}
        for key, value in query:
            if key.endswith("[]"):
                merged.setdefault(key[:-2], []).append(value)
            else:
                merged[key] = value
        merged.update(body)
        self.data = merged

    def get(self, name: str, default: Any = None) -> Any:
        return self.data.get(name, default)

    def __contains__(self, name: str) -> bool:
        return name in self.data

    def integer(self, name: str, default: int | None = None, minimum: int | None = None,
                maximum: int | None = None) -> int | None:
        raw = self.data.get(name)
        if raw is None or raw == "":
            return default
        if isinstance(raw, bool) or not re.fullmatch(r"-?\d+", str(raw).strip()):
            raise invalid_param(name, "rest_invalid_type", f"{name} is not of type integer.")
        value = int(str(raw).strip())
        if minimum is not None and maximum is not None and not minimum <= value <= maximum:
            raise invalid_param(name, "rest_out_of_bounds",
                                 f"{name} must be between {minimum} (inclusive) and {maximum} (inclusive)")
        if minimum is not None and value < minimum:
            raise invalid_param(name, "rest_out_of_bounds", f"{name} must be greater than or equal to {minimum}")
        return value

    def boolean(self, name: str, default: bool = False) -> bool:
        raw = self.data.get(name)
        if raw is None:
            return default
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("true", "1"):
            return True
        if text in ("false", "0", ""):
            return False
        raise invalid_param(name, "rest_invalid_type", f"{name} is not of type boolean.")

    def enum(self, name: str, allowed: Iterable[str], default: str) -> str:
        raw = self.data.get(name)
        if raw is None or raw == "":
            return default
        allowed = tuple(allowed)
        if raw not in allowed:
            listing = ", ".join(allowed[:-1]) + f", and {allowed[-1]}" if len(allowed) > 2 else " and ".join(allowed)
            raise invalid_param(name, "rest_not_in_enum", f"{name} is not one of {listing}.")
        return str(raw)

    def id_list(self, name: str) -> list[int]:
        raw = self.data.get(name)
        if raw in (None, ""):
            return []
        items = raw if isinstance(raw, list) else re.split(r"[\s,]+", str(raw))
        return [abs(int(i)) for i in items if str(i).strip().lstrip("-").isdigit()]

    def str_list(self, name: str) -> list[str]:
        raw = self.data.get(name)
        if raw in (None, ""):
            return []
        items = raw if isinstance(raw, list) else re.split(r"[\s,]+", str(raw))
        return [str(i) for i in items if str(i)]

    def date_filter(self, name: str, tz: ZoneInfo, gmt_column: bool) -> int | None:
        """A date-time filter as the unix timestamp the column value must pass.

        WP_Date_Query turns the value into a site-local wall clock string and
        compares it with the chosen column *as text*: local for ``date_*``, UTC
        for ``date_*_gmt``.  Reproduced literally.
        """
        raw = self.data.get(name)
        if raw in (None, ""):
            return None
        text = str(raw).strip()
        if not _DATE_RE.match(text):
            raise invalid_param(name, "rest_invalid_date", "Invalid date.")
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00").replace(" ", "T"))
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(tz).replace(tzinfo=None)  # site wall clock, zone dropped
        wall = parsed.replace(microsecond=0)
        column_zone = ZoneInfo("UTC") if gmt_column else tz
        return int(wall.replace(tzinfo=column_zone).timestamp())


async def read_params(request: Request) -> Params:
    query = parse_qsl(request.url.query, keep_blank_values=True)
    body: dict[str, Any] = {}
    if request.method in ("POST", "PUT", "PATCH", "DELETE"):
        raw = await request.body()
        content_type = request.headers.get("content-type", "")
        if raw.strip():
            if "json" in content_type or raw.lstrip()[:1] in (b"{", b"["):
                try:
                    parsed = json.loads(raw)
                except ValueError:
                    raise RestError("rest_invalid_json", "Invalid JSON body passed.", 400,
                                    {"json_error_code": 4, "json_error_message": "Syntax error"}) from None
                if isinstance(parsed, dict):
                    body = parsed
            else:
                for key, value in parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True):
                    if key.endswith("[]"):
                        body.setdefault(key[:-2], []).append(value)
                    else:
                        body[key] = value
    return Params(query, body)


