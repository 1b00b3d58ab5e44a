"""The action registry: built-in actions plus third-party ones from the
`wooflow.actions` entry-point group (the Python equivalent of seed 002's PHP filter).

An action is an object with `name`, a pydantic `Params` model, and three coroutines:
`run(ctx)` does the effect, `dry_run(ctx)` says what `run` would do without doing it,
and `already_applied(ctx)` looks for the effect after a worker crashed between doing it
and recording it (return a result if found, None if not).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import entry_points
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel

from wooflow.stores import Store
from wooflow.workers.woo_client import WooClient

log = logging.getLogger(__name__)


@dataclass
class ActionContext:
    store: Store
    command: dict[str, Any]
    params: BaseModel
    context: dict[str, Any]  # template context: order/customer/store/...
    woo: WooClient
    claimed_at: datetime
    dry_run: bool = False
    extras: dict[str, Any] = field(default_factory=dict)  # services: smtp, sms, db, ...

    @property
    def subject_id(self) -> str:
        return str(self.command["subject_id"])


@dataclass
class ActionResult:
    status: str = "succeeded"  # succeeded | skipped | dry_run
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)


class ActionHandler(Protocol):
    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type[BaseModel]]

    async def run(self, ctx: ActionContext) -> ActionResult: ...

    async def dry_run(self, ctx: ActionContext) -> ActionResult: ...

    async def already_applied(self, ctx: ActionContext) -> ActionResult | None: ...


_REGISTRY: dict[str, ActionHandler] = {}
_loaded = False


def register(handler: ActionHandler) -> ActionHandler:
    _REGISTRY[handler.name] = handler
    return handler


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    from wooflow.workers.actions import builtin  # noqa: F401  (registers built-ins)

    for ep in entry_points(group="wooflow.actions"):
        try:
            obj = ep.load()
            handler = obj() if isinstance(obj, type) else obj
            if handler.name in _REGISTRY:
                log.warning("plugin action %s from %s overrides a built-in", handler.name, ep.value)
            register(handler)
        except Exception:  # a broken plugin must not take the workers down
            log.exception("could not load action plugin %s", ep.value)


def get(name: str) -> ActionHandler | None:
    _load()
    return _REGISTRY.get(name)


def all_actions() -> dict[str, ActionHandler]:
    _load()
    return dict(_REGISTRY)
