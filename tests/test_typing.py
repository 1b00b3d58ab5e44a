"""The code is typed and mypy-clean (pyproject's [tool.mypy], pydantic's plugin): a change
that breaks a signature somewhere fails here, not in production."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["wooflow", "producers", "consumer", "scheduler", "workers", "sink", "schemas", "simulator"]


def test_mypy_finds_no_errors(tmp_path: Path) -> None:
    failures = []
    for package in PACKAGES:  # one run each: the top-level folders install under wooflow.*
        done = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), package],
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            failures.append(f"{package}:\n{done.stdout}{done.stderr}")
    assert not failures, "\n".join(failures)
