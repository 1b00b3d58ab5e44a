"""Job A or B as a Quix Streams application (run by run.py with the Python of the
virtual environment it creates for Quix Streams: its pins conflict with wooflow's).

Job B keeps "this customer has a paid order" in Quix's RocksDB state, keyed by the
message key (store:customer) and backed by a changelog topic, as Quix recommends.
The app stops itself once it has processed `--events` messages (`Application.stop`,
which commits its last checkpoint: state flushed, offsets committed). Prints one JSON
line: events, first/last wall time, process CPU.

    quix-venv/bin/python quix_job.py --bootstrap H:P --topic T --out T2 --group G --schema S.avsc --job A \
        --events N --state-dir DIR
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from jobs import command, decode, job_a, load_schema, paid
from quixstreams import Application, State
from quixstreams.models.serializers.base import Deserializer


class SingleObjectAvro(Deserializer):
    def __init__(self, schema: Any) -> None:
        super().__init__()
        self.schema = schema

    def __call__(self, value: bytes, ctx: Any) -> Any:
        return decode(self.schema, value)


def first_paid(ev: dict[str, Any], state: State) -> bool:
    if state.get("paid"):
        return False
    state.set("paid", True)
    return True


def main() -> None:
    ap = argparse.ArgumentParser()
    for opt in ("--bootstrap", "--topic", "--out", "--group", "--schema", "--job", "--state-dir"):
        ap.add_argument(opt, required=True)
    ap.add_argument("--events", type=int, required=True)
    a = ap.parse_args()
    marks = {"n": 0, "first": 0.0, "cpu_first": 0.0}
    app: Application

    def processed(_topic: str, _partition: int, _offset: int) -> None:
        marks["n"] += 1
        if marks["n"] == a.events:
            app.stop()

    app = Application(broker_address=a.bootstrap, consumer_group=a.group, auto_offset_reset="earliest",
                      state_dir=a.state_dir, loglevel="WARNING", on_message_processed=processed)
    src = app.topic(a.topic, key_deserializer="str", value_deserializer=SingleObjectAvro(load_schema(a.schema)))
    out = app.topic(a.out, key_serializer="str", value_serializer="json")
    sdf = app.dataframe(src)

    def mark(ev: dict[str, Any]) -> dict[str, Any]:
        if not marks["first"]:
            marks["first"], marks["cpu_first"] = time.time(), time.process_time()
        return ev

    sdf = sdf.update(mark)
    sdf = sdf.filter(job_a) if a.job == "A" else sdf.filter(paid).filter(first_paid, stateful=True)
    sdf = sdf.apply(lambda ev: command(a.job, ev))
    sdf.to_topic(out)
    app.run()
    print(json.dumps({"events": marks["n"], "first": marks["first"], "done": time.time(),
                      "cpu_s": time.process_time() - marks["cpu_first"]}))


if __name__ == "__main__":
    main()
