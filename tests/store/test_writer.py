"""The process writer `magpie serve` uses: same answers as the thread writer, and it survives its child dying."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from magpie.config import Settings
from magpie.store.writer import ProcessWriter
from tests.support import AppClient, Env, make_env


@pytest.fixture
def process_client(settings: Settings) -> Iterator[AppClient]:
    with AppClient(settings.with_(writer="process")) as client:
        yield client


def test_process_writer_applies_and_rejects_like_the_thread_writer(process_client: AppClient) -> None:
    env = make_env(process_client.app.db)
    assert isinstance(process_client.app.ctx.writer, ProcessWriter)  # type: ignore[union-attr]
    ok = process_client.post(
        "/v1/properties", json={"userId": "u1", "operations": {"$increment": {"n": 2}}}, headers=env.headers
    )
    bad = process_client.post("/v1/properties", json={"userId": "u1", "operations": {"$nope": {}}}, headers=env.headers)
    assert ok.status_code == 200
    assert (bad.status_code, bad.json()["code"]) == (400, "INVALID_REQUEST")
    responses = process_client.gather(
        [
            (
                "POST",
                "/v1/properties",
                {"json": {"userId": "u1", "operations": {"$increment": {"n": 1}}}, "headers": env.headers},
            )
        ]
        * 50
    )
    assert {r.status_code for r in responses} == {200}
    assert process_client.user(env, "u1")["properties"] == {"n": 52}


def test_process_writer_revoked_key_leaves_the_cache(process_client: AppClient) -> None:
    from magpie.store import accounts

    env = make_env(process_client.app.db)
    body = {"userId": "u1", "operations": {"$set": {"a": 1}}}
    assert process_client.post("/v1/properties", json=body, headers=env.headers).status_code == 200
    accounts.revoke_api_key(process_client.app.db, key_or_prefix=env.key)
    assert process_client.post("/v1/properties", json=body, headers=env.headers).json()["code"] == "INVALID_API_KEY"
    assert env.key not in process_client.app.ctx.auth._cache  # type: ignore[union-attr]


@pytest.mark.alone  # counts restarts: a loaded machine can time out a starting child once more
def test_process_writer_restarts_after_its_child_is_killed(process_client: AppClient) -> None:
    env: Env = make_env(process_client.app.db)
    writer = process_client.app.ctx.writer  # type: ignore[union-attr]
    assert isinstance(writer, ProcessWriter)
    body = {"userId": "u1", "operations": {"$increment": {"n": 1}}}
    assert process_client.post("/v1/properties", json=body, headers=env.headers).status_code == 200
    first_pid = writer._process.pid
    os.kill(first_pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    statuses = []
    while time.monotonic() < deadline:
        response = process_client.post("/v1/properties", json=body, headers=env.headers)
        statuses.append(response.status_code)
        if response.status_code == 200:
            break
        assert (response.status_code, response.json()["code"]) == (503, "SERVICE_UNAVAILABLE")
        time.sleep(0.1)
    assert statuses[-1] == 200
    assert writer._process.pid != first_pid
    n = process_client.user(env, "u1")["properties"]["n"]
    assert n == 1 + statuses.count(200)
