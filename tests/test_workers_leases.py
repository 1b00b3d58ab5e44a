"""A live worker's claims never expire under it.

Two real worker processes in one consumer group, a real SMTP server and a webhook
receiver that sit on what arrives for far longer than the lease. The first worker alone
starts two emails and two webhooks, one of each on each of the topic's two partitions;
then the second worker joins and the rebalance hands it one partition, whose commands it
reads again (they were not committed). Without lease renewal it finds their leases
expired and sends the email and the webhook a second time; with renewal it finds them
busy, and once the receivers answer the first worker records them and the copies do
nothing: one email per Message-ID, one delivery per delivery id (`Idempotency-Key`).

Also: settings under which leases cannot be renewed in time are refused at start with a
message and exit code 2.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.effects_kit import HttpReceiver, SmtpReceiver, deferred_keys, effects_store, keys_on_every_partition, settled
from tests.support import RoleProcess, ServerThread, env_of, read_topic, unique, wait_for, wooflow_cli
from wooflow.kafka.admin import create_topics
from wooflow.workers.testing import command, produce

pytestmark = pytest.mark.e2e

LEASE = {"WOOFLOW_ACTION_LEASE_S": "6", "WOOFLOW_ACTION_LEASE_RENEW_S": "2",
         # how long a worker whose partition is revoked waits for its running actions (+10 s)
         "WOOFLOW_ACTION_TIMEOUT_S": "2",
         "WOOFLOW_WEBHOOK_ALLOWLIST": "127.0.0.1/32", "WOOFLOW_DEFERRED_POLL_S": "0.2"}


def test_two_workers_slow_receivers_one_email_and_one_delivery_each(settings, engine, logs_dir) -> None:  # type: ignore[no-untyped-def]
    s = settings.model_copy(update={"topic_prefix": unique("lease") + ".", "topic_partitions": 2,
                                    "workers_group": unique("g")})
    create_topics(s)
    smtp = SmtpReceiver(hold=99).start()
    http = HttpReceiver(hold=99)
    workers: list[RoleProcess] = []
    try:
        with ServerThread(http.app()) as srv:
            store = effects_store(engine, smtp.port, srv.url)
            ctx = {"order": {"id": 9, "number": "9", "billing": {"email": "ola@example.com"}}}
            # Kafka keys are store:customer; find customers whose commands land on each partition
            by_partition = keys_on_every_partition(s, f"{store.id}:c", 2)
            cmds: list[dict[str, Any]] = []
            for mail_key, hook_key in by_partition:
                cmds.append(command(store_id=store.id, action_type="send_email", context=ctx,
                                    customer_key=mail_key.split(":", 1)[1],
                                    params={"subject": "Order {{ order.number }}", "text": "Thanks!"}))
                cmds.append(command(store_id=store.id, action_type="webhook", context=ctx,
                                    customer_key=hook_key.split(":", 1)[1],
                                    params={"url": f"{srv.url}/hook", "timeout": 30}))
            keys = [c["idempotency_key"] for c in cmds]
            produce(s, cmds)

            (logs_dir / "first").mkdir()
            (logs_dir / "second").mkdir()
            first = RoleProcess("workers", s, logs_dir / "first", **LEASE).start()
            workers.append(first)
            wait_for(lambda: len(smtp.arrivals) == 2 and len(http.arrivals) == 2, 60, 0.05,
                     "the first worker to be in the middle of all four")
            second = RoleProcess("workers", s, logs_dir / "second", **LEASE).start()
            workers.append(second)

            # The second worker gets one partition and reads its two commands again. Wait until it
            # has looked at both after their first leases ended (it found them busy), or sent a copy.
            found_busy: set[str] = set()

            def second_worker_looked() -> bool:
                found_busy.update(deferred_keys(engine, keys, "busy"))
                copies = max([*smtp.counts().values(), *http.counts().values()])
                return len(found_busy) >= 2 or copies > 1

            try:
                wait_for(second_worker_looked, 90, 0.05, "the second worker to read the moved partition")
            finally:
                smtp.release.set()
                http.release.set()

            def all_succeeded() -> bool:
                final = {r["idempotency_key"]: r["status"] for _, r in read_topic(s, "automation.logs")}
                return all(final.get(k) == "succeeded" for k in keys)

            try:
                settled(s, engine, keys, all_succeeded)
            except AssertionError:
                print("\n".join(w.log_text()[-6000:] for w in workers))
                raise
    finally:
        for w in workers:
            w.stop()
        smtp.stop()

    # one email per Message-ID, one delivery per delivery id
    assert (sorted(smtp.counts().values()), sorted(http.counts().values())) == ([1, 1], [1, 1]), \
        (smtp.counts(), http.counts())
    hook_keys = {c["idempotency_key"] for c in cmds if c["action_type"] == "webhook"}
    assert set(http.counts()) == hook_keys
    assert all(a.info["idempotency_key"] == a.identity == a.info["body_id"] for a in http.arrivals)
    assert len(found_busy) == 2, "the second worker found the moved commands busy under the first one's lease"


def test_settings_that_cannot_keep_a_lease_are_refused_at_start(settings) -> None:  # type: ignore[no-untyped-def]
    cases = {
        ("30", "15"): "must be at most a third of WOOFLOW_ACTION_LEASE_S=30",
        ("2", "0"): "needs at least 1 s",
    }
    for (lease, renew), words in cases.items():
        env = env_of(settings, WOOFLOW_ACTION_LEASE_S=lease, WOOFLOW_ACTION_LEASE_RENEW_S=renew)
        done = wooflow_cli("workers", env=env, timeout=60)
        out = " ".join((done.stdout + done.stderr).split())
        assert done.returncode == 2, (lease, renew, out)
        assert words in out and "Traceback" not in out, out
