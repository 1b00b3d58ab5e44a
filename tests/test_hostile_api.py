"""Schemathesis over the admin API's /openapi.json, in process, with a valid store token:
every operation gets generated requests (valid and invalid parameters and bodies, and — one
in three — an id that belongs to the caller's store or to another store), and

- no answer is a 5xx;
- no answer breaks the schema the API documents for it;
- another store's rules, tasks, logs, consents, templates and policy are never reached:
  naming one answers 404 (or 403), and listings never contain them.

`FUZZ_API_EXAMPLES` sets the examples per operation (the suite runs a few dozen).
"""

from __future__ import annotations

import os
from collections import Counter
from datetime import datetime, timezone
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error, response_schema_conformance
from sqlalchemy import insert

from tests.support import make_store
from wooflow.api.app import create_app
from wooflow.api.auth import create_token
from wooflow.db.tables import consents, execution_logs, tasks

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("FUZZ_API_EXAMPLES", "25"))
RULE = {"name": "Big orders", "trigger": "new_order",
        "conditions": {"match": "all", "conditions": [{"field": "order_total", "operator": "gt", "value": "100"}]},
        "actions": [{"type": "add_order_note", "params": {"note": "big {{ order.number }}"}}]}


def seed(client: TestClient, engine: Any, store: Any, headers: dict[str, str]) -> dict[str, Any]:
    """A rule, a task, a consent record and an execution log of `store`; their ids."""
    rule = client.post("/v1/rules", json={**RULE, "name": f"rule of {store.id}"}, headers=headers).json()
    with engine.begin() as conn:
        task = conn.execute(insert(tasks).values(store_id=store.id, idempotency_key=f"k-{store.id}", rule_id=rule["id"],
                                                 title=f"task of {store.id}").returning(tasks.c.id)).scalar_one()
        conn.execute(insert(consents).values(store_id=store.id, email=f"{store.id}@example.com", granted=True,
                                             source="api"))
        conn.execute(insert(execution_logs).values(
            log_id=f"log-{store.id}", store_id=store.id, rule_id=rule["id"], idempotency_key=f"k-{store.id}",
            customer_key="c1", event_id="e1", action_type="add_order_note", status="succeeded",
            message=f"log of {store.id}", step=0, attempt=1, dry_run=False, executed_at=datetime.now(timezone.utc)))
    return {"rule_id": rule["id"], "task_id": task, "email": f"{store.id}@example.com", "store_id": store.id,
            "log_id": f"log-{store.id}"}


@pytest.fixture
def tenants(settings, engine):  # type: ignore[no-untyped-def]
    app = create_app(settings)
    client = TestClient(app)
    mine, other = make_store(engine), make_store(engine)
    auth = {s.id: {"Authorization": f"Bearer {create_token(engine, s.id, 'fuzz')}"} for s in (mine, other)}
    ids = {"mine": seed(client, engine, mine, auth[mine.id]), "other": seed(client, engine, other, auth[other.id])}
    return app, client, auth[mine.id], ids


def fuzz_operation(op: Any, headers: dict[str, str], ids: dict[str, Any], statuses: Counter[int],
                   crossed: list[str]) -> None:
    label = f"{op.method.upper()} {op.path}"
    tenant_route = op.path.startswith("/v1/")

    @given(case=op.as_strategy(), whose=st.sampled_from(["generated", "mine", "mine", "other"]))
    @hsettings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def fuzz(case: Any, whose: str) -> None:
        params = case.path_parameters or {}
        named = [p for p in params if p in ("rule_id", "task_id", "log_id")]
        if whose != "generated":
            for p in named:
                params[p] = ids[whose][p]
        # the store by name: as generated; none (the token's store: the route's own logic runs); the other one
        query = {k: v for k, v in (case.query or {}).items() if whose == "generated" or k != "store_id"}
        given_headers = {k: v for k, v in (case.headers or {}).items()
                         if whose == "generated" or k.lower() != "x-wooflow-store"}
        if whose == "other" and tenant_route:
            query["store_id"] = ids["other"]["store_id"]
        case.query = query if case.query is not None or query else case.query
        case.headers = {**given_headers, **headers}  # a valid store token, always
        response = case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])
        statuses[response.status_code] += 1
        if whose == "other" and tenant_route and response.status_code < 400:
            crossed.append(f"{label} {params} → {response.status_code}")
        assert response.status_code >= 400 or ids["other"]["store_id"] not in response.text, \
            f"{label} answered with another store's data: {response.text[:300]}"

    fuzz()


def test_schemathesis_no_5xx_no_schema_violations_no_other_store(tenants) -> None:  # type: ignore[no-untyped-def]
    app, _, headers, ids = tenants
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    statuses: Counter[int] = Counter()
    crossed: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    for op in operations:
        fuzz_operation(op, headers, ids, statuses, crossed)
    print(f"\nschemathesis: {len(operations)} operations, {sum(statuses.values())} cases, "
          f"statuses {dict(sorted(statuses.items()))}")
    assert not crossed, crossed
    assert not [s for s in statuses if s >= 500]


def test_another_stores_ids_are_404_for_every_operation(tenants) -> None:  # type: ignore[no-untyped-def]
    """Every operation of the schema that takes an id, given the other store's id with this
    store's token; every operation given the other store by name. New operations are covered
    as they appear in the schema."""
    _, client, headers, ids = tenants
    other = ids["other"]
    schema = client.get("/openapi.json").json()
    answers: dict[str, int] = {}
    for path, item in schema["paths"].items():
        for method, spec in item.items():
            params = {p["name"] for p in spec.get("parameters", []) if p["in"] == "path"}
            takes_store = "store_id" in {p["name"] for p in spec.get("parameters", [])}
            if not params & {"rule_id", "task_id", "log_id"} and not takes_store:
                continue  # public token routes (unsubscribe, cart recovery): the token is the authority
            url = path.format(**{p: other.get(p, "x") for p in params})
            body = {"order_id": 1} if path.endswith("dry-run") else RULE if method in ("post", "put") else {}
            if params & {"rule_id", "task_id", "log_id"}:
                answers[f"{method.upper()} {url}"] = client.request(method, url, json=body, headers=headers).status_code
            # naming the other store, by header and by parameter
            named = client.request(method, url, json=body, headers={**headers, "X-Wooflow-Store": other["store_id"]})
            answers[f"{method.upper()} {url} as {other['store_id']}"] = named.status_code
            named = client.request(method, url, json=body, headers=headers, params={"store_id": other["store_id"]})
            answers[f"{method.upper()} {url}?store_id=other"] = named.status_code
    wrong = {k: v for k, v in answers.items() if v not in (403, 404)}
    assert not wrong, wrong
    assert len(answers) >= 35, answers  # 17 operations by name, twice; 5 by id
    # listings filtered by the other store's ids find nothing of it
    for url, params in (("/v1/logs", {"rule_id": other["rule_id"]}), ("/v1/tasks", {"rule_id": other["rule_id"],
                                                                                   "status": "all"}),
                        ("/v1/consents", {"email": other["email"]}), ("/v1/rules", {})):
        r = client.get(url, params=params, headers=headers)
        assert r.status_code == 200 and other["store_id"] not in r.text, (url, r.text[:300])
    # and the other store's rule is untouched
    assert client.get(f"/v1/rules/{other['rule_id']}",
                      headers={"Authorization": headers["Authorization"]}).status_code == 404


# --- defects the fuzzing found --------------------------------------------------------------

def test_nul_character_in_a_query_or_body_is_a_422_not_a_500(tenants) -> None:  # type: ignore[no-untyped-def]
    """PostgreSQL refuses NUL in text with an error, which surfaced as a 500."""
    _, client, headers, _ = tenants
    for method, url, kwargs in (
            ("GET", "/v1/logs", {"params": {"status": "\x00"}}),
            ("GET", "/v1/consents", {"params": {"email": "a\x00@example.com"}}),
            ("GET", "/v1/rules", {"params": {"group_label": "\x00"}}),
            ("POST", "/v1/rules", {"json": {**RULE, "name": "nul \x00 name"}}),
            ("POST", "/v1/consents", {"json": {"email": "x\x00@example.com", "granted": False}}),
            ("GET", "/v1/rules/99999999999999999999", {})):
        r = client.request(method, url, headers=headers, **kwargs)
        assert r.status_code == 422, (method, url, r.status_code, r.text)
        assert r.json()["error"] in ("invalid_value", "validation_error"), r.text


def test_every_422_has_the_documented_shape(tenants) -> None:  # type: ignore[no-untyped-def]
    """FastAPI documented 422 as `{"detail": [...]}`; the API answers `{"error", "message", "errors"}`
    (validation) and `{"detail": "..."}` (a route's own refusal) — neither matched."""
    _, client, headers, _ = tenants
    documented = client.get("/openapi.json").json()["components"]["schemas"]["HTTPValidationError"]
    assert set(documented["required"]) == {"error", "message"}
    for method, url, kwargs in (("GET", "/v1/consents", {}), ("POST", "/v1/rules", {"json": {"name": 1}}),
                                ("GET", "/v1/logs", {"params": {"limit": "many"}})):
        r = client.request(method, url, headers=headers, **kwargs)
        assert r.status_code == 422 and {"error", "message"} <= set(r.json()), r.text
