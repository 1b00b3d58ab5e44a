"""Executes one batch of commands: claim keys, run actions concurrently, record outcomes.

Each command ends in exactly one execution log (succeeded, skipped, failed,
dead_lettered or dry_run); a command whose key is already finished produces no second
effect and no second log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from datetime import datetime, timezone
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine

from wooflow import metrics
from wooflow.settings import Settings
from wooflow.stores import StoreCache
from wooflow.workers import claims, registry
from wooflow.workers.errors import ActionError, TransientError
from wooflow.workers.registry import ActionContext, ActionHandler, ActionResult
from wooflow.workers.woo_client import WooClients

log = logging.getLogger(__name__)


def log_record(cmd: dict[str, Any], status: str, message: str, *, attempt: int, duration_s: float,
               details: dict[str, Any] | None = None) -> dict[str, Any]:
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


class Outcome:
    """What executing one command produced: a log record, and maybe a dead letter reason."""

    def __init__(self, cmd: dict[str, Any], log: dict[str, Any] | None, dlq_reason: str | None = None) -> None:
        self.cmd, self.log, self.dlq_reason = cmd, log, dlq_reason


class Executor:
    def __init__(self, settings: Settings, engine: Engine, stores: StoreCache, clients: WooClients,
                 extras: dict[str, Any] | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.stores = stores
        self.clients = clients
        self.extras = extras or {}
        self.sem = asyncio.Semaphore(settings.worker_concurrency)

    async def run_batch(self, commands: list[dict[str, Any]]) -> list[Outcome]:
        live = [c for c in commands if not c.get("dry_run")]
        claimed = await asyncio.to_thread(claims.claim_batch, self.engine, live, self.settings.action_lease_s)
        seen: set[str] = set()
        tasks = []
        for cmd in commands:
            key = cmd["idempotency_key"]
            if not cmd.get("dry_run"):
                if key in seen:  # the same command twice in one batch
                    continue
                seen.add(key)
            tasks.append(self._one(cmd, claimed.get(key)))
        outcomes = await asyncio.gather(*tasks)
        finished = [(o.cmd["idempotency_key"], o.log["status"], json.loads(o.log["details_json"]),
                     o.log["message"] if o.log["status"] in ("failed", "dead_lettered") else None)
                    for o in outcomes if o.log is not None and not o.cmd.get("dry_run")]
        await asyncio.to_thread(claims.finish, self.engine, finished)
        return list(outcomes)

    async def _context(self, cmd: dict[str, Any], handler: ActionHandler, claimed_at: datetime) -> ActionContext:
        store = await asyncio.to_thread(self.stores.get, cmd["store_id"])
        if store is None:
            raise ActionError(f"store {cmd['store_id']!r} is not registered")
        try:
            params = handler.Params.model_validate(json.loads(cmd["params_json"] or "{}"))
        except (ValidationError, ValueError) as exc:
            raise ActionError(f"invalid params for {handler.name}: {exc}") from exc
        context = json.loads(cmd["context_json"] or "{}")
        context.setdefault("store", {"id": store.id, "name": store.name, "url": store.url, "currency": store.currency})
        return ActionContext(store=store, command=cmd, params=params, context=context,
                             woo=self.clients.for_store(store), claimed_at=claimed_at,
                             dry_run=bool(cmd.get("dry_run")), extras=self.extras)

    async def _one(self, cmd: dict[str, Any], claim: claims.Claim | None) -> Outcome:
        async with self.sem:
            started = time.perf_counter()
            try:
                return await self._execute(cmd, claim, started)
            except Exception as exc:  # never let one command take the batch down
                log.exception("unexpected error executing %s", cmd["idempotency_key"])
                return Outcome(cmd, log_record(cmd, "failed", f"internal error: {type(exc).__name__}: {exc}",
                                               attempt=cmd.get("attempt", 1), duration_s=time.perf_counter() - started),
                               dlq_reason="internal_error")

    async def _execute(self, cmd: dict[str, Any], claim: claims.Claim | None, started: float) -> Outcome:
        handler = registry.get(cmd["action_type"])
        attempt = int(cmd.get("attempt") or 1)
        if handler is None:
            metrics.actions.labels(cmd["store_id"], cmd["action_type"], "failed").inc()
            return Outcome(cmd, log_record(cmd, "failed", f"unknown action type {cmd['action_type']!r}",
                                           attempt=attempt, duration_s=0), dlq_reason="unknown_action")
        if cmd.get("dry_run"):
            ctx = await self._context(cmd, handler, datetime.now(timezone.utc))
            res = await handler.dry_run(ctx)
            return Outcome(cmd, log_record(cmd, "dry_run", res.message, attempt=attempt,
                                           duration_s=time.perf_counter() - started, details=res.details))
        while claim is not None and claim.outcome == "busy":
            # Another worker holds the lease (e.g. during a rebalance): wait for it to finish
            # or for its lease to expire, without blocking the other commands of the batch.
            await asyncio.sleep(0.5)
            claim = await asyncio.to_thread(claims.recheck, self.engine, cmd["idempotency_key"],
                                            self.settings.action_lease_s)
        if claim is None or claim.outcome == "done":
            metrics.actions.labels(cmd["store_id"], cmd["action_type"], "duplicate").inc()
            return Outcome(cmd, None)
        claimed_at = claim.claimed_at or datetime.now(timezone.utc)
        try:
            ctx = await self._context(cmd, handler, claimed_at)
            if claim.outcome == "recover":
                found = await handler.already_applied(ctx)
                if found is not None:
                    return self._done(cmd, found, attempt, started)
            return await self._attempts(cmd, handler, ctx, attempt, started)
        except ActionError as exc:
            metrics.actions.labels(cmd["store_id"], cmd["action_type"], "failed").inc()
            return Outcome(cmd, log_record(cmd, "failed", str(exc), attempt=attempt,
                                           duration_s=time.perf_counter() - started), dlq_reason="action_error")

    async def _attempts(self, cmd: dict[str, Any], handler: ActionHandler, ctx: ActionContext, attempt: int,
                        started: float) -> Outcome:
        max_attempts = self.settings.action_max_attempts
        while True:
            try:
                res = await asyncio.wait_for(handler.run(ctx), timeout=self.settings.action_timeout_s)
                return self._done(cmd, res, attempt, started)
            except (TransientError, asyncio.TimeoutError) as exc:
                reason = str(exc) or "timeout"
                if attempt >= max_attempts:
                    metrics.actions.labels(cmd["store_id"], cmd["action_type"], "dead_lettered").inc()
                    return Outcome(cmd, log_record(cmd, "dead_lettered", f"gave up after {attempt} attempts: {reason}",
                                                   attempt=attempt, duration_s=time.perf_counter() - started),
                                   dlq_reason="max_attempts")
                metrics.action_retries.labels(cmd["action_type"]).inc()
                # exponential backoff with full jitter, capped
                await asyncio.sleep(random.uniform(0, min(5.0, 0.2 * 2 ** (attempt - 1))))
                attempt += 1

    def _done(self, cmd: dict[str, Any], res: ActionResult, attempt: int, started: float) -> Outcome:
        metrics.actions.labels(cmd["store_id"], cmd["action_type"], res.status).inc()
        if cmd.get("received_at"):
            metrics.end_to_end_seconds.observe((datetime.now(timezone.utc) - cmd["received_at"]).total_seconds())
        return Outcome(cmd, log_record(cmd, res.status, res.message, attempt=attempt,
                                       duration_s=time.perf_counter() - started, details=res.details))
