"""The action registry loads once, whole, however many threads ask first: the API serves
requests from several threads, and one that saw a half-loaded registry would answer an
empty action list or refuse a rule's action as unknown."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

PROBE = """
import threading
from wooflow.workers import registry
go = threading.Barrier(16)
seen = []
def ask():
    go.wait()
    seen.append(len(registry.all_actions()))
threads = [threading.Thread(target=ask) for _ in range(16)]
for t in threads: t.start()
for t in threads: t.join()
print(sorted(set(seen)))
"""


def test_threads_asking_at_once_all_see_every_action() -> None:
    # a fresh interpreter each time: the registry loads on the first question
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        counts = json.loads(done.stdout)
        assert len(counts) == 1 and counts[0] >= 16, counts
