"""What every long-running role process does around its work: one log format, a clean
stop on SIGTERM/SIGINT, and — with `WOOFLOW_METRICS_PORT` — probes and lag reporting;
and the event loop of the roles that run one (`new_event_loop`).

Shared by the CLI (`wooflow/cli.py`) and the roles that bring their own commands
(`wooflow scheduler`, `wooflow poller`), so no role imports the CLI."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
from typing import Protocol

from wooflow.settings import Settings


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when it is installed (it comes with uvicorn[standard]): noticeably cheaper than
    asyncio's own loop for a process serving or calling many sockets (workers, the simulator)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop

log = logging.getLogger(__name__)


class Role(Protocol):
    def run(self, stop: threading.Event) -> None: ...


def setup_logging(s: Settings) -> None:
    logging.basicConfig(level=s.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM (Kubernetes) and SIGINT (Ctrl-C) finish the current batch, then exit."""
    def handler(signum: int, _frame: object) -> None:
        log.info("signal %s: finishing the current batch", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


def run_role(name: str, runner: Role, s: Settings) -> None:
    from wooflow import dlq
    from wooflow.probes import serve_probes

    dlq.expose(name)  # the role's dead-letter counters from 0, so the first one is an increase
    stop = threading.Event()
    stop_on_signals(stop)
    if s.metrics_port:  # lag reporting + probes (wooflow/kafka/lag.py, wooflow/probes.py)
        from wooflow.kafka.lag import start_lag_reporter
        from wooflow.probes import role_readiness

        serve_probes(s.metrics_port, role_readiness(runner, s.database_url, start_lag_reporter(name, s, stop)))
    logging.getLogger("wooflow").info("starting %s", name)
    runner.run(stop)
