"""The short chaos profile, as CI runs it: the whole pipeline on a broker and PostgreSQL of
its own, at least three faults of each kind (role kills, broker and PostgreSQL restarts,
scaling, the store's REST API failing and slow) plus poison, then every effect the
traffic called for checked against the store, the SMTP server and the webhook receiver
(wooflow/ops/chaos). A random seed each run, printed: `WOOFLOW_CHAOS_SEED=N` repeats one."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path

import pytest

from wooflow.ops.chaos.plan import PROFILES
from wooflow.ops.chaos.run import Options, run
from wooflow.settings import Settings

pytestmark = pytest.mark.e2e


def test_short_chaos_run_loses_no_effect_and_repeats_none() -> None:
    seed = int(os.environ.get("WOOFLOW_CHAOS_SEED") or random.SystemRandom().randrange(1, 10**6))
    profile = PROFILES["short"]
    # Not under pytest's basetemp: a concurrent session prunes it, the run's PostgreSQL data with it.
    run_dir = Path(tempfile.mkdtemp(prefix=f"wooflow-chaos-{seed}-"))
    print(f"chaos seed {seed} (repeat: WOOFLOW_CHAOS_SEED={seed}), run dir {run_dir}")
    report = run(Options(profile, seed, run_dir, Settings().cache_dir), say=print)
    print({k: report[k] for k in ("wall_s", "rounds", "lost", "duplicated", "repeated", "recovery_s")})
    assert report["passed"], f"seed {seed}: {report['problems']} (logs in {run_dir / 'logs'})"
    shutil.rmtree(run_dir, ignore_errors=True)  # kept for a post-mortem only when the run failed
    assert all(report["faults"][kind] >= n for kind, n in profile.counts.items()), report["faults"]
    assert report["lost"] == report["duplicated"] == report["unexpected"] == 0
    # the run did real work: thousands of events, hundreds of effects of every kind
    assert report["events"]["total"] > 5000, report["events"]
    assert all(kinds.get("expected", 0) > 10 for kinds in report["effects"]["by_kind"].values()), report["effects"]
    assert len(report["dead_letters"]["poison"]) == profile.poison
    # the forged webhooks were sent, and refused (a 2xx or 500 fails the run above)
    assert sum(report["checks"]["forged_webhooks"].values()) == profile.forgeries * profile.forgery_burst
