"""GET /v1/ops/lag: how far behind each consuming role is, for operators (the console's
Operations page, beside the dead letters).

The numbers `wooflow lag` prints (wooflow/kafka/groups.py: the group's committed offsets
against the partitions' high watermarks), per role on the topics it reads. Kafka is asked
with a per-request timeout, and the whole reading runs on a small pool of its own with a
deadline: a broker that does not answer makes this a 503 with a message within
`DEADLINE_S`, never a request that hangs (the pool's thread finishes on its own timeouts)."""

from __future__ import annotations

import concurrent.futures
from datetime import datetime, timezone

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from wooflow.api.auth import Operator
from wooflow.kafka.groups import RoleLag, role_lags
from wooflow.settings import Settings

router = APIRouter(prefix="/v1/ops", tags=["operations"], dependencies=[Operator])
KAFKA_TIMEOUT_S = 4.0  # each request to Kafka
DEADLINE_S = 6.0  # the whole reading
# A reading that outlives its deadline keeps its thread until Kafka's own timeouts end it: two
# threads at most, a request queued behind them still answers within its deadline.
_pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="ops-lag")


class PartitionOut(BaseModel):
    topic: str
    partition: int
    committed: int | None = Field(description="The group's committed offset (none: it never committed here)")
    end: int = Field(description="The partition's high watermark")
    lag: int


class RoleOut(BaseModel):
    role: str
    group: str
    lag: int = Field(description="Messages still to read, over its topics")
    partitions: list[PartitionOut]


class LagReport(BaseModel):
    read_at: datetime
    roles: list[RoleOut]


def _out(r: RoleLag) -> RoleOut:
    return RoleOut(role=r.role, group=r.group, lag=r.total,
                   partitions=[PartitionOut(topic=p.topic, partition=p.partition, committed=p.committed, end=p.high,
                                            lag=p.lag) for p in r.partitions])


@router.get("/lag", response_model=LagReport, summary="Consumer lag per role (operator token)",
            responses={503: {"description": "Kafka did not answer in time"}})
def consumer_lag(request: Request) -> LagReport:
    settings: Settings = request.app.state.settings
    try:
        reading = _pool.submit(role_lags, settings, timeout=KAFKA_TIMEOUT_S)
        roles = reading.result(timeout=DEADLINE_S)
    except concurrent.futures.TimeoutError as exc:
        raise HTTPException(503, f"Kafka did not answer within {DEADLINE_S:g} s: consumer lag cannot be read "
                                 "now") from exc
    except Exception as exc:  # noqa: BLE001 - Kafka unreachable or refusing: say so, do not 500
        raise HTTPException(503, f"consumer lag cannot be read now: {exc}") from exc
    return LagReport(read_at=datetime.now(timezone.utc), roles=[_out(r) for r in roles])
