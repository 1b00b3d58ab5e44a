"""Marketing consent: the store's records (authenticated) and the public unsubscribe route.

- GET /v1/consents?email=…|customer_key=… — a customer's consent history, newest first;
- POST /v1/consents — record a grant or a withdrawal (checkout checkbox, import, CRM...);
- GET /v1/consent-policy, PUT /v1/consent-policy — the store's consent policy (opt-in or
  opt-out, which sources' grants count, the checkout meta key; wooflow/consent_policy.py);
- GET /unsubscribe/{token} — the link in marketing emails: a confirmation page (a GET must
  not unsubscribe: mail scanners follow links);
- POST /unsubscribe/{token} — records the withdrawal; also the RFC 8058 one-click target
  of the `List-Unsubscribe-Post: List-Unsubscribe=One-Click` header.

The token is signed (wooflow/workers/unsubscribe.py), so nobody can unsubscribe anyone
else, and it needs no database row.
"""

from __future__ import annotations

import html
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field, model_validator
from sqlalchemy import String, or_, select, text

from wooflow.api.auth import CurrentStore
from wooflow.consent_policy import EVENT_SOURCES, ConsentPolicy, policy_of, set_policy
from wooflow.db.tables import consents
from wooflow.people import PERSON_KEYS
from wooflow.stores import StoreCache
from wooflow.workers import consent as consent_log
from wooflow.workers import unsubscribe

router = APIRouter(prefix="/v1", tags=["consent"])
public_router = APIRouter(tags=["unsubscribe"])


class ConsentIn(BaseModel):
    email: str | None = Field(None, description="Customer email")
    customer_key: str | None = Field(None, description="wooflow customer key (c<id> or g<hash>)")
    channel: Literal["email", "sms"] = "email"
    granted: bool = Field(description="true: consent given; false: withdrawn")
    source: str = Field("api", max_length=200, description="Where the answer came from (checkout, import, ...)")
    details: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _who(self) -> ConsentIn:
        if not (self.email or self.customer_key):
            raise ValueError("give an email or a customer_key")
        if self.source in EVENT_SOURCES:
            raise ValueError(f"source {self.source!r} is reserved for answers read from store events")
        return self


class ConsentRecord(BaseModel):
    id: int
    email: str | None
    customer_key: str | None
    channel: str
    granted: bool
    source: str
    details: dict[str, Any]
    recorded_at: datetime
    source_ref: str | None = Field(None, description="The event an answer was read from (order:<id>, ...)")


@router.get("/consents", response_model=list[ConsentRecord], summary="A customer's consent history")
def list_consents(request: Request, who: CurrentStore,
                  email: Annotated[str | None, Query()] = None,
                  customer_key: Annotated[str | None, Query()] = None,
                  limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[ConsentRecord]:
    if not email and not customer_key:
        raise HTTPException(422, "give email or customer_key")
    conds = []
    if email:
        conds.append(consents.c.email == consent_log.normalise_email(email))
    if customer_key:  # the person's answers, given as a guest too (wooflow/people.py)
        person = text(PERSON_KEYS).bindparams(store=who.store_id, ckey=customer_key).columns(k=String).subquery()
        conds.append(consents.c.customer_key.in_(select(person.c.k)))
    q = (select(consents).where(consents.c.store_id == who.store_id, or_(*conds))
         .order_by(consents.c.recorded_at.desc(), consents.c.id.desc()).limit(limit))
    with request.app.state.engine.connect() as conn:
        return [ConsentRecord.model_validate(dict(r._mapping)) for r in conn.execute(q)]


@router.post("/consents", response_model=ConsentRecord, status_code=201, summary="Record consent or withdrawal")
def add_consent(body: ConsentIn, request: Request, who: CurrentStore) -> ConsentRecord:
    engine = request.app.state.engine
    rid = consent_log.record(engine, who.store_id, granted=body.granted, channel=body.channel, email=body.email,
                             customer_key=body.customer_key, source=body.source, details=body.details)
    with engine.connect() as conn:
        row = conn.execute(select(consents).where(consents.c.id == rid)).one()
    return ConsentRecord.model_validate(dict(row._mapping))


@router.get("/consent-policy", response_model=ConsentPolicy, summary="The store's marketing-consent policy")
def get_policy(request: Request, who: CurrentStore) -> ConsentPolicy:
    return policy_of(StoreCache(request.app.state.engine, ttl=0).get(who.store_id))


@router.put("/consent-policy", response_model=ConsentPolicy, summary="Set the store's marketing-consent policy")
def put_policy(body: ConsentPolicy, request: Request, who: CurrentStore) -> ConsentPolicy:
    if not set_policy(request.app.state.engine, who.store_id, body):
        raise HTTPException(404, f"store {who.store_id!r} not found")
    return body


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                        "<meta name='viewport' content='width=device-width'></head>"
                        f"<body style='font-family:sans-serif;max-width:32em;margin:3em auto'>{body}</body></html>",
                        status_code=status)


def _verified(request: Request, token: str) -> tuple[Any, dict[str, Any]]:
    try:
        store_id = unsubscribe.store_of(token)
        store = StoreCache(request.app.state.engine).get(store_id)
        if store is None:
            raise unsubscribe.BadToken("unknown store")
        return store, unsubscribe.verify(request.app.state.settings, store, token)
    except unsubscribe.BadToken as exc:
        raise HTTPException(404, f"this unsubscribe link is not valid ({exc})") from exc


@public_router.get("/unsubscribe/{token}", response_class=HTMLResponse, include_in_schema=False)
def unsubscribe_page(token: str, request: Request) -> HTMLResponse:
    store, data = _verified(request, token)
    who = html.escape(data.get("e") or "this address")
    return _page("Unsubscribe", f"<h1>Unsubscribe</h1><p>Stop marketing {html.escape(data.get('c', 'email'))} "
                 f"from <b>{html.escape(store.name or store.id)}</b> to <b>{who}</b>?</p>"
                 f"<form method='post'><input type='hidden' name='List-Unsubscribe' value='One-Click'>"
                 f"<button type='submit'>Unsubscribe</button></form>")


@public_router.post("/unsubscribe/{token}", response_class=HTMLResponse,
                    summary="Withdraw marketing consent (one-click, RFC 8058)")
def unsubscribe_post(token: str, request: Request) -> HTMLResponse:
    store, data = _verified(request, token)
    consent_log.record(request.app.state.engine, store.id, granted=False, channel=data.get("c") or "email",
                       email=data.get("e"), customer_key=data.get("k"), source="unsubscribe_link",
                       details={"rule_id": data.get("r"), "issued_at": data.get("t"),
                                "user_agent": request.headers.get("user-agent", "")[:200]})
    return _page("Unsubscribed", "<h1>You are unsubscribed</h1><p>You will not receive marketing messages "
                 f"from {html.escape(store.name or store.id)} any more.</p>")
