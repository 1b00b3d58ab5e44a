"""The floor under the tracking benchmark: a bare ASGI app on the same uvicorn (uvloop +
httptools) answering every request with the pixel, recording nothing. What one process
of it serves on this box at the same moment is what the tracking endpoint is compared to
(`tracking.py --compare-bare`): the box's load moves both alike."""

from __future__ import annotations

from typing import Any

from wooflow.api.tracking import PIXEL_GIF

HEADERS = [(b"content-type", b"image/gif"), (b"content-length", str(len(PIXEL_GIF)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": PIXEL_GIF})
