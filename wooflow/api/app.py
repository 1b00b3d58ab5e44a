"""The admin REST API (`wooflow api`): FastAPI, OpenAPI at /docs and /openapi.json.

Each area contributes an `APIRouter` from its own module (rules, logs, tasks, ...);
they are listed in ROUTERS. Every /v1 route depends on `auth.principal`, so every query is
scoped to the caller's store (the operators' dead letters on `auth.operator`); the web
console (`console.py`) is a static page over these routes.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from wooflow.api.tracking import TrackedApi, Tracker
from wooflow.db.engine import get_engine
from wooflow.probes import db_ready, probe_routes
from wooflow.settings import Settings

log = logging.getLogger(__name__)

# module path → attribute holding an APIRouter. Areas add themselves here.
ROUTERS: list[str] = [
    "wooflow.api.rules:router",  # rules CRUD + dry run (rule engine)
    "wooflow.api.workflows:router",  # versions, runs, journeys, A/B results (scheduler)
    "wooflow.api.logs:router",  # execution logs (rule engine)
    "wooflow.api.schema:router",  # triggers/fields/operators/actions (rule engine)
    "wooflow.api.tasks:router",  # admin tasks (workers)
    "wooflow.api.consent:router",  # consent records (workers)
    "wooflow.api.consent:public_router",  # unsubscribe links, no token (workers)
    "wooflow.api.templates:router",  # workflow templates: list, install (scheduler)
    "wooflow.api.analytics:router",  # funnel, revenue, holdout lift, attribution settings
    "wooflow.scheduler.recovery:router",  # cart recovery links, no token (scheduler)
    "wooflow.api.auth:router",  # /v1/me: the store a token acts on (console sign-in)
    "wooflow.api.dlq:router",  # dead letters: list, show, redrive (operator tokens)
    "wooflow.api.operations:router",  # consumer lag per role (operator tokens)
    "wooflow.api.search:router",  # a store's orders and customers by number or email (dry-run subjects)
    "wooflow.api.catalog:router",  # the store's product categories and tags by name (condition pickers)
    "wooflow.api.console:router",  # the web console at / (static page over this API)
]


def _field_path(loc: tuple[object, ...]) -> str:
    # "~action" / "~branch": which kind of workflow step pydantic tried (consumer/model.py), not a field
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header") and not str(p).startswith("~")]
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


# Every 422 the API answers (a validation error, a route's refusal, a value PostgreSQL
# cannot hold) has this shape; FastAPI would document its own `{"detail": [...]}`.
ERROR_422 = {
    "title": "Error", "type": "object", "required": ["error", "message"],
    "properties": {
        "error": {"type": "string", "description": "validation_error, invalid_request or invalid_value"},
        "message": {"type": "string"},
        "errors": {"type": "array", "items": {
            "type": "object", "required": ["field", "message"],
            "properties": {"field": {"type": "string", "description": "e.g. conditions.conditions[0].operator"},
                           "message": {"type": "string"}, "type": {"type": ["string", "null"]}}}},
    },
}


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.get("components", {}).get("schemas", {})
        if "HTTPValidationError" in components:
            components["HTTPValidationError"] = ERROR_422
            components.pop("ValidationError", None)
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(settings: Settings) -> FastAPI:
    engine = get_engine(settings.database_url)
    tracker = Tracker(settings, engine)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await tracker.close()

    app = TrackedApi(title="wooflow admin API", version="1", lifespan=lifespan,
                  description="Rules and workflows, dry runs, execution logs, analytics. "
                              "Authenticate with `Authorization: Bearer <token>`; tokens are scoped to one store.")
    app.state.settings = settings
    app.state.engine = engine
    app.tracker = tracker  # the public open/click tracking links, ahead of FastAPI (wooflow/api/tracking.py)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        # 422 with the path of every offending field, e.g. "conditions.conditions[0].operator"
        errors = [_error_entry(e) for e in exc.errors()]
        return JSONResponse({"error": "validation_error", "message": "; ".join(
            f"{e['field']}: {e['message']}" for e in errors), "errors": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 422:  # a route's own refusal: the same shape as a validation error
            return JSONResponse({"error": "invalid_request", "message": str(exc.detail)}, status_code=422)
        return await http_exception_handler(request, exc)

    @app.exception_handler(DataError)
    async def data_error(_: Request, exc: DataError) -> JSONResponse:
        # PostgreSQL refused a value the request carried (a NUL character in a text, a number
        # out of its column's range): the caller's mistake, answered like a validation error.
        reason = str(exc.orig).splitlines()[0] if exc.orig is not None else "invalid value"
        return JSONResponse({"error": "invalid_value", "message": f"a value in the request cannot be stored or "
                                                                  f"searched for: {reason}"}, status_code=422)

    for spec in ROUTERS:
        module, _, attr = spec.partition(":")
        app.include_router(getattr(importlib.import_module(module), attr or "router"))
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    for route in probe_routes(db_ready(settings.database_url)):
        app.router.routes.append(route)
    return app
