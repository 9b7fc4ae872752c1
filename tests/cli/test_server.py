"""``magpie serve`` says what it does: start and shutdown lines, the access log, the reuse-port path."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

import magpie
from magpie.cli.server import data_location
from magpie.config import Settings
from tests.support import ROOT, ServerProcess, free_port


def _records(output: str) -> list[dict[str, Any]]:
    found = []
    for line in output.splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                pass
    return found


def test_serve_says_where_it_listens_and_what_it_drained(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = ServerProcess(data_dir=data).start()
    try:
        lines = server.output().splitlines()
        start = next(line for line in lines if line.startswith("magpie ") and "listening on" in line)
        assert f"magpie {magpie.__version__} listening on {server.url}" in start
        assert "role api+dispatch (1 worker)" in start and f"sqlite at {data.resolve() / 'magpie.db'}" in start
        record = next(r for r in _records(server.output()) if r.get("event") == "started")
        assert record["url"] == server.url and record["engine"] == "sqlite" and record["version"] == magpie.__version__
        assert record["role"].startswith("api+dispatch") and record["data"].endswith("magpie.db")
    finally:
        server.stop()
    out = server.output()
    assert "magpie stopped after" in out and "pending writes committed" in out
    stopped = next(r for r in _records(out) if r.get("event") == "stopped")
    assert stopped["connections"] >= 0 and stopped["requests"] >= 0

    # A second start, on the same store, still says where it listens (and no credentials).
    with ServerProcess(data_dir=data) as again:
        assert "listening on" in again.output() and "API key:" not in again.output()


def test_start_line_never_shows_a_database_password() -> None:
    settings = Settings(database_url_override="postgresql://magpie:s3cret@db.internal:5433/magpie?sslmode=require")
    shown = data_location(settings)
    assert shown == "postgresql://magpie@db.internal:5433/magpie"
    assert "s3cret" not in shown


def test_access_log_names_route_templates_and_never_keys_or_bodies(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ServerProcess(data_dir=data, env={"MAGPIE_ACCESS_LOG": "1", "MAGPIE_WORKERS": "0"}) as server:
        key, token = server.credentials()
        headers = {"X-HACKLE-API-KEY": key}
        body = {"userId": "user-4417", "operations": {"$set": {"grade": "PLATINUM-SECRET"}}}
        assert httpx.post(server.url + "/v1/properties", json=body, headers=headers).status_code == 200
        missing = "7b0c0c5e-0000-4000-8000-000000000000"
        assert httpx.get(f"{server.url}/v1/push-message/dispatches/{missing}", headers=headers).status_code == 404
        admin = httpx.get(
            server.url + "/admin/v1/environments/development/users/user-4417",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert admin.status_code == 200
        assert (
            httpx.post(server.url + "/v1/properties", json=body, headers={"X-HACKLE-API-KEY": "mgp_wrong"}).status_code
            == 401
        )
        time.sleep(0.3)
        out = server.output()
    requests = [r for r in _records(out) if r.get("event") == "request"]
    routes = [(r["method"], r["route"], r["status"], r.get("environment")) for r in requests]
    assert ("POST", "/v1/properties", 200, "development") in routes, routes
    assert ("GET", "/v1/push-message/dispatches/{dispatchId}", 404, "development") in routes, routes
    assert ("GET", "/admin/v1/environments/{env}/users/{user_id}", 200, "development") in routes, routes
    assert ("POST", "/v1/properties", 401, None) in routes, routes
    assert all(isinstance(r["durationMs"], float | int) and r["durationMs"] >= 0 for r in requests)
    logged = "\n".join(json.dumps(r) for r in requests)
    for secret in (key, token, "PLATINUM-SECRET", "user-4417", missing, "mgp_wrong"):
        assert secret not in logged


def test_no_access_log_unless_asked(tmp_path: Path) -> None:
    with ServerProcess(data_dir=tmp_path / "data", env={"MAGPIE_WORKERS": "0"}) as server:
        httpx.get(server.url + "/healthz")
        time.sleep(0.2)
        assert not [r for r in _records(server.output()) if r.get("event") == "request"]


@pytest.mark.parametrize("reuse", [pytest.param("1", id="reuse-port"), pytest.param("0", id="plain")])
def test_small_requests_answer_without_the_nagle_delay(tmp_path: Path, reuse: str) -> None:
    """Through the SO_REUSEPORT path too, accepted connections get TCP_NODELAY (no ~40 ms stalls)."""
    env = {"MAGPIE_REUSE_PORT": reuse, "MAGPIE_WORKERS": "0"}
    with ServerProcess(data_dir=tmp_path / "data", env=env) as server:
        key, _ = server.credentials()
        headers = {"X-HACKLE-API-KEY": key}
        with httpx.Client(base_url=server.url, headers=headers) as client:  # one keep-alive connection
            timings = []
            for i in range(60):
                started = time.perf_counter()
                response = client.post("/v1/properties", json={"userId": f"u{i % 5}", "operations": {"$set": {"n": i}}})
                timings.append(time.perf_counter() - started)
                assert response.status_code == 200
    assert statistics.median(timings[10:]) < 0.020, sorted(timings)


def test_sigterm_to_the_whole_process_group_stops_cleanly(tmp_path: Path) -> None:
    """A service manager or Ctrl-C signals every process of the group: the writer process waits for the server."""
    import os
    import signal
    import subprocess
    import sys

    from tests.support import ROOT, first_run_credentials, free_port

    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "MAGPIE_DATA_DIR": str(tmp_path / "data"), "MAGPIE_PORT": str(port), "MAGPIE_WORKERS": "0"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "magpie.cli", "serve"],
            env=env,
            stdout=out,
            stderr=out,
            cwd=ROOT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while "listening on" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        key, _ = first_run_credentials(log.read_text())
        body = {"userId": "u", "operations": {"$set": {"a": 1}}}
        url = f"http://127.0.0.1:{port}/v1/properties"
        assert httpx.post(url, json=body, headers={"X-HACKLE-API-KEY": key}).status_code == 200
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    out_text = log.read_text()
    assert "magpie stopped after" in out_text
    assert "exited unexpectedly" not in out_text, out_text


@pytest.mark.pg
def test_start_line_on_postgresql_names_the_host_without_the_password(pg_database: str, tmp_path: Path) -> None:
    import psycopg

    url = pg_database.replace("postgresql://postgres@", "postgresql://postgres:start-line-secret@", 1)
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.Error:
        url = pg_database  # the server checks passwords: keep the URL as the tests were given it
    with ServerProcess(data_dir=tmp_path / "data", database_url=url, env={"MAGPIE_WORKERS": "0"}) as server:
        out = server.output()
    start = next(line for line in out.splitlines() if "listening on" in line and not line.startswith("{"))
    assert " · postgresql at postgresql://" in start and pg_database.rsplit("/", 1)[1] in start
    record = next(r for r in _records(out) if r.get("event") == "started")
    assert record["engine"] == "postgresql" and record["role"] == "api"
    assert "start-line-secret" not in out


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_json_start_writes_only_json_lines_to_stdout(tmp_path: Path, command: str) -> None:
    port = free_port()
    environ = dict(os.environ, MAGPIE_DATA_DIR=str(tmp_path / "data"), MAGPIE_PORT=str(port), MAGPIE_HOST="127.0.0.1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "magpie.cli", command, "--json"],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (tmp_path / "data" / "magpie.db-wal").exists():
            time.sleep(0.05)
        if command == "serve":
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.05)
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    lines = stdout.decode().splitlines()
    events = [json.loads(line)["event"] for line in lines]  # every line is one JSON document
    expected = ["created", "started", "stopped"] if command == "serve" else ["started", "stopped"]
    assert events == expected, stdout
    assert "listening on" in stderr.decode() or command == "worker"
    assert "magpie stopped after" in stderr.decode()
