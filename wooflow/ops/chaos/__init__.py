"""`wooflow chaos`: the whole pipeline under fire, checked against a ledger.

A chaos run starts its own Kafka broker and PostgreSQL (the local launcher), every role
as a separate process (bridge, two rule consumers, two workers, sink, scheduler, poller),
a simulated store with fixed mixed traffic, a real SMTP server and a webhook receiver.
While traffic flows it injects faults at seeded random moments — SIGKILL of any role,
the broker stopped and restarted on its data, PostgreSQL shut down fast or immediately
and restarted, rule consumers and workers scaled 1 → 4 → 1, the store's REST API failing
or slow — plus poison messages. Then traffic stops, the pipeline drains, and every effect
the traffic called for (the ledger, kept by the traffic side from the store's own truth)
is compared with what arrived: notes and coupons in the store, emails at the SMTP server,
deliveries at the webhook receiver.

Modules: `plan` (profiles, the seeded fault plan), `infra` (the broker and PostgreSQL the
run owns), `roles` (role processes, scaling, their metrics endpoints), `world` (the store,
SMTP server and webhook receiver), `traffic` (traffic and the ledger), `faults` (fault
injection, recovery times), `verify` (drain and checks), `run` (the run and its report),
`cli` (`wooflow chaos`). `bench/chaos/run.py` (`python -m bench.chaos.run`) runs the same code.
"""
