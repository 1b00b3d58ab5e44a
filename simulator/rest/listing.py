"""Collections as WooCommerce's REST controllers list them: include/exclude, the date window
(`after`/`before`/`modified_*`), search, orderby/order, and pagination with
`X-WP-Total`/`X-WP-TotalPages` and a `Link` header built from the request's own query.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import Response

from wooflow.jsontypes import JSONObject

from ..state import SimulatedStore
from .params import Params
from .responses import json_response


def paginate(store: SimulatedStore, request: Request, params: Params, route: str,
              items: list[Any], render: Callable[[Any], JSONObject]) -> Response:
    per_page = params.integer("per_page", 10, 1, 100)
    page = params.integer("page", 1, 1)
    offset = params.integer("offset", None, 0)
    assert per_page is not None and page is not None
    total = len(items)
    start = offset if offset is not None else (page - 1) * per_page
    if offset is not None:
        page = start // per_page + 1
    chunk = items[start:start + per_page]
    max_pages = math.ceil(total / per_page) if per_page else 0
    headers = {"X-WP-Total": str(total), "X-WP-TotalPages": str(max_pages)}
    # add_query_arg( $request->get_query_params(), rest_url( ... ) ) then page=N
    base_query = [(k, v) for k, v in params.query_items if k != "page"]
    base = store.site.rest_url(route)

    def link(target: int) -> str:
        return base + "?" + urlencode([*base_query, ("page", str(target))])

    links = []
    if page > 1:
        links.append(f'<{link(min(page - 1, max_pages) if max_pages else page - 1)}>; rel="prev"')
    if max_pages > page:
        links.append(f'<{link(page + 1)}>; rel="next"')
    if links:
        headers["Link"] = ", ".join(links)
    return json_response([render(item) for item in chunk], 200, headers)


def sort(items: list[Any], params: Params, keys: dict[str, Callable[[Any], Any]], default: str,
          default_order: str = "desc") -> list[Any]:
    orderby = params.enum("orderby", tuple(keys) + (("include",) if "include" not in keys else ()), default)
    order = params.enum("order", ("asc", "desc"), default_order)
    if orderby == "include":
        wanted = params.id_list("include")
        return sorted(items, key=lambda i: wanted.index(i.id) if i.id in wanted else len(wanted))
    key = keys[orderby]
    # Ties keep a stable id order, as MySQL's secondary ordering by ID would.
    return sorted(items, key=lambda i: (key(i), i.id), reverse=(order == "desc"))


def date_window(items: list[Any], params: Params, tz: ZoneInfo, created: str, modified: str) -> list[Any]:
    gmt = params.boolean("dates_are_gmt")
    bounds = [
        ("after", created, lambda v, b: v > b), ("before", created, lambda v, b: v < b),
        ("modified_after", modified, lambda v, b: v > b), ("modified_before", modified, lambda v, b: v < b),
    ]
    for name, attribute, passes in bounds:
        bound = params.date_filter(name, tz, gmt)
        if bound is not None:
            items = [i for i in items if getattr(i, attribute) is not None and passes(getattr(i, attribute), bound)]
    return items


def include_exclude(items: list[Any], params: Params) -> list[Any]:
    include, exclude = params.id_list("include"), params.id_list("exclude")
    if include:
        items = [i for i in items if i.id in include]
    if exclude:
        items = [i for i in items if i.id not in exclude]
    return items


def search(items: list[Any], params: Params, fields: Callable[[Any], Iterable[str]]) -> list[Any]:
    term = str(params.get("search") or "").strip().lower()
    if not term:
        return items
    return [i for i in items if any(term in (f or "").lower() for f in fields(i))]


