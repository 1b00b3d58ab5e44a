"""The poller's /readyz answers for PostgreSQL, like every other role: 503 while the
database cannot be reached (the process keeps running and says so), 200 when it can."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.support import RoleProcess, free_port, wait_for

pytestmark = pytest.mark.e2e


def _probe(port: int, path: str) -> int | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5).status_code
    except httpx.HTTPError:
        return None  # not listening yet


def test_poller_readyz_follows_postgresql(settings, logs_dir: Path) -> None:  # type: ignore[no-untyped-def]
    closed = free_port()  # nothing listens there
    unreachable = f"postgresql+psycopg://postgres@127.0.0.1:{closed}/wooflow"
    with ExitStack() as stack:
        down_port, up_port = free_port(), free_port()
        down = RoleProcess("poller", settings, logs_dir, "--interval", "0.5",
                           WOOFLOW_METRICS_PORT=str(down_port), WOOFLOW_DATABASE_URL=unreachable).start()
        stack.callback(down.stop)
        up = RoleProcess("poller", settings, logs_dir, "--interval", "0.5",
                         WOOFLOW_METRICS_PORT=str(up_port)).start()
        stack.callback(up.stop)

        assert wait_for(lambda: _probe(down_port, "/readyz"), 60, 0.1, "the probe server (no database)") == 503
        assert _probe(down_port, "/healthz") == 200
        assert wait_for(lambda: _probe(up_port, "/readyz") == 200 or None, 60, 0.1, "ready with PostgreSQL")
        # the poller without its database stays up and keeps answering 503 (not a crash loop)
        wait_for(lambda: "cannot list stores" in down.log_text(), 30, 0.1, "a pass that found no database")
        assert down.alive() and _probe(down_port, "/readyz") == 503
