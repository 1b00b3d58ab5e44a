"""The admin REST API (`wooflow api`): FastAPI, OpenAPI at /docs and /openapi.json.

Each area contributes an `APIRouter` from its own module (rules, logs, tasks, ...);
they are listed in ROUTERS. Every route depends on `auth.principal`, so every query is
scoped to the caller's store.
"""

from __future__ import annotations

import importlib
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from wooflow.db.engine import get_engine
from wooflow.probes import db_ready, probe_routes
from wooflow.settings import Settings

log = logging.getLogger(__name__)

# module path → attribute holding an APIRouter. Areas add themselves here.
ROUTERS: list[str] = [
    "wooflow.api.rules:router",  # rules CRUD + dry run (rule engine)
    "wooflow.api.logs:router",  # execution logs (rule engine)
    "wooflow.api.schema:router",  # triggers/fields/operators/actions (rule engine)
    "wooflow.api.tasks:router",  # admin tasks (workers)
    "wooflow.api.consent:router",  # consent records (workers)
    "wooflow.api.consent:public_router",  # unsubscribe links, no token (workers)
    "wooflow.api.templates:router",  # workflow templates: list, install (scheduler)
    "wooflow.scheduler.recovery:router",  # cart recovery links, no token (scheduler)
]


def _field_path(loc: tuple[object, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or ".".join(str(p) for p in loc)


def _error_entry(e: dict[str, object]) -> dict[str, object]:
    # A validator that knows a deeper path (a rule's condition tree, its trigger options)
    # raises an error carrying `path`: name that element rather than the whole field.
    ctx = e.get("ctx")
    err = ctx.get("error") if isinstance(ctx, dict) else None
    path = getattr(err, "path", None)
    if isinstance(path, str) and path:
        return {"field": path, "message": str(getattr(err, "message", err)), "type": e.get("type")}
    return {"field": _field_path(tuple(e.get("loc", ()))), "message": e.get("msg", ""), "type": e.get("type")}  # type: ignore[arg-type]


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(title="wooflow admin API", version="1",
                  description="Rules and workflows, dry runs, execution logs, analytics. "
                              "Authenticate with `Authorization: Bearer <token>`; tokens are scoped to one store.")
    app.state.settings = settings
    app.state.engine = get_engine(settings.database_url)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        # 422 with the path of every offending field, e.g. "conditions.conditions[0].operator"
        errors = [_error_entry(e) for e in exc.errors()]
        return JSONResponse({"error": "validation_error", "message": "; ".join(
            f"{e['field']}: {e['message']}" for e in errors), "errors": errors}, status_code=422)

    for spec in ROUTERS:
        module, _, attr = spec.partition(":")
        app.include_router(getattr(importlib.import_module(module), attr or "router"))
    for route in probe_routes(db_ready(settings.database_url)):
        app.router.routes.append(route)
    return app
