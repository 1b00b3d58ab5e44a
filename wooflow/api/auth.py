"""Bearer tokens scoped to a store.

A store token sees only its own store; an operator token (no store, or
WOOFLOW_ADMIN_TOKEN) may act on any store named by the `X-Wooflow-Store` header or
`store_id` query parameter. Tokens are stored as SHA-256 hashes only.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy import Engine, insert, select

from wooflow.db.tables import api_tokens, stores
from wooflow.stores import valid_store_id

bearer = HTTPBearer(auto_error=False, description="Store-scoped API token")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(engine: Engine, store_id: str | None, name: str = "") -> str:
    token = "wf_" + secrets.token_urlsafe(32)
    with engine.begin() as conn:
        conn.execute(insert(api_tokens).values(token_hash=hash_token(token), store_id=store_id, name=name))
    return token


@dataclass(frozen=True)
class Principal:
    store_id: str  # the store every query of this request is scoped to
    operator: bool


def _token_scope(request: Request, creds: HTTPAuthorizationCredentials | None) -> str | None:
    """The store a valid token is scoped to, None for an operator token; 401 otherwise."""
    if creds is None or not creds.credentials:
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    token = creds.credentials
    admin = request.app.state.settings.admin_token
    if admin is not None and hmac.compare_digest(token.encode(), admin.get_secret_value().encode()):
        return None
    engine: Engine = request.app.state.engine
    with engine.connect() as conn:
        row = conn.execute(select(api_tokens.c.store_id)
                           .where(api_tokens.c.token_hash == hash_token(token))).first()
    if row is None:
        raise HTTPException(401, "invalid bearer token", headers={"WWW-Authenticate": "Bearer"})
    scope: str | None = row[0]
    return scope


def principal(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    x_wooflow_store: Annotated[str | None, Header(description="Store to act on (operator tokens)")] = None,
    store_id: Annotated[str | None, Query(description="Store to act on (operator tokens)")] = None,
) -> Principal:
    engine: Engine = request.app.state.engine
    requested = x_wooflow_store or store_id
    scope = _token_scope(request, creds)
    if scope is not None:
        if requested and requested != scope:
            # Indistinguishable from "no such store" on purpose: a token must not probe other tenants.
            raise HTTPException(404, f"store {requested!r} not found")
        return Principal(scope, operator=False)
    if not requested:
        raise HTTPException(400, "operator tokens must name a store (X-Wooflow-Store header or store_id)")
    if not valid_store_id(requested):
        raise HTTPException(404, f"store {requested!r} not found")
    with engine.connect() as conn:
        if conn.execute(select(stores.c.id).where(stores.c.id == requested)).first() is None:
            raise HTTPException(404, f"store {requested!r} not found")
    return Principal(requested, operator=True)


CurrentStore = Annotated[Principal, Depends(principal)]


def operator(request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    """Routes over every store (the dead-letter queue): an operator token, no store needed."""
    if _token_scope(request, creds) is not None:
        raise HTTPException(403, "an operator token is needed for this")


Operator = Depends(operator)
router = APIRouter(prefix="/v1", tags=["session"])


class Me(BaseModel):
    store_id: str
    store_name: str
    currency: str
    operator: bool


@router.get("/me", response_model=Me, summary="The store this token acts on (the console's sign-in check)")
def me(request: Request, who: CurrentStore) -> Me:
    engine: Engine = request.app.state.engine
    with engine.connect() as conn:
        row = conn.execute(select(stores.c.name, stores.c.currency).where(stores.c.id == who.store_id)).first()
    if row is None:
        raise HTTPException(404, f"store {who.store_id!r} not found")
    return Me(store_id=who.store_id, store_name=row.name or who.store_id, currency=row.currency or "",
              operator=who.operator)
