"""What actions may use, built once per worker process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Engine

from wooflow.settings import Settings
from wooflow.workers.consent import ConsentChecker, ConsentDecision, load_checker
from wooflow.workers.mailer import Mailer
from wooflow.workers.netguard import EgressPolicy, Resolver, SafeHttp

T = TypeVar("T")


@dataclass
class Services:
    settings: Settings
    engine: Engine
    http: SafeHttp  # every outbound call to a URL a store owner chose goes through this
    consent: ConsentChecker
    mailer: Mailer
    db_executor: ThreadPoolExecutor
    extras: dict[str, object] = field(default_factory=dict)

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking database call on the worker's database threads."""
        return await asyncio.get_running_loop().run_in_executor(self.db_executor, fn, *args)

    async def has_consent(self, store_id: str, channel: str, *, email: str | None, customer_key: str | None,
                          context: Mapping[str, object]) -> ConsentDecision:
        def check() -> ConsentDecision:
            return self.consent.check(store_id, channel, email=email, customer_key=customer_key, context=context)

        return await self.db(check)

    async def aclose(self) -> None:
        await self.http.aclose()
        self.db_executor.shutdown(wait=False)


def build_services(settings: Settings, engine: Engine, *, resolver: Resolver | None = None,
                   mailer: Mailer | None = None, extras: dict[str, object] | None = None) -> Services:
    http = SafeHttp(EgressPolicy.from_settings(settings), resolver, timeout=10.0,
                    max_connections=max(64, settings.worker_concurrency))
    return Services(settings=settings, engine=engine, http=http, consent=load_checker(settings, engine),
                    mailer=mailer or Mailer(), db_executor=ThreadPoolExecutor(8, thread_name_prefix="wooflow-db"),
                    extras=extras or {})
