"""Topic administration: `wooflow topics create` (idempotent), deleting a namespace's
topics (tests, the demo), and the admin client the ops tools ask about groups."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from wooflow.kafka.config import admin_config
from wooflow.kafka.topics import TopicSpec, topic_specs
from wooflow.settings import Settings


def admin_client(s: Settings) -> AdminClient:
    return AdminClient(admin_config(s))


@dataclass
class TopicResult:
    name: str
    status: str  # created | exists
    partitions: int


def create_topics(s: Settings, specs: list[TopicSpec] | None = None, timeout: float = 30.0) -> list[TopicResult]:
    admin = admin_client(s)
    specs = specs or topic_specs(s)
    futures = admin.create_topics(
        [NewTopic(t.name, num_partitions=t.partitions, replication_factor=t.replication, config=t.config)
         for t in specs],
        request_timeout=timeout,
    )
    results = []
    for spec in specs:
        try:
            futures[spec.name].result(timeout)
            results.append(TopicResult(spec.name, "created", spec.partitions))
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                results.append(TopicResult(spec.name, "exists", spec.partitions))
            else:
                raise
    _wait_for_metadata(admin, [s.name for s in specs], timeout)
    return results


def _wait_for_metadata(admin: AdminClient, names: list[str], timeout: float) -> None:
    """Topic creation returns before every broker knows the leader; wait until they do."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        md = admin.list_topics(timeout=timeout)
        ready = all(
            n in md.topics and md.topics[n].error is None
            and all(p.leader >= 0 for p in md.topics[n].partitions.values())
            for n in names
        )
        if ready:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics not ready within {timeout}s: {names}")
        time.sleep(0.1)


def delete_topics_with_prefix(s: Settings, prefix: str, timeout: float = 30.0) -> list[str]:
    """Delete every topic whose name starts with `prefix` (a test's or a demo's own
    namespace); returns their names. A broker holds a few memory maps per partition, so a
    long-lived shared broker that only ever gains topics runs out of them."""
    if not prefix:
        raise ValueError("refusing to delete topics without a prefix")
    admin = admin_client(s)
    names = [n for n in admin.list_topics(timeout=timeout).topics if n.startswith(prefix)]
    if names:
        for future in admin.delete_topics(names, operation_timeout=timeout).values():
            try:
                future.result(timeout)
            except KafkaException as exc:
                err = exc.args[0]
                if not (isinstance(err, KafkaError) and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
                    raise
    return names
