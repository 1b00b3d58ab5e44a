"""Profiles and the seeded fault plan of a chaos run.

A plan is drawn from one seed before anything starts, so a run can be repeated: which
faults, in which order, when (seconds after traffic starts), for how long, against
which role. Faults live on lanes — the role kills, the broker, PostgreSQL, the store's
REST API, scaling — each lane's faults one after another, spread evenly over the fault
window at random offsets; different lanes overlap freely (a broker restart may meet a
PostgreSQL crash, as in life). Nothing is planned in the first `warmup_s` (the pipeline
finds its pace) or in the last `quiet_s` (the last fault's recovery is measured before
traffic stops).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

KILL, BROKER, PG_FAST, PG_IMMEDIATE, SCALE, REST_ERROR, REST_SLOW = (
    "kill", "broker", "pg_fast", "pg_immediate", "scale", "rest_error", "rest_slow")
KINDS = (KILL, BROKER, PG_FAST, PG_IMMEDIATE, SCALE, REST_ERROR, REST_SLOW)
LANE = {KILL: "kill", BROKER: "kafka", PG_FAST: "postgres", PG_IMMEDIATE: "postgres", SCALE: "scale",
        REST_ERROR: "rest", REST_SLOW: "rest"}
KILLABLE = ("bridge", "rules", "workers", "sink", "scheduler", "poller")
SCALABLE = ("rules", "workers")
# Poison: where each message goes (a base topic name); what must dead-letter it is the
# verification's business (verify.py).
POISON_TOPICS = ("woo.orders", "woo.customers", "woo.storefront", "automation.commands", "automation.logs",
                 "unknown_action")

Span = tuple[float, float]


@dataclass(frozen=True)
class Profile:
    name: str
    traffic_s: float  # traffic (and faults) run this long
    counts: dict[str, int]  # faults of each kind
    rate: float = 200.0  # events per second the traffic aims at
    warmup_s: float = 10.0
    quiet_s: float = 20.0
    kill_pause_s: Span = (0.5, 5.0)  # a killed role is restarted after this
    broker_down_s: Span = (5.0, 30.0)
    pg_down_s: Span = (1.0, 8.0)
    rest_fault_s: Span = (3.0, 12.0)
    rest_slow_delay_s: Span = (2.0, 12.0)  # each request held this long (the workers time out at 10 s)
    scale_hold_s: Span = (3.0, 10.0)  # each of the 1 → 4 → 1 steps is held this long
    poison: int = 6
    forgeries: int = 1  # bursts of webhooks with a wrong signature, each above the alert's threshold
    forgery_burst: int = 15
    recover_timeout_s: float = 120.0
    # After the traffic: the webhook queue, refused storefront batches, a poller pass, the
    # outbox and every group's lag. Twenty minutes of traffic on a machine at a load average
    # of 40 took 120 s for the webhook queue alone.
    drain_timeout_s: float = 240.0

    @property
    def faults(self) -> int:
        return sum(self.counts.values())


def _each(n: int) -> dict[str, int]:
    return dict.fromkeys(KINDS, n)


PROFILES = {
    # CI: at least three of each kind within four minutes of wall time (start-up and drain included).
    "short": Profile("short", traffic_s=120.0, counts=_each(3), warmup_s=8.0, quiet_s=15.0,
                     broker_down_s=(5.0, 8.0), pg_down_s=(1.0, 4.0), rest_fault_s=(3.0, 8.0),
                     rest_slow_delay_s=(2.0, 12.0), scale_hold_s=(2.0, 4.0), poison=6, forgeries=1),
    # The documented run: 50+ faults over twenty minutes, every role killed more than once.
    "long": Profile("long", traffic_s=1200.0, counts={KILL: 12, BROKER: 8, PG_FAST: 6, PG_IMMEDIATE: 6, SCALE: 6,
                                                       REST_ERROR: 7, REST_SLOW: 7}, poison=12, forgeries=3,
                    drain_timeout_s=600.0),
}


@dataclass(frozen=True)
class Fault:
    kind: str
    at: float  # seconds after traffic starts
    hold_s: float  # how long the fault lasts (a killed role's pause, a broker's downtime, ...)
    target: str = ""  # the role killed or scaled
    variant: str = ""  # broker: "term" (controlled shutdown) or "kill" (SIGKILL of the JVM)
    seed: int = 0
    steps: tuple[float, ...] = ()  # scale: hold of each step

    def describe(self) -> str:
        what = {KILL: f"SIGKILL {self.target}, restart after {self.hold_s:.1f}s",
                BROKER: f"broker {'SIGKILL' if self.variant == 'kill' else 'stop'} for {self.hold_s:.1f}s",
                PG_FAST: f"PostgreSQL fast shutdown for {self.hold_s:.1f}s",
                PG_IMMEDIATE: f"PostgreSQL immediate shutdown for {self.hold_s:.1f}s",
                SCALE: f"{self.target} 1 → 4 → 1 (holds {', '.join(f'{s:.1f}' for s in self.steps)}s)",
                REST_ERROR: f"store REST answers 5xx for {self.hold_s:.1f}s",
                REST_SLOW: f"store REST slow ({self.variant}s a request) for {self.hold_s:.1f}s"}
        return what[self.kind]


@dataclass(frozen=True)
class Poison:
    at: float
    target: str  # one of POISON_TOPICS
    key: str  # the message key: how its dead letters are recognised


@dataclass
class Plan:
    seed: int
    profile: Profile
    faults: list[Fault] = field(default_factory=list)
    poison: list[Poison] = field(default_factory=list)
    forgeries: list[float] = field(default_factory=list)  # when a burst of forged webhooks is sent

    def lanes(self) -> dict[str, list[Fault]]:
        out: dict[str, list[Fault]] = {}
        for f in sorted(self.faults, key=lambda f: f.at):
            out.setdefault(LANE[f.kind], []).append(f)
        return out


def _draw(rng: random.Random, kind: str, p: Profile, index: int, order: list[str]) -> Fault:
    u = rng.uniform
    if kind == KILL:
        return Fault(kind, 0.0, u(*p.kill_pause_s), target=order[index % len(order)])
    if kind == BROKER:
        return Fault(kind, 0.0, u(*p.broker_down_s), variant=rng.choice(("term", "term", "kill")))
    if kind in (PG_FAST, PG_IMMEDIATE):
        return Fault(kind, 0.0, u(*p.pg_down_s))
    if kind == SCALE:
        steps = (u(*p.scale_hold_s), u(*p.scale_hold_s), u(*p.scale_hold_s))
        return Fault(kind, 0.0, sum(steps), target=SCALABLE[index % 2], steps=steps)
    delay = round(u(*p.rest_slow_delay_s), 1) if kind == REST_SLOW else 0.0
    return Fault(kind, 0.0, u(*p.rest_fault_s), variant=f"{delay:g}" if delay else "", seed=rng.randrange(2**31))


# What a fault costs beyond its hold (restarts, start-up), so a lane's faults do not pile up.
_OVERHEAD = {KILL: 4.0, BROKER: 8.0, PG_FAST: 3.0, PG_IMMEDIATE: 4.0, SCALE: 6.0, REST_ERROR: 2.0, REST_SLOW: 4.0}


def make_plan(profile: Profile, seed: int) -> Plan:
    rng = random.Random(seed)
    plan = Plan(seed, profile)
    kill_order = list(KILLABLE)
    rng.shuffle(kill_order)  # every role is killed before any is killed twice
    drawn: list[Fault] = []
    for kind in KINDS:
        drawn += [_draw(rng, kind, profile, i, kill_order) for i in range(profile.counts.get(kind, 0))]
    start, end = profile.warmup_s, profile.traffic_s - profile.quiet_s
    by_lane: dict[str, list[Fault]] = {}
    for f in drawn:
        by_lane.setdefault(LANE[f.kind], []).append(f)
    for lane in sorted(by_lane):
        faults = by_lane[lane]
        rng.shuffle(faults)
        slot = (end - start) / len(faults)
        for i, f in enumerate(faults):
            room = max(0.0, slot - f.hold_s - _OVERHEAD[f.kind])
            at = start + i * slot + rng.uniform(0, room)
            plan.faults.append(Fault(f.kind, round(at, 2), round(f.hold_s, 2), f.target, f.variant, f.seed, f.steps))
    plan.faults.sort(key=lambda f: f.at)
    for i in range(profile.poison):
        target = POISON_TOPICS[i % len(POISON_TOPICS)]
        plan.poison.append(Poison(round(rng.uniform(start, end), 2), target, f"chaos-poison-{seed}-{i}"))
    plan.poison.sort(key=lambda p: p.at)
    plan.forgeries = sorted(round(rng.uniform(start, end), 2) for _ in range(profile.forgeries))
    return plan
