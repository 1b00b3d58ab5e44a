"""/v1/dlq: the dead-letter queue for operators — list, show, redrive (operator token only).

The one part of the API that reads Kafka: the letters live in automation.dlq, read with the
reader in wooflow/dlq.py (the one `wooflow dlq` uses); whether and when each was redriven is in
dlq_redrives. A redrive is a claim in dlq_redrives committed once Kafka took the message,
so the same letter redriven twice at once — a double click, two operators — goes back to
its source topic once."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import select

from wooflow import dlq
from wooflow.api.auth import Operator
from wooflow.consumer.commands import to_json
from wooflow.db.tables import dlq_redrives
from wooflow.settings import Settings

router = APIRouter(prefix="/v1/dlq", tags=["dead letters"], dependencies=[Operator])
MAX_NEWEST = 2000


class LetterOut(BaseModel):
    dlq_id: str
    partition: int = Field(description="Where the letter sits in automation.dlq")
    offset: int
    stage: str
    reason: str
    error: str
    store_id: str | None
    source_topic: str
    source_partition: int
    source_offset: int
    failed_at: datetime
    attempts: int
    redriven_at: datetime | None = Field(description="When it was put back on its source topic, if it was")


class LetterList(BaseModel):
    letters: list[LetterOut] = Field(description="Newest first")


class LetterDetail(LetterOut):
    message: dict[str, Any] | str = Field(description="The dead-lettered message, decoded when it is wooflow's")
    headers_json: str


class Redriven(BaseModel):
    redriven: bool = Field(description="True if this call put it back; false if it had been already")
    letter: LetterOut


def _redriven_at(request: Request, ids: list[str]) -> dict[str, datetime]:
    if not ids:
        return {}
    with request.app.state.engine.connect() as conn:
        rows = conn.execute(select(dlq_redrives.c.dlq_id, dlq_redrives.c.redriven_at)
                            .where(dlq_redrives.c.dlq_id.in_(ids)))
        return {r.dlq_id: r.redriven_at for r in rows}


def _out(rec: dlq.Letter, redriven: dict[str, datetime]) -> LetterOut:
    partition, _, offset = rec["dlq_offset"].partition(":")
    return LetterOut(dlq_id=rec["dlq_id"], partition=int(partition), offset=int(offset), stage=rec["stage"],
                     reason=rec["reason"], error=rec["error"], store_id=rec["store_id"],
                     source_topic=rec["source_topic"], source_partition=rec["source_partition"],
                     source_offset=rec["source_offset"], failed_at=rec["failed_at"], attempts=rec["attempts"],
                     redriven_at=redriven.get(rec["dlq_id"]))


def _settings(request: Request) -> Settings:
    s: Settings = request.app.state.settings
    return s


def _letter(request: Request, partition: int, offset: int) -> dlq.Letter:
    try:
        rec = dlq.read_at(_settings(request), partition, offset)
    except Exception as exc:  # noqa: BLE001 - Kafka unreachable: say so, do not 500
        raise HTTPException(503, f"the dead-letter topic cannot be read now: {exc}") from exc
    if rec is None:
        raise HTTPException(404, f"no dead letter at {partition}:{offset}")
    return rec


@router.get("", response_model=LetterList, summary="Recent dead letters, newest first")
def list_letters(request: Request,
                 store: Annotated[str | None, Query(description="Only this store's letters")] = None,
                 stage: Annotated[str | None, Query(description="bridge, rules, workers, sink, scheduler")] = None,
                 reason: Annotated[str | None, Query(description="e.g. max_attempts, action_error")] = None,
                 newest: Annotated[int, Query(ge=1, le=MAX_NEWEST,
                                              description="Look at this many newest letters per partition")] = 200,
                 ) -> LetterList:
    try:
        found = list(dlq.read_dlq(_settings(request), dlq.Filters(reason=reason, store=store, stage=stage),
                                  newest=newest))
    except Exception as exc:  # noqa: BLE001 - Kafka unreachable or the topic missing
        raise HTTPException(503, f"the dead-letter topic cannot be read now: {exc}") from exc
    found.sort(key=lambda r: r["failed_at"], reverse=True)
    redriven = _redriven_at(request, [r["dlq_id"] for r in found])
    return LetterList(letters=[_out(r, redriven) for r in found])


@router.get("/{partition}/{offset}", response_model=LetterDetail, summary="One dead letter and its message")
def show_letter(request: Request, partition: int, offset: int) -> LetterDetail:
    rec = _letter(request, partition, offset)
    base = _out(rec, _redriven_at(request, [rec["dlq_id"]]))
    message = dlq.describe_value(_settings(request), rec)
    return LetterDetail(**base.model_dump(), message=json.loads(to_json(message)),
                        headers_json=rec["headers_json"])


@router.post("/{partition}/{offset}/redrive", response_model=Redriven,
             summary="Put the letter back on its source topic (once: a repeat changes nothing)")
def redrive_letter(request: Request, partition: int, offset: int) -> Redriven:
    rec = _letter(request, partition, offset)
    if rec.get("value") is None:
        raise HTTPException(409, "this dead letter carries no message to redrive")
    try:
        done, _ = dlq.redrive(_settings(request), request.app.state.engine, [rec])
    except Exception as exc:  # noqa: BLE001 - Kafka did not take it: the claim was given back
        raise HTTPException(503, f"not redriven, Kafka did not acknowledge it: {exc}") from exc
    return Redriven(redriven=done == 1, letter=_out(rec, _redriven_at(request, [rec["dlq_id"]])))
