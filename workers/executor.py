"""Executes one command: claim its key, run its action, record the outcome.

Each command ends in at most one effect and one execution log per attempt:
- not due yet (`not_before` in the future) → put aside in PostgreSQL (workers/deferred.py);
- an earlier step of the same run still in progress → put aside briefly (steps stay in order);
- key finished before → no effect; its log is re-emitted with the same log id (idempotent);
- key held by a live worker → put aside until its lease ends (a live worker renews it:
  workers/leases.py, which also cancels an action whose lease it can no longer vouch for);
- key whose worker stopped mid-action → `already_applied` looks for the effect; if not
  found, the action's `on_interrupted` policy decides: run again ("repeat"), run once
  more ("repeat_once"), or never again ("at_most_once") — what is not run again is
  `dead_lettered` with the reason;
- run: succeeded / skipped → finished; TransientError or timeout → the next attempt is put
  aside with exponential backoff and jitter (status `retrying`), until the last attempt,
  which goes to automation.dlq (`dead_lettered`); ActionError → `failed` + DLQ.

Everything that touches PostgreSQL goes through a Batcher, so hundreds of concurrent
commands share a handful of round trips.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from confluent_kafka import Message
from pydantic import BaseModel, ValidationError
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from wooflow import metrics
from wooflow.consumer.commands import idempotency_key
from wooflow.db.engine import unavailable
from wooflow.jsontypes import JSONObject
from wooflow.schemas.codec import Codec
from wooflow.schemas.types import ActionCommand, ExecutionLog
from wooflow.settings import Settings
from wooflow.stores import StoreCache
from wooflow.workers import claims, deferred, registry
from wooflow.workers.batching import Batcher
from wooflow.workers.claims import Claim, Finish
from wooflow.workers.deferred import Deferral
from wooflow.workers.errors import ActionError, TransientError
from wooflow.workers.leases import LeaseKeeper
from wooflow.workers.registry import ActionContext, ActionResult, AnyHandler, batch_applier, interrupt_policy
from wooflow.workers.services import Services
from wooflow.workers.woo_client import WooClients

log = logging.getLogger(__name__)

DUE_TOLERANCE = timedelta(milliseconds=50)
DB_RETRY_FIRST_S, DB_RETRY_MAX_S = 0.5, 5.0
WAIT_FOR_EARLIER_STEP = timedelta(seconds=1)
NOT_FINAL = ("running", "retry_wait")


_CHILDREN: dict[tuple[Any, ...], Any] = {}


def count(metric: Any, *labels: str, n: float = 1) -> None:
    """metric.labels(*labels).inc(n), with the labelled child cached (labels() costs ~10 µs)."""
    key = (id(metric), *labels)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = metric.labels(*labels)
    child.inc(n)


# Outcomes the error-ratio alert and the panels read as failures, exported at 0 for a (store,
# action) from its first count: a counter series whose first sample already holds a burst of
# failures (commands queued during an outage, run at once) shows Prometheus no increase.
_FAILURE_OUTCOMES = ("failed", "dead_lettered")
_COUNTED_PAIRS: set[tuple[str, str]] = set()


def count_action(store: str, action: str, outcome: str) -> None:
    """`wooflow_actions_total{store, action, outcome}` + 1; the pair's failure outcomes exist from its first count."""
    if (store, action) not in _COUNTED_PAIRS:
        _COUNTED_PAIRS.add((store, action))
        for failure in _FAILURE_OUTCOMES:
            count(metrics.actions, store, action, failure, n=0)
    count(metrics.actions, store, action, outcome)


def log_record(cmd: ActionCommand, status: str, message: str, *, attempt: int, duration_s: float,
               details: JSONObject | None = None) -> ExecutionLog:
    return {
        "log_id": f"{cmd['idempotency_key']}:{attempt}:{status}",
        "idempotency_key": cmd["idempotency_key"],
        "store_id": cmd["store_id"],
        "customer_key": cmd["customer_key"],
        "rule_id": cmd["rule_id"],
        "event_id": cmd["event_id"],
        "step": cmd["step"],
        "action_type": cmd["action_type"],
        "status": status,
        "message": message[:2000],
        "attempt": attempt,
        "duration_ms": duration_s * 1000.0,
        "executed_at": datetime.now(timezone.utc),
        "received_at": cmd.get("received_at"),
        "details_json": json.dumps(details or {}, default=str),
        "dry_run": bool(cmd.get("dry_run")),
    }


@dataclass
class Outcome:
    """What executing one command produced: maybe a log record, maybe a dead-letter reason."""

    cmd: ActionCommand
    log: ExecutionLog | None = None
    dlq_reason: str | None = None


async def _within(seconds: float, coro: Any) -> Any:
    """`await coro` with a deadline (asyncio.timeout: no extra task per command, unlike wait_for)."""
    async with asyncio.timeout(seconds):
        return await coro


def backoff_s(attempt: int, base: float, cap: float) -> float:
    """Delay before attempt `attempt + 1`: exponential, capped, with "equal jitter" (never ~0)."""
    d = min(cap, base * 2 ** (attempt - 1))
    return d / 2 + random.uniform(0, d / 2)


class Executor:
    def __init__(self, settings: Settings, engine: Engine, stores: StoreCache, clients: WooClients,
                 services: Services, codec: Codec, commands_topic: str, leases: LeaseKeeper) -> None:
        self.settings = settings
        self.leases = leases
        self.engine = engine
        self.clients = clients
        self.services = services
        self.codec = codec
        self.commands_topic = commands_topic
        self.stores = stores
        pool = services.db_executor
        lease = settings.action_lease_s
        # Every database batch waits for PostgreSQL when it is away (restarting, failing over):
        # a command is never given up, or dead-lettered, because the database blinked.
        self.claimer: Batcher[ActionCommand, Claim] = Batcher(
            lambda cmds: self._claim(cmds, lease), executor=pool, name="claim", retry_while=unavailable)
        self.finisher: Batcher[Finish, None] = Batcher(lambda rows: claims.finish_batch(engine, rows),
                                                       executor=pool, name="finish", retry_while=unavailable)
        self.deferrer: Batcher[Deferral, None] = Batcher(lambda items: deferred.defer_batch(engine, items),
                                                         executor=pool, name="defer", retry_while=unavailable)
        self.stepper: Batcher[list[str], dict[str, tuple[int, str, JSONObject]]] = Batcher(
            self._steps, executor=pool, name="steps", retry_while=unavailable)
        self.local: Batcher[tuple[AnyHandler, ActionContext[Any], int], ActionResult | Claim] = Batcher(
            self._apply_local, executor=pool, name="local", retry_while=unavailable)
        self._params: dict[tuple[str, str], BaseModel] = {}

    # --- database batches (run on the database threads) ---------------------------------
    def _claim(self, cmds: list[ActionCommand], lease: float) -> list[Claim]:
        got = claims.claim_batch(self.engine, cmds, lease, owner=self.leases.owner)
        return [got[c["idempotency_key"]] for c in cmds]

    def _steps(self, requests: list[list[str]]) -> list[dict[str, tuple[int, str, JSONObject]]]:
        rows = claims.step_rows(self.engine, [k for keys in requests for k in keys])
        return [{k: rows[k] for k in keys if k in rows} for keys in requests]

    def _apply_local(self, items: list[tuple[AnyHandler, ActionContext[Any], int]]
                     ) -> list[ActionResult | Claim | Exception]:
        """Local-state actions: claim + effect in one transaction (exactly once, even across
        crashes). An item answers its ActionResult, the Claim of an earlier execution
        (a duplicate), or the exception that failed it."""
        try:
            with self.engine.begin() as conn:
                fresh, seen = claims.claim_final(conn, [ctx.command for _, ctx, _ in items])
                results: list[ActionResult | Claim | Exception] = [
                    seen.get(ctx.idempotency_key, ActionError("not applied")) for _, ctx, _ in items]
                groups: dict[str, list[int]] = {}
                for i, (handler, ctx, _) in enumerate(items):
                    if ctx.idempotency_key in fresh:
                        groups.setdefault(handler.name, []).append(i)
                for idxs in groups.values():
                    apply = batch_applier(items[idxs[0]][0])
                    assert apply is not None  # only local-state actions come here
                    out = apply(conn, [items[i][1] for i in idxs])
                    for i, res in zip(idxs, out, strict=True):
                        results[i] = res
                claims.unclaim(conn, [items[i][1].idempotency_key for idxs in groups.values() for i in idxs
                                      if isinstance(results[i], Exception)])
            return results
        except Exception as exc:
            if unavailable(exc):
                raise  # the whole batch again once PostgreSQL answers (the Batcher waits)
            if len(items) > 1:
                # One bad item must not fail its neighbours: isolate.
                return [self._apply_local([item])[0] for item in items]
            if isinstance(exc, DBAPIError):
                return [ActionError(f"database refused: {str(exc).splitlines()[0]}")]
            return [exc]

    # --- one command ------------------------------------------------------------------
    async def execute(self, cmd: ActionCommand, msg: Message | None) -> Outcome:
        started = time.perf_counter()
        pause = DB_RETRY_FIRST_S
        while True:
            try:
                return await self._execute(cmd, msg, started)
            except Exception as exc:
                if not unavailable(exc):
                    return self._internal_error(cmd, exc, started)
                # PostgreSQL away before the effect (the batches after it wait by themselves):
                # the command waits too, and starts over — its claim, if taken, is recovered.
                log.warning("%s waits for the database: %s", cmd.get("idempotency_key"),
                            str(exc).splitlines()[0][:200])
                await asyncio.sleep(pause)
                pause = min(pause * 2, DB_RETRY_MAX_S)

    def _internal_error(self, cmd: ActionCommand, exc: Exception, started: float) -> Outcome:
        """A bug met by one command: dead-lettered with the reason, never taking the worker down."""
        log.exception("unexpected error executing %s", cmd.get("idempotency_key"), exc_info=exc)
        return Outcome(cmd, log_record(cmd, "failed", f"internal error: {type(exc).__name__}: {exc}",
                                       attempt=int(cmd.get("attempt") or 1),
                                       duration_s=time.perf_counter() - started), "internal_error")

    async def _execute(self, cmd: ActionCommand, msg: Message | None, started: float) -> Outcome:
        handler = registry.get(cmd["action_type"])
        attempt = int(cmd.get("attempt") or 1)
        store, action = cmd["store_id"], cmd["action_type"]
        if handler is None:
            count_action(store, action, "failed")
            return Outcome(cmd, log_record(cmd, "failed", f"unknown action type {action!r}", attempt=attempt,
                                           duration_s=0), "unknown_action")
        now = datetime.now(timezone.utc)
        dry = bool(cmd.get("dry_run"))
        not_before = cmd.get("not_before")
        if not dry and not_before is not None and not_before > now + DUE_TOLERANCE:
            await self._defer(cmd, msg, not_before, "delayed")
            return Outcome(cmd)

        steps: dict[int, JSONObject] = {}
        if int(cmd["step"]) > 0:
            earlier = await self._earlier_steps(cmd)
            if not dry and any(status in NOT_FINAL for _, status, _ in earlier.values()):
                # Step N waits for step N-1 still being retried or recovered (it may hand it a coupon).
                await self._defer(cmd, msg, now + WAIT_FOR_EARLIER_STEP, "waiting")
                return Outcome(cmd)
            steps = {step: result for step, status, result in earlier.values() if status == "succeeded"}

        if dry:
            return await self._dry_run(cmd, handler, steps, started)
        if batch_applier(handler) is not None:
            return await self._execute_local(cmd, msg, handler, steps, attempt, started, now)

        sent = time.monotonic()
        if self.leases.lapsed:  # this worker is stopping: claim nothing more
            raise asyncio.CancelledError(self.leases.lapsed)
        claim = await self.claimer.submit(cmd)
        if claim.outcome != "claimed" and claim.outcome != "recover":
            return await self._not_mine(cmd, msg, claim, now)
        with self.leases.holding(cmd["idempotency_key"], sent):
            return await self._run_claimed(cmd, msg, handler, claim, steps, started, now)

    async def _run_claimed(self, cmd: ActionCommand, msg: Message | None, handler: AnyHandler, claim: Claim,
                           steps: dict[int, JSONObject], started: float, now: datetime) -> Outcome:
        attempt = int(cmd.get("attempt") or 1)
        store, action = cmd["store_id"], cmd["action_type"]
        try:
            ctx = await self._context(cmd, handler, claim.claimed_at or now, steps)
            if claim.outcome == "recover":
                found = await _within(self._timeout(handler), handler.already_applied(ctx))
                if found is not None:
                    found.details.setdefault("recovered", True)
                    return await self._finish_ok(cmd, found, attempt, started)
                refusal = self._not_again(handler, claim.interrupted)
                if refusal is not None:
                    return await self._dead_letter(cmd, attempt, refusal, started, "interrupted")
            res = await _within(self._timeout(handler), handler.run(ctx))
            if claim.interrupted:
                res.details.setdefault("interrupted_attempts", claim.interrupted)
            return await self._finish_ok(cmd, res, attempt, started)
        except (TimeoutError, TransientError) as exc:
            reason = str(exc) or f"timed out after {self._timeout(handler):g}s"
            return await self._transient(cmd, msg, attempt, reason, started)
        except ActionError as exc:
            count_action(store, action, "failed")
            message = str(exc)
            await self.finisher.submit(Finish(cmd["idempotency_key"], "failed", {}, message, message, attempt))
            return Outcome(cmd, log_record(cmd, "failed", message, attempt=attempt,
                                           duration_s=time.perf_counter() - started), "action_error")

    def bulk_eligible(self, cmd: ActionCommand, now: datetime) -> bool:
        """A plain local-state command (no earlier step, no retry, due, no outside step) can skip
        the per-command path and join one bulk transaction (execute_bulk)."""
        handler = registry.get(cmd["action_type"])
        not_before = cmd.get("not_before")
        if not (handler is not None and batch_applier(handler) is not None and not cmd.get("dry_run")
                and int(cmd["step"]) == 0 and int(cmd.get("attempt") or 1) == 1
                and (not_before is None or not_before <= now + DUE_TOLERANCE)):
            return False
        if getattr(handler, "prepare", None) is None:
            return True
        needs = getattr(handler, "needs_prepare", None)
        try:
            return needs is not None and not needs(cmd, self._validated(handler, cmd["params_json"]))
        except ActionError:
            return False

    async def execute_bulk(self, batch: list[tuple[ActionCommand, Message | None]]) -> list[Outcome]:
        """Many local-state commands in one transaction, without a coroutine each: the hot path
        of points/tier/task commands. Anything unusual falls back to `execute`."""
        started = time.perf_counter()
        now = datetime.now(timezone.utc)
        outcomes: list[Outcome | None] = [None] * len(batch)
        work: list[tuple[int, tuple[AnyHandler, ActionContext[Any], int]]] = []
        for i, (cmd, _msg) in enumerate(batch):
            handler = registry.get(cmd["action_type"])
            try:
                assert handler is not None
                work.append((i, (handler, await self._context(cmd, handler, now, {}), 1)))
            except (ActionError, AssertionError):
                pass  # left None: the normal path reports it
        if work:
            loop = asyncio.get_running_loop()
            results = await loop.run_in_executor(self.services.db_executor, self._apply_local, [w for _, w in work])
            for (i, _), res in zip(work, results, strict=True):
                cmd = batch[i][0]
                if isinstance(res, ActionResult):
                    outcomes[i] = self._succeeded(cmd, res, 1, started, finished=True)
                elif isinstance(res, Claim) and res.outcome in ("done", "stale"):
                    outcomes[i] = await self._not_mine(cmd, batch[i][1], res, now)
        rest = [i for i, o in enumerate(outcomes) if o is None]
        if rest:
            again = await asyncio.gather(*(self.execute(*batch[i]) for i in rest))
            for i, o in zip(rest, again, strict=True):
                outcomes[i] = o
        return [o for o in outcomes if o is not None]  # every one is set by now

    async def _not_mine(self, cmd: ActionCommand, msg: Message | None, claim: Claim, now: datetime) -> Outcome:
        """The key was executed before, or is being executed elsewhere."""
        store, action = cmd["store_id"], cmd["action_type"]
        if claim.outcome == "done":
            count_action(store, action, "duplicate")
            # Same log id as the original: the sink keeps one row, a log lost in a crash reappears.
            return Outcome(cmd, log_record(cmd, claim.status, claim.message or f"{claim.status} earlier",
                                           attempt=claim.attempts, duration_s=0, details=claim.result))
        if claim.outcome == "stale":
            count_action(store, action, "duplicate")
            return Outcome(cmd)
        # busy: another worker holds the lease (a rebalance, or it died): look again when it ends.
        lease_end = claim.lease_until or now
        await self._defer(cmd, msg, max(lease_end, now) + timedelta(milliseconds=200), "busy")
        return Outcome(cmd)

    async def _execute_local(self, cmd: ActionCommand, msg: Message | None, handler: AnyHandler,
                             steps: dict[int, JSONObject], attempt: int, started: float,
                             now: datetime) -> Outcome:
        try:
            ctx = await self._context(cmd, handler, now, steps)
            prepare = getattr(handler, "prepare", None)
            if prepare is not None:  # an idempotent outside step first (e.g. mirroring tags)
                await _within(self._timeout(handler), prepare(ctx))
            res = await self.local.submit((handler, ctx, attempt))
            if isinstance(res, Claim):
                return await self._not_mine(cmd, msg, res, now)
            return self._succeeded(cmd, res, attempt, started, finished=True)
        except (TimeoutError, TransientError, ActionError) as exc:
            # Rare: give the failure a claim row of its own, then the normal failure path.
            claim = await self.claimer.submit(cmd)
            if claim.outcome != "claimed" and claim.outcome != "recover":
                return await self._not_mine(cmd, msg, claim, now)
            if isinstance(exc, ActionError):
                count_action(cmd["store_id"], cmd["action_type"], "failed")
                await self.finisher.submit(Finish(cmd["idempotency_key"], "failed", {}, str(exc), str(exc), attempt))
                return Outcome(cmd, log_record(cmd, "failed", str(exc), attempt=attempt,
                                               duration_s=time.perf_counter() - started), "action_error")
            reason = str(exc) or f"timed out after {self._timeout(handler):g}s"
            return await self._transient(cmd, msg, attempt, reason, started)

    def _not_again(self, handler: AnyHandler, interrupted: int) -> str | None:
        """Why an action whose effect was not found must not run again after `interrupted`
        interrupted attempts (None: it may)."""
        policy, name = interrupt_policy(handler), handler.name
        if policy == "at_most_once" and interrupted >= 1:
            return (f"an attempt was interrupted (its worker stopped mid-action) and {name} runs at most once: "
                    "not repeated")
        if policy == "repeat_once" and interrupted >= 2:
            return (f"interrupted twice mid-action: {name}'s effect cannot be looked up, so it is not run a "
                    "third time")
        if interrupted >= self.settings.action_max_attempts:
            return f"interrupted {interrupted} times mid-action: giving up"
        return None

    def _timeout(self, handler: AnyHandler) -> float:
        return float(getattr(handler, "timeout_s", None) or self.settings.action_timeout_s)

    async def _earlier_steps(self, cmd: ActionCommand) -> dict[str, tuple[int, str, JSONObject]]:
        keys = [idempotency_key(int(cmd["rule_id"]), cmd["event_id"], s) for s in range(int(cmd["step"]))]
        return await self.stepper.submit(keys)

    async def _dry_run(self, cmd: ActionCommand, handler: AnyHandler, steps: dict[int, JSONObject],
                       started: float) -> Outcome:
        attempt = int(cmd.get("attempt") or 1)
        try:
            ctx = await self._context(cmd, handler, datetime.now(timezone.utc), steps)
            res = await _within(self._timeout(handler), handler.dry_run(ctx))
            status, message, details = "dry_run", res.message, res.details
        except (TimeoutError, ActionError, TransientError) as exc:
            status, message, details = "failed", f"dry run: {exc}", {}
        count_action(cmd["store_id"], cmd["action_type"], status)
        return Outcome(cmd, log_record(cmd, status, message, attempt=attempt, duration_s=time.perf_counter() - started,
                                       details=details))

    async def _context(self, cmd: ActionCommand, handler: AnyHandler, claimed_at: datetime,
                       steps: dict[int, JSONObject]) -> ActionContext:
        store = await self.stores.aget(cmd["store_id"])
        if store is None:
            raise ActionError(f"store {cmd['store_id']!r} is not registered")
        return ActionContext(store=store, command=cmd, params=self._validated(handler, cmd["params_json"]),
                             woo=self.clients.for_store(store), claimed_at=claimed_at,
                             dry_run=bool(cmd.get("dry_run")), extras=self.services.extras, services=self.services,
                             steps=steps, context_json=cmd.get("context_json") or "{}")

    def _validated(self, handler: AnyHandler, params_json: str) -> BaseModel:
        # One rule's commands all carry the same params: validate each distinct text once.
        key = (handler.name, params_json or "{}")
        hit = self._params.get(key)
        if hit is not None:
            return hit
        try:
            params = handler.Params.model_validate(json.loads(params_json or "{}"))
        except (ValidationError, ValueError) as exc:
            raise ActionError(f"invalid params for {handler.name}: {exc}") from exc
        if len(self._params) > 4096:
            self._params.clear()
        self._params[key] = params
        return params

    async def _finish_ok(self, cmd: ActionCommand, res: ActionResult, attempt: int, started: float) -> Outcome:
        status = res.status if res.status in ("succeeded", "skipped") else "succeeded"
        await self.finisher.submit(Finish(cmd["idempotency_key"], status, res.details, res.message, None, attempt))
        return self._succeeded(cmd, res, attempt, started, finished=True)

    def _succeeded(self, cmd: ActionCommand, res: ActionResult, attempt: int, started: float,
                   finished: bool) -> Outcome:
        count_action(cmd["store_id"], cmd["action_type"], res.status)
        received = cmd.get("received_at")
        if received:
            metrics.end_to_end_seconds.observe((datetime.now(timezone.utc) - received).total_seconds())
        return Outcome(cmd, log_record(cmd, res.status, res.message, attempt=attempt,
                                       duration_s=time.perf_counter() - started, details=res.details))

    async def _transient(self, cmd: ActionCommand, msg: Message | None, attempt: int, reason: str,
                         started: float) -> Outcome:
        store, action = cmd["store_id"], cmd["action_type"]
        duration = time.perf_counter() - started
        if attempt >= self.settings.action_max_attempts:
            return await self._dead_letter(cmd, attempt, f"gave up after {attempt} attempts: {reason}", started,
                                           "max_attempts")
        delay = backoff_s(attempt, self.settings.action_retry_base_s, self.settings.action_retry_max_s)
        due = datetime.now(timezone.utc) + timedelta(seconds=delay)
        count(metrics.action_retries, action)
        count_action(store, action, "retrying")
        await self._defer(cmd, msg, due, "retry", next_attempt=attempt + 1, error=reason)
        return Outcome(cmd, log_record(cmd, "retrying", f"attempt {attempt} of {self.settings.action_max_attempts} "
                                       f"failed, next in {delay:.1f}s: {reason}", attempt=attempt, duration_s=duration,
                                       details={"next_attempt_at": due.isoformat()}))

    async def _dead_letter(self, cmd: ActionCommand, attempt: int, message: str, started: float,
                           reason: str) -> Outcome:
        count_action(cmd["store_id"], cmd["action_type"], "dead_lettered")
        await self.finisher.submit(Finish(cmd["idempotency_key"], "dead_lettered", {}, message, message, attempt))
        return Outcome(cmd, log_record(cmd, "dead_lettered", message, attempt=attempt,
                                       duration_s=time.perf_counter() - started), reason)

    async def _defer(self, cmd: ActionCommand, msg: Message | None, due: datetime, reason: str, *,
                     next_attempt: int | None = None, error: str | None = None) -> None:
        # the command as it came (not_before included), unless it changes
        payload = msg.value() if next_attempt is None and msg is not None else None
        if payload is None:
            again: ActionCommand = {**cmd, "attempt": next_attempt or cmd.get("attempt") or 1, "not_before": due}
            payload = self.codec.encode("ActionCommand", again, self.commands_topic)
        kafka_key = msg.key() if msg is not None else f"{cmd['store_id']}:{cmd['customer_key']}".encode()
        if isinstance(kafka_key, str):
            kafka_key = kafka_key.encode()
        count_action(cmd["store_id"], cmd["action_type"], "deferred")
        await self.deferrer.submit(Deferral(self.commands_topic, cmd["idempotency_key"],
                                            next_attempt or int(cmd.get("attempt") or 1),
                                            cmd["store_id"], due, reason, kafka_key, payload,
                                            failed_attempt_error=error if next_attempt is not None else None))


def outcomes_of(results: Sequence[Outcome]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for o in results:
        status = o.log["status"] if o.log else "none"
        counts[status] = counts.get(status, 0) + 1
    return counts
