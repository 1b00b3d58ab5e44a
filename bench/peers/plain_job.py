"""Job A or B as a plain confluent-kafka + fastavro batch loop (run by run.py in its own
process): consume a batch, decode, decide, produce the commands (JSON), wait for their
acknowledgement, commit the offsets. Job B keeps its state in a dict (in memory only:
lost on restart). Prints one JSON line: events, first/last wall time, process CPU.

    python plain_job.py --bootstrap H:P --topic T --out T2 --group G --schema S.avsc --job A --events N
"""

from __future__ import annotations

import argparse
import json
import time

from confluent_kafka import Consumer, Producer
from jobs import command, decode, job_a, load_schema, paid


def main() -> None:
    ap = argparse.ArgumentParser()
    for opt in ("--bootstrap", "--topic", "--out", "--group", "--schema", "--job"):
        ap.add_argument(opt, required=True)
    ap.add_argument("--events", type=int, required=True)
    ap.add_argument("--batch", type=int, default=2000)
    a = ap.parse_args()
    schema = load_schema(a.schema)
    consumer = Consumer({"bootstrap.servers": a.bootstrap, "group.id": a.group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    producer = Producer({"bootstrap.servers": a.bootstrap, "enable.idempotence": True, "linger.ms": 5})
    consumer.subscribe([a.topic])
    seen: set[bytes] = set()  # job B: customers (message keys) with a paid order
    n = commands = 0
    first = cpu_first = 0.0
    while n < a.events:
        msgs = consumer.consume(a.batch, 0.2)
        if not msgs:
            continue
        if not first:
            first, cpu_first = time.time(), time.process_time()
        for m in msgs:
            if m.error():
                continue
            n += 1
            ev = decode(schema, m.value())
            if a.job == "A":
                hit = job_a(ev)
            else:
                hit = paid(ev) and m.key() not in seen
                if hit:
                    seen.add(m.key())
            if hit:
                producer.produce(a.out, json.dumps(command(a.job, ev)).encode(), key=m.key())
                commands += 1
        producer.flush()
        consumer.commit(asynchronous=False)
    done, cpu_done = time.time(), time.process_time()
    consumer.close()
    print(json.dumps({"events": n, "commands": commands, "first": first, "done": done,
                      "cpu_s": cpu_done - cpu_first}))


if __name__ == "__main__":
    main()
