"""A local Confluent Schema Registry stand-in speaking its REST API over a real socket
(the real one is a Java service that cannot be fetched here)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

if TYPE_CHECKING:
    from tests.support import ServerThread


def create_app() -> Starlette:
    schemas: dict[int, str] = {}
    subjects: dict[str, list[int]] = {}

    async def register(request: Request) -> JSONResponse:
        subject = request.path_params["subject"]
        body = await request.json()
        schema = body["schema"]
        canonical = json.dumps(json.loads(schema), sort_keys=True)
        sid = next((i for i, s in schemas.items() if json.dumps(json.loads(s), sort_keys=True) == canonical), None)
        if sid is None:
            sid = len(schemas) + 1
            schemas[sid] = schema
        versions = subjects.setdefault(subject, [])
        if sid not in versions:
            versions.append(sid)
        return JSONResponse({"id": sid, "subject": subject, "version": versions.index(sid) + 1, "schema": schema},
                            media_type="application/vnd.schemaregistry.v1+json")

    async def by_id(request: Request) -> JSONResponse:
        sid = int(request.path_params["id"])
        if sid not in schemas:
            return JSONResponse({"error_code": 40403, "message": "Schema not found"}, status_code=404)
        return JSONResponse({"schema": schemas[sid]}, media_type="application/vnd.schemaregistry.v1+json")

    return Starlette(routes=[Route("/subjects/{subject}/versions", register, methods=["POST"]),
                             Route("/schemas/ids/{id:int}", by_id)])


def RegistryServer() -> ServerThread:  # noqa: N802 (reads like a class at call sites)
    from tests.support import ServerThread

    return ServerThread(create_app())
