"""The web console for store owners, served by the admin API at `/`.

A single page (wooflow/api/console/: HTML, one script, one stylesheet — no build step, no
CDN) whose only backend is the API itself: it signs in with a store token (or an
operator token and a store), keeps the token in the tab's sessionStorage and sends it as
`Authorization: Bearer` on each `/v1` call — never in a URL, never in a cookie, so there
is no ambient credential for another site to ride on (no CSRF) and the server logs no
token. Every value from the API is put into the page as text (`textContent`), never as
markup; the rendered email of a dry run is shown in a sandboxed iframe with no scripts.
The page carries a Content-Security-Policy that lets only its own script run (by hash) — and
the chart library (uPlot, vendored under console/vendor/ with its licence and origin), which
the analytics page fetches from `/console/vendor/` and runs by the hash the policy names: the
first page does not carry it."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import Response

router = APIRouter(include_in_schema=False)

# The page is served whole: its stylesheet and script are put inline where index.html links
# them, so a first visit is one request before the page's own API call, not three (the
# script's request was 60-95 ms of a cold first page at load 5-14, bench/console).
STYLE_LINK = '<link rel="stylesheet" href="/console/console.css">'
SCRIPT_TAG = '<script src="/console/console.js" defer></script>'

# The console's script and the chart library are allowed by their hashes, nothing else runs.
# Styles: the console's own, and inline style attributes for a store's email shown in the dry
# run's sandboxed frame (an srcdoc frame inherits this policy). Images: the email's own (https:, data:). No framing
# of the console by other sites, no forms posted anywhere.
CSP = ("default-src 'none'; script-src {script}; style-src 'self' 'unsafe-inline'; img-src 'self' data: https:; "
       "connect-src 'self'; frame-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


@dataclass(frozen=True)
class Page:
    body: bytes
    headers: dict[str, str]
    script_hash: str = ""  # a script's CSP source expression


# The vendored chart library: run by the analytics page (fetched, then inserted as an inline
# script, which the policy allows by this file's hash); its stylesheet goes into the page's.
CHARTS_JS = "vendor/uPlot.iife.min.js"
CHARTS_CSS = "vendor/uPlot.min.css"


def _read(name: str) -> str:
    return resources.files("wooflow.api").joinpath("console", name).read_text(encoding="utf-8")


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:20] + '"'


@cache
def page() -> Page:
    html, css, js = _read("index.html"), _read(CHARTS_CSS) + "\n" + _read("console.css"), _read("console.js")
    if STYLE_LINK not in html or SCRIPT_TAG not in html or "</script" in js or "</style" in css:
        raise RuntimeError("wooflow/api/console: index.html no longer links console.css/console.js as expected")
    # the script at the end of the body: it runs once the page it draws into is parsed
    html = html.replace(STYLE_LINK, f"<style>\n{css}</style>").replace(SCRIPT_TAG, "")
    html = html.replace("</body>", f"<script>{js}</script>\n</body>")
    body = html.encode()
    return Page(body, {"Content-Security-Policy": CSP.format(script=f"{_hash(js)} {charts().script_hash}"),
                       "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                       "X-Frame-Options": "DENY", "Cache-Control": "no-cache", "ETag": _etag(body)})


@cache
def charts() -> Page:
    js = _read(CHARTS_JS)
    body = js.encode()
    return Page(body, {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache", "ETag": _etag(body)},
                _hash(js))


def _answer(request: Request, p: Page, media_type: str) -> Response:
    if request.headers.get("if-none-match") == p.headers["ETag"]:
        return Response(status_code=304, headers=p.headers)
    return Response(p.body, media_type=media_type, headers=p.headers)


@router.get("/")
def index(request: Request) -> Response:
    return _answer(request, page(), "text/html; charset=utf-8")


@router.get(f"/console/{CHARTS_JS}")
def chart_library(request: Request) -> Response:
    return _answer(request, charts(), "text/javascript; charset=utf-8")
