"""/v1/templates: the workflow templates wooflow ships (welcome series, cart recovery, VIP
upgrade, win-back, birthday, card expiry) and installing one as a rule of the caller's store."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from wooflow.api.auth import CurrentStore
from wooflow.scheduler.templates import TemplateError, get_template, install, load_templates

router = APIRouter(prefix="/v1/templates", tags=["templates"])


class TemplateStep(BaseModel):
    delay: str
    type: str


class TemplateSummary(BaseModel):
    name: str
    title: str
    description: str
    trigger: str
    trigger_options: dict[str, Any]
    exit_conditions: list[dict[str, Any]]
    steps: list[TemplateStep]


class TemplateDetail(TemplateSummary):
    rule: dict[str, Any] = Field(description="The rule it installs (same shape as POST /v1/rules)")


class TemplateList(BaseModel):
    templates: list[TemplateSummary]


class InstallRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, min_length=1, max_length=200, description="Rule name (default: the template's)")
    enabled: bool = Field(True, description="Create the rule enabled")
    trigger_options: dict[str, Any] | None = Field(None, description="Replace the template's trigger options")
    group_label: str | None = Field(None, max_length=200, description="Replace the template's group label")


class Installed(BaseModel):
    rule_id: int
    template: str
    store_id: str


@router.get("", response_model=TemplateList, summary="List the shipped workflow templates")
def list_templates(_who: CurrentStore) -> TemplateList:
    return TemplateList(templates=[TemplateSummary.model_validate(t.summary()) for t in load_templates().values()])


@router.get("/{name}", response_model=TemplateDetail, summary="One template, with the rule it installs")
def get_one(name: str, _who: CurrentStore) -> TemplateDetail:
    try:
        t = get_template(name)
    except TemplateError as exc:
        raise HTTPException(404, str(exc)) from exc
    return TemplateDetail.model_validate({**t.summary(), "rule": t.rule})


@router.post("/{name}/install", response_model=Installed, status_code=201,
             summary="Create a rule from a template for the caller's store")
def install_template(name: str, request: Request, who: CurrentStore,
                     body: Annotated[InstallRequest | None, Body()] = None) -> Installed:
    body = body or InstallRequest.model_validate({})
    try:
        get_template(name)
    except TemplateError as exc:
        raise HTTPException(404, str(exc)) from exc
    try:
        rule_id = install(request.app.state.engine, who.store_id, name, rule_name=body.name, enabled=body.enabled,
                          trigger_options=body.trigger_options, group_label=body.group_label,
                          actor="api:template")
    except TemplateError as exc:
        raise HTTPException(422, str(exc)) from exc
    return Installed(rule_id=rule_id, template=name, store_id=who.store_id)
