"""The web console for store owners, served by the admin API at `/`.

A single page (wooflow/api/console/: HTML, one script, one stylesheet — no build step, no
CDN) whose only backend is the API itself: it signs in with a store token (or an
operator token and a store), keeps the token in the tab's sessionStorage and sends it as
`Authorization: Bearer` on each `/v1` call — never in a URL, never in a cookie, so there
is no ambient credential for another site to ride on (no CSRF) and the server logs no
token. Every value from the API is put into the page as text (`textContent`), never as
markup; the rendered email of a dry run is shown in a sandboxed iframe with no scripts.
The page carries a Content-Security-Policy that lets only its own script run (by hash)."""

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

# The one script is allowed by its hash, nothing else runs. Styles: the console's own, and
# inline style attributes for a store's email shown in the dry run's sandboxed frame (an
# srcdoc frame inherits this policy). Images: the email's own (https:, data:). No framing
# of the console by other sites, no forms posted anywhere.
CSP = ("default-src 'none'; script-src {script}; style-src 'self' 'unsafe-inline'; img-src 'self' data: https:; "
       "connect-src 'self'; frame-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


@dataclass(frozen=True)
class Page:
    body: bytes
    headers: dict[str, str]


def _read(name: str) -> str:
    return resources.files("wooflow.api").joinpath("console", name).read_text(encoding="utf-8")


@cache
def page() -> Page:
    html, css, js = _read("index.html"), _read("console.css"), _read("console.js")
    if STYLE_LINK not in html or SCRIPT_TAG not in html or "</script" in js or "</style" in css:
        raise RuntimeError("wooflow/api/console: index.html no longer links console.css/console.js as expected")
    # the script at the end of the body: it runs once the page it draws into is parsed
    html = html.replace(STYLE_LINK, f"<style>\n{css}</style>").replace(SCRIPT_TAG, "")
    html = html.replace("</body>", f"<script>{js}</script>\n</body>")
    digest = base64.b64encode(hashlib.sha256(js.encode()).digest()).decode()
    body = html.encode()
    return Page(body, {"Content-Security-Policy": CSP.format(script=f"'sha256-{digest}'"),
                       "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                       "X-Frame-Options": "DENY", "Cache-Control": "no-cache",
                       "ETag": '"' + hashlib.sha256(body).hexdigest()[:20] + '"'})


@router.get("/")
def index(request: Request) -> Response:
    p = page()
    if request.headers.get("if-none-match") == p.headers["ETag"]:
        return Response(status_code=304, headers=p.headers)
    return Response(p.body, media_type="text/html; charset=utf-8", headers=p.headers)
