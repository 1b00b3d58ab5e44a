"""A third-party action package (examples/wooflow-example-action), installed with pip,
found by a worker process through the `wooflow.actions` entry point and run — live and
as a dry run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support import RoleProcess, ServerThread, make_store, read_topic, wait_for
from wooflow.workers.testing import command, produce

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "wooflow-example-action"


def test_example_plugin_installed_with_pip_runs_in_a_worker(settings, engine, logs_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Installed into its own directory (not the shared venv): the worker gets it on PYTHONPATH,
    # and entry points are discovered from the .dist-info pip writes there.
    src, target = tmp_path / "src", tmp_path / "site"
    shutil.copytree(EXAMPLE, src)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(src)], check=True, timeout=180)
    assert (target / "wooflow_example_action").is_dir()

    got: list[dict[str, Any]] = []
    lock = threading.Lock()

    async def subscribe(request: Request) -> JSONResponse:
        with lock:
            got.append({"body": json.loads(await request.body()), "key": request.headers.get("idempotency-key")})
        return JSONResponse({"ok": True})

    with ServerThread(Starlette(routes=[Route("/subscribe", subscribe, methods=["POST"])])) as srv:
        store = make_store(engine)
        ctx = {"customer": {"id": 4, "email": "jan@example.com"}}
        params = {"api_url": f"{srv.url}/subscribe", "list_id": "vip"}
        live = command(store_id=store.id, action_type="list_subscribe", params=params, context=ctx,
                       customer_key="c4", subject_type="customer", subject_id="4")
        dry = command(store_id=store.id, action_type="list_subscribe", params=params, context=ctx,
                      customer_key="c4", subject_type="customer", subject_id="4", dry_run=True)
        produce(settings, [live, dry], copies=2)
        worker = RoleProcess("workers", settings, logs_dir, PYTHONPATH=str(target),
                             WOOFLOW_WEBHOOK_ALLOWLIST="127.0.0.1/32").start()
        try:
            def logs() -> dict[tuple[str, str], dict[str, Any]] | None:
                out = {(r["idempotency_key"], r["status"]): r for _, r in read_topic(settings, "automation.logs")}
                return out if (live["idempotency_key"], "succeeded") in out and \
                    (dry["idempotency_key"], "dry_run") in out else None

            found = wait_for(logs, 60, 0.3, "the plugin action's logs")
        except AssertionError:
            print(worker.log_text()[-4000:])
            raise
        finally:
            worker.stop()
    assert got == [{"body": {"email": "jan@example.com", "list": "vip"}, "key": live["idempotency_key"]}]
    assert found[(live["idempotency_key"], "succeeded")]["message"] == "jan@example.com subscribed to vip"
    details = json.loads(found[(dry["idempotency_key"], "dry_run")]["details_json"])
    assert details == {"dry_run": True, "provider": "list_subscribe", "list": "vip"}
    assert "loaded action plugin list_subscribe" in worker.log_text()
