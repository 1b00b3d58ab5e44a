"""The action registry: built-in actions plus third-party ones from the
`wooflow.actions` entry-point group (the Python equivalent of Polski Pro's PHP filter).

An action is an object with `name`, a pydantic `Params` model, and three coroutines:
`run(ctx)` does the effect, `dry_run(ctx)` says what `run` would do without doing it,
and `already_applied(ctx)` looks for the effect after a worker crashed between doing it
and recording it (return a result if found, None if not). Raise
`wooflow.workers.errors.TransientError` for failures worth retrying (the worker retries
with backoff, without blocking other commands) and `ActionError` for permanent ones.

`on_interrupted` states what happens to an attempt whose worker stopped mid-action (it
died, or lost PostgreSQL for longer than the lease) when `already_applied` does not find
the effect:
- "repeat": run again whenever `already_applied` does not find the effect — for effects
  it always finds (coupon by its code, order note, status, meta) and for effects that
  are harmless twice (an idempotent write); after WOOFLOW_ACTION_MAX_ATTEMPTS interrupted
  attempts the command is dead-lettered all the same (it may be what stops its workers);
- "repeat_once" (the default): the effect cannot be looked up (an email, an SMS, a
  request to someone else's server): run once more, with the same idempotency key for
  the receiver to drop the copy (`ctx.idempotency_key`; email Message-ID, webhook
  `Idempotency-Key`, SMS reference); a second interrupted attempt is dead-lettered;
- "at_most_once": never run again after an interrupted attempt: dead-lettered with the
  reason (for effects worse twice than never).

Actions whose whole effect is a PostgreSQL write (points, tier, tasks, tags) implement
`apply_batch(conn, ctxs)` instead of `run`: the worker calls it for many commands in one
transaction that also records them as finished, so the effect and its idempotency record
commit together — exactly once even across crashes. (Their results go to the execution
log; the idempotency row keeps only the status.)

A third-party package registers an action in its pyproject.toml:

    [project.entry-points."wooflow.actions"]
    freshmail_subscribe = "my_package.actions:FreshmailSubscribe"

and subclasses `BaseAction` (see examples/wooflow-example-action/).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, Protocol, TypeVar, get_args

from pydantic import BaseModel
from sqlalchemy import Connection

from wooflow.jsontypes import JSONObject, as_object
from wooflow.schemas.types import ActionCommand
from wooflow.stores import Store
from wooflow.workers.woo_client import WooClient

if TYPE_CHECKING:
    from wooflow.workers.netguard import SafeHttp
    from wooflow.workers.services import Services

log = logging.getLogger(__name__)

P = TypeVar("P", bound=BaseModel)  # an action's validated params (its `Params` model)


class ActionContext(Generic[P]):
    """Everything an action needs for one command; `params` is the action's own `Params`.

    `context` is what templates see: the trigger's snapshot (order/customer/...) plus the
    store, a `customer` derived from the order, and what earlier steps of the same run
    handed on (`steps`, and e.g. `coupon` from apply_coupon). It is built on first use
    from `context_json`, so actions that render nothing never pay for parsing it.
    """

    def __init__(self, store: Store, command: ActionCommand, params: P,
                 context: JSONObject | None = None, woo: WooClient | None = None,
                 claimed_at: datetime | None = None, dry_run: bool = False,
                 extras: dict[str, object] | None = None, *, services: Services | None = None,
                 steps: dict[int, JSONObject] | None = None, context_json: str | None = None) -> None:
        self.store = store
        self.command = command
        self.params = params
        self._woo = woo
        self.claimed_at = claimed_at or datetime.now().astimezone()
        self.dry_run = dry_run
        self.extras = extras if extras is not None else {}
        self.services = services
        self.steps = steps or {}
        self.context_json = context_json if context_json is not None else command.get("context_json") or "{}"
        self._context = context

    @property
    def woo(self) -> WooClient:
        """The store's WooCommerce REST client."""
        if self._woo is None:
            raise RuntimeError("no WooCommerce client attached to this action context")
        return self._woo

    @property
    def subject_id(self) -> str:
        return str(self.command["subject_id"])

    @property
    def idempotency_key(self) -> str:
        return str(self.command["idempotency_key"])

    @property
    def context(self) -> JSONObject:
        if self._context is None:
            self._context = build_template_context(self)
        return self._context

    @context.setter
    def context(self, value: JSONObject) -> None:
        self._context = value

    @property
    def http(self) -> SafeHttp:
        """The egress-guarded HTTP client (workers/netguard.py) for actions calling out."""
        if self.services is None:
            raise RuntimeError("no services attached to this action context")
        return self.services.http


def build_template_context(ctx: ActionContext[Any]) -> JSONObject:
    try:
        base = as_object(json.loads(ctx.context_json or "{}"))
    except ValueError:
        base = {}
    s = ctx.store
    base["store"] = {"id": s.id, "name": s.name or s.id, "url": s.url, "currency": s.currency,
                     "timezone": s.timezone}
    order = base.get("order") if isinstance(base.get("order"), dict) else None
    if not isinstance(base.get("customer"), dict) and isinstance(order, dict):
        billing = as_object(order.get("billing"))
        base["customer"] = {"id": order.get("customer_id") or 0, "email": billing.get("email", ""),
                            "first_name": billing.get("first_name", ""), "last_name": billing.get("last_name", ""),
                            "phone": billing.get("phone", ""), "billing": billing}
    base.setdefault("customer_key", ctx.command.get("customer_key"))
    base.setdefault("rule_id", ctx.command.get("rule_id"))
    base.setdefault("trigger", ctx.command.get("trigger"))
    steps: JSONObject = {}
    for step in sorted(ctx.steps):
        result = ctx.steps[step]
        steps[str(step)] = result
        # An earlier step can hand values to later templates, e.g. apply_coupon → {{ coupon.code }}.
        for k, v in as_object(result.get("template_vars")).items():
            base[k] = v
    base["steps"] = steps
    return base


@dataclass
class ActionResult:
    status: str = "succeeded"  # succeeded | skipped | dry_run
    message: str = ""
    details: JSONObject = field(default_factory=dict)


InterruptPolicy = Literal["repeat", "repeat_once", "at_most_once"]
INTERRUPT_POLICIES: tuple[str, ...] = get_args(InterruptPolicy)


def interrupt_policy(handler: object) -> str:
    """The handler's `on_interrupted` (see module doc); "repeat_once" when it declares none."""
    return str(getattr(handler, "on_interrupted", "repeat_once"))


class ActionHandler(Protocol[P]):
    """What the workers call; `BaseAction` is the convenient way to be one."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def Params(self) -> type[P]: ...  # noqa: N802 - the model class, named like one

    async def run(self, ctx: ActionContext[P]) -> ActionResult: ...

    async def dry_run(self, ctx: ActionContext[P]) -> ActionResult: ...

    async def already_applied(self, ctx: ActionContext[P]) -> ActionResult | None: ...


# A registered handler, whatever its params (each is called with contexts of its own `Params`).
AnyHandler = ActionHandler[Any]
# `apply_batch(conn, ctxs)` of a local-state action (see the module doc).
ApplyBatch = Callable[[Connection, list[ActionContext[Any]]], list["ActionResult | Exception"]]


def batch_applier(handler: AnyHandler) -> ApplyBatch | None:
    """The handler's `apply_batch`, if it is a local-state action."""
    fn: ApplyBatch | None = getattr(handler, "apply_batch", None)
    return fn


class BaseAction(Generic[P]):
    """Convenient defaults for an action: no recovery check, so an interrupted attempt is
    repeated once (`on_interrupted`, see the module doc). Subclass it with the params
    model, `class Mine(BaseAction["Mine.Params"])`, and `ctx.params` is a `Mine.Params`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Params: type[P]
    timeout_s: ClassVar[float | None] = None  # None: the worker's action_timeout_s
    on_interrupted: ClassVar[InterruptPolicy] = "repeat_once"

    async def run(self, ctx: ActionContext[P]) -> ActionResult:
        raise NotImplementedError

    async def dry_run(self, ctx: ActionContext[P]) -> ActionResult:
        return ActionResult("dry_run", f"would run {self.name}", {"params": ctx.params.model_dump(mode="json")})

    async def already_applied(self, ctx: ActionContext[P]) -> ActionResult | None:
        return None


_REGISTRY: dict[str, AnyHandler] = {}
_loaded = False
_loading = False
# The API asks from several request threads at once (the console loads /v1/schema and saves
# a rule together): a thread arriving while another loads waits for the whole registry,
# instead of seeing it half-filled (an empty action list, an "unknown action").
_load_lock = threading.RLock()


def register(handler: AnyHandler) -> AnyHandler:
    _REGISTRY[handler.name] = handler
    return handler


def _load() -> None:
    global _loaded, _loading
    if _loaded:
        return
    with _load_lock:
        if _loaded or _loading:  # loaded meanwhile, or asked again while this thread loads
            return
        _loading = True
        try:
            _load_all()
        finally:
            _loaded, _loading = True, False


def _load_all() -> None:
    from wooflow.workers.actions import builtin  # noqa: F401  (registers built-ins)

    for ep in entry_points(group="wooflow.actions"):
        try:
            obj = ep.load()
            handler = obj() if isinstance(obj, type) else obj
            for attr in ("name", "Params", "run", "dry_run"):
                if not getattr(handler, attr, None):
                    raise TypeError(f"an action needs `{attr}`")
            if interrupt_policy(handler) not in INTERRUPT_POLICIES:
                raise TypeError(f"on_interrupted must be one of {', '.join(INTERRUPT_POLICIES)}, "
                                f"not {interrupt_policy(handler)!r}")
            if not hasattr(handler, "already_applied"):
                handler.already_applied = BaseAction.already_applied.__get__(handler)
            if handler.name in _REGISTRY:
                log.warning("plugin action %s from %s overrides a built-in", handler.name, ep.value)
            register(handler)
            log.info("loaded action plugin %s from %s", handler.name, ep.value)
        except Exception:  # a broken plugin must not take the workers down
            log.exception("could not load action plugin %s", ep.value)


def get(name: str) -> AnyHandler | None:
    _load()
    return _REGISTRY.get(name)


def all_actions() -> dict[str, AnyHandler]:
    _load()
    return dict(_REGISTRY)


@dataclass(frozen=True)
class StepProblem:
    """Something wrong with one action step of a rule, against this registry."""

    loc: tuple[str | int, ...]  # ("actions", 1, "yes", "steps", 0, "params", "subject")
    message: str
    type: str = "value_error"


def step_problems(steps: Sequence[Any]) -> list[StepProblem]:
    """Every action of a workflow (both sides of its branches, each A/B variant's params laid
    over the step's) checked against the registry: the type exists, the params fit."""
    from pydantic import ValidationError

    from wooflow.consumer.workflow import action_steps

    out: list[StepProblem] = []
    for loc, action in action_steps(steps):
        handler = get(action.type)
        if handler is None:
            out.append(StepProblem((*loc, "type"), f"unknown action {action.type!r}; one of {sorted(all_actions())}"))
            continue
        tries: list[tuple[tuple[str | int, ...], dict[str, Any]]] = [((*loc, "params"), action.params)]
        tries += [((*loc, "variants", j, "params"), action.variant_params(v.name))
                  for j, v in enumerate(action.variants or ())]
        for where, params in tries:
            try:
                handler.Params.model_validate(params)
            except ValidationError as exc:
                out.extend(StepProblem((*where, *e.get("loc", ())), e.get("msg", "invalid"), e.get("type", ""))
                           for e in exc.errors())
    return out
