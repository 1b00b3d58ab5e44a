"""The web console for store owners, served by the admin API at `/`.

A single page (wooflow/api/console/: HTML, one script, one stylesheet — no build step, no
CDN) whose only backend is the API itself: it signs in with a store token (or an
operator token and a store), keeps the token in the tab's sessionStorage and sends it as
`Authorization: Bearer` on each `/v1` call — never in a URL, never in a cookie, so there
is no ambient credential for another site to ride on (no CSRF) and the server logs no
token. Every value from the API is put into the page as text (`textContent`), never as
markup; the rendered email of a dry run is shown in a sandboxed iframe with no scripts.
The console's responses carry a Content-Security-Policy that allows only its own script
and stylesheet."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

router = APIRouter(include_in_schema=False)

ASSETS = {"console.js": "text/javascript; charset=utf-8", "console.css": "text/css; charset=utf-8"}

# Scripts and styles from the console's own origin only; the one inline exception is
# `style-src 'unsafe-inline'`, for the style attributes of a store's email shown in the
# dry run's sandboxed iframe (an srcdoc frame inherits this policy). Images: the email's
# own (https:, data:). No framing of the console by other sites.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: https:; "
       "connect-src 'self'; frame-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "X-Frame-Options": "DENY", "Cache-Control": "no-cache"}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


@cache
def asset(name: str) -> Asset:
    body = resources.files("wooflow.api").joinpath("console", name).read_bytes()
    media = ASSETS.get(name, "text/html; charset=utf-8")
    return Asset(body, media, '"' + hashlib.sha256(body).hexdigest()[:20] + '"')


def _serve(request: Request, name: str) -> Response:
    a = asset(name)
    if request.headers.get("if-none-match") == a.etag:
        return Response(status_code=304, headers={**HEADERS, "ETag": a.etag})
    return Response(a.body, media_type=a.media_type, headers={**HEADERS, "ETag": a.etag})


@router.get("/")
def index(request: Request) -> Response:
    return _serve(request, "index.html")


@router.get("/console/{name}")
def static(request: Request, name: str) -> Response:
    if name not in ASSETS:
        raise HTTPException(404, "not found")
    return _serve(request, name)
