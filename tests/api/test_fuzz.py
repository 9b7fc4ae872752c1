"""Schemathesis against both OpenAPI documents of a real server: no 5xx, every answer as documented.

Every operation of the public document (``/openapi.json``) and of the admin document
(``/admin/openapi.json``) gets generated requests with real credentials; half of the path
parameters are replaced by ids that exist (environment, campaign key, dispatch, user, device,
cohort), so that requests reach past the lookups.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from magpie.config import Settings
from magpie.store import campaigns
from magpie.store.db import Database
from tests.support import Env, ServerProcess, make_env, store_campaign

# At least 3,000 generated requests per run and engine.
TOTAL_CASES = 3000
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


class Target:
    def __init__(self, server: ServerProcess, env: Env, real: dict[str, Any]) -> None:
        self.server = server
        self.env = env
        self.real = real


@pytest.fixture(
    scope="module", params=[pytest.param("sqlite", id="sqlite"), pytest.param("pg", id="pg", marks=pytest.mark.pg)]
)
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz") / "data"
    url = request.getfixturevalue("pg_database") if request.param == "pg" else None
    db = Database(Settings(data_dir=data_dir, database_url_override=url).database_url)
    db.upgrade()
    env = make_env(db)
    store_campaign(db, env)
    campaigns.set_cohort(db, env_id=env.id, name="vip", members=["u"])
    server = ServerProcess(
        data_dir=data_dir,
        database_url=url,
        env={
            "MAGPIE_BOOTSTRAP": "0",
            "MAGPIE_WORKERS": "1",
            # Generated SDK keys in paths fail authentication; without this the throttle would answer
            # (documented) 429s to every later case and the search would stop reaching the handlers.
            "MAGPIE_AUTH_FAILURES_PER_SECOND": "0",
        },
    )
    with server:
        headers = {"X-HACKLE-API-KEY": env.key}
        httpx.post(
            server.url + "/v1/properties", json={"userId": "u", "operations": {"$set": {"a": 1}}}, headers=headers
        )
        httpx.post(
            server.url + "/v1/push-tokens",
            json={"deviceId": "d", "userId": "u", "providerType": "FCM", "token": "tok"},
            headers=headers,
        )
        sent = httpx.post(
            server.url + "/v1/push-message/trigger/send",
            json={"campaignKey": 7, "users": [{"userId": "u"}]},
            headers=headers,
        )
        assert sent.status_code == 200, sent.text
        real = {
            "env": env.name,
            "dispatchId": sent.json()["dispatchId"],
            "campaignKey": 7,
            "key": 7,
            "userId": "u",
            "deviceId": "d",
            "name": "vip",
            "sdkKey": env.key,
            "dispatch_id": sent.json()["dispatchId"],
            "user_id": "u",
            "device_id": "d",
        }
        yield Target(server, env, real)


def _operations(target: Target, path: str) -> list[Any]:
    schema = schemathesis.openapi.from_url(target.server.url + path)
    return [result.ok() for result in schema.get_all_operations()]


def _fuzz(target: Target, operations: list[Any], headers: dict[str, str], per_operation: int) -> tuple[int, list[str]]:
    calls = 0
    failures: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy(), use_real=st.booleans())
        @settings(
            max_examples=per_operation,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any, use_real: bool) -> None:
            nonlocal calls
            if use_real and case.path_parameters:
                for name in case.path_parameters:
                    if name in target.real:
                        case.path_parameters[name] = target.real[name]
            calls += 1
            response = case.call(base_url=target.server.url, headers=headers, timeout=30)
            case.validate_response(response, checks=CHECKS)

        try:
            run()
        except Exception as exc:  # report every operation's first failure, not just the first operation's
            failures.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:1500]}")
    return calls, failures


@pytest.mark.slow
def test_fuzz_public_and_admin_documents(target: Target) -> None:
    public = _operations(target, "/openapi.json")
    admin = _operations(target, "/admin/openapi.json")
    per_operation = math.ceil(TOTAL_CASES / (len(public) + len(admin)))
    public_calls, public_failures = _fuzz(
        target, public, {"X-HACKLE-API-KEY": target.env.key, "X-HACKLE-SDK-KEY": target.env.key}, per_operation
    )
    admin_calls, admin_failures = _fuzz(
        target, admin, {"Authorization": f"Bearer {target.env.admin_token}"}, per_operation
    )
    print(
        f"[fuzz] public: {len(public)} operations, {public_calls} cases; "
        f"admin: {len(admin)} operations, {admin_calls} cases"
    )
    assert public_failures + admin_failures == []
    assert public_calls + admin_calls >= TOTAL_CASES
    server_log = target.server.output()
    assert "Traceback" not in server_log, server_log[-3000:]
