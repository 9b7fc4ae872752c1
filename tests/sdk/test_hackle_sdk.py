"""The unmodified ``hackle-sdk`` package (pinned in pyproject) against a real magpie server.

Each scenario runs the SDK in its own interpreter (``hackle.Client`` is a singleton) with
``sdk_url`` and ``event_url`` set to a ``magpie serve`` on a loopback port, exactly the
configuration the README shows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from magpie.config import Settings
from magpie.store.db import Database
from tests.sdk.batches import eventually
from tests.support import Env, ServerProcess, magpie_cli, make_env

DRIVER = Path(__file__).with_name("hackle_driver.py")
HACKLE_SDK_VERSION = "3.9.0"


@dataclass
class Server:
    process: ServerProcess
    env: Env
    settings: Settings

    @property
    def url(self) -> str:
        return self.process.url

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, headers=self.env.admin, timeout=10)

    def user(self, user_id: str) -> dict[str, Any]:
        response = self.get(f"/admin/v1/environments/{self.env.name}/users/{user_id}")
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def events(self, user_id: str) -> list[dict[str, Any]]:
        response = self.get(f"/admin/v1/environments/{self.env.name}/users/{user_id}/events")
        assert response.status_code == 200, response.text
        events: list[dict[str, Any]] = response.json()["events"]
        return events


@pytest.fixture
def server(settings: Settings) -> Iterator[Server]:
    db = Database(settings.database_url)
    db.upgrade()
    env = make_env(db)
    process = ServerProcess(
        data_dir=settings.data_dir,
        database_url=settings.database_url_override,
        env={"MAGPIE_WORKERS": "0", "MAGPIE_BOOTSTRAP": "0"},
    )
    with process:
        yield Server(process=process, env=env, settings=settings)


def run_sdk(server: Server, steps: list[dict[str, Any]]) -> dict[str, Any]:
    scenario = {"url": server.url, "key": server.env.key, "steps": steps}
    done = subprocess.run(
        [sys.executable, str(DRIVER)], input=json.dumps(scenario), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout)
    assert result["logged"] == [], result["logged"]  # the SDK logs every failed fetch or dispatch
    return result


def test_hackle_sdk_is_the_pinned_unmodified_release() -> None:
    from importlib.metadata import distribution

    dist = distribution("hackle-sdk")
    assert dist.version == HACKLE_SDK_VERSION
    assert not (dist.read_text("direct_url.json") or "").strip()  # installed from the index, not a path
    assert f'"hackle-sdk=={HACKLE_SDK_VERSION}"' in (Path(__file__).parents[2] / "pyproject.toml").read_text()


def test_hackle_sdk_initialises_and_tracks(server: Server) -> None:
    user = {"userId": "sdk-user", "deviceId": "sdk-device", "properties": {"age": 30}}
    result = run_sdk(
        server,
        [
            {"op": "variation", "experiment": 1},
            {"op": "feature_flag", "feature": 1},
            {"op": "track", "key": "purchase", "value": 3.5, "properties": {"sku": "p-1"}, "user": user},
            {"op": "track", "key": "view", "user": user},
        ],
    )
    # With no workspace the SDK answers SDK_NOT_READY: these reasons mean it initialised.
    assert result["results"] == ["EXPERIMENT_NOT_FOUND", "FEATURE_FLAG_NOT_FOUND"]
    events = eventually(lambda: len(server.events("sdk-user")) == 2 and server.events("sdk-user"))
    purchase = next(e for e in events if e["key"] == "purchase")
    assert (purchase["value"], purchase["properties"]) == (3.5, {"sku": "p-1"})
    assert purchase["identifiers"] == {"$userId": "sdk-user", "$deviceId": "sdk-device"}
    assert purchase["context"] == {"userProperties": {"age": 30}}
    assert [d["deviceId"] for d in server.user("sdk-user")["devices"]] == ["sdk-device"]


def test_hackle_sdk_sees_event_types_the_environment_knows(server: Server) -> None:
    response = httpx.post(
        server.url + "/v1/track",
        json={"event": {"key": "purchase"}, "user": {"userId": "someone"}},
        headers={"X-HACKLE-API-KEY": server.env.key},
    )
    assert response.status_code == 200
    run_sdk(server, [{"op": "track", "key": "purchase"}, {"op": "track", "key": "never-seen-before"}])
    keys = {e["key"] for e in eventually(lambda: len(server.events("driver")) == 2 and server.events("driver"))}
    assert keys == {"purchase", "never-seen-before"}
    config = httpx.get(f"{server.url}/api/v2/workspaces/{server.env.key}/config").json()
    assert {e["key"] for e in config["events"]} == {"purchase", "never-seen-before"}


_OPERATIONS: list[list[Any]] = [
    ["set", "grade", "GOLD"],
    ["set", "age", 42],
    ["set_once", "grade", "IGNORED"],
    ["set_once", "signup", "2020-01-01"],
    ["set_once", "kept", "new"],
    ["unset", "membership"],
    ["increment", "visits", 2],
    ["increment", "score", 1.5],
    ["append", "tags", "c"],
    ["append", "fresh", ["x", 1]],
]
_HTTP_OPERATIONS = {
    "$set": {"grade": "GOLD", "age": 42},
    "$setOnce": {"signup": "2020-01-01", "kept": "new"},
    "$unset": {"membership": "-"},
    "$increment": {"visits": 2, "score": 1.5},
    "$append": {"tags": "c", "fresh": ["x", 1]},
}
_BEFORE = {"$set": {"membership": "GOLD", "visits": 1, "tags": ["a", "b"], "kept": "old"}}


def test_hackle_sdk_update_user_properties_equals_http_properties(server: Server) -> None:
    headers = {"X-HACKLE-API-KEY": server.env.key}
    for user_id in ("http-user", "sdk-user"):
        body = {"userId": user_id, "operations": _BEFORE}
        assert httpx.post(server.url + "/v1/properties", json=body, headers=headers).status_code == 200
    body = {"userId": "http-user", "operations": _HTTP_OPERATIONS}
    assert httpx.post(server.url + "/v1/properties", json=body, headers=headers).status_code == 200
    run_sdk(server, [{"op": "properties", "operations": _OPERATIONS, "user": {"userId": "sdk-user"}}])
    expected = server.user("http-user")["properties"]
    assert expected == {
        "visits": 3,
        "tags": ["a", "b", "c"],
        "kept": "old",
        "grade": "GOLD",
        "age": 42,
        "signup": "2020-01-01",
        "score": 1.5,
        "fresh": ["x", 1],
    }
    eventually(lambda: server.user("sdk-user")["properties"] == expected)
    stored = next(e for e in server.events("sdk-user") if e["key"] == "$properties")
    assert stored["userProperties"] == expected


def test_hackle_sdk_events_are_not_applied_retroactively(server: Server) -> None:
    user = {"userId": "member"}
    run_sdk(
        server,
        [
            {"op": "properties", "operations": [["set", "grade", "SILVER"]], "user": user},
            {"op": "track", "key": "A", "user": user},
            {"op": "properties", "operations": [["set", "grade", "GOLD"]], "user": user},
            {"op": "track", "key": "B", "user": user},
        ],
    )
    events = {e["key"]: e for e in eventually(lambda: len(server.events("member")) == 4 and server.events("member"))}
    assert events["A"]["userProperties"] == {"grade": "SILVER"}
    assert events["B"]["userProperties"] == {"grade": "GOLD"}
    run_sdk(server, [{"op": "properties", "operations": [["set", "grade", "PLATINUM"]], "user": user}])
    eventually(lambda: server.user("member")["properties"] == {"grade": "PLATINUM"})
    events = {e["key"]: e for e in server.events("member")}
    assert events["A"]["userProperties"] == {"grade": "SILVER"}


def test_cli_user_show_lists_the_events(server: Server) -> None:
    run_sdk(server, [{"op": "track", "key": "purchase", "user": {"userId": "shown"}}])
    eventually(lambda: server.events("shown"))
    done = magpie_cli(
        "user",
        "show",
        "shown",
        "--env",
        server.env.name,
        "--json",
        data_dir=server.settings.data_dir,
        database_url=server.settings.database_url_override,
    )
    assert done.returncode == 0, done.stderr
    view = json.loads(done.stdout)
    assert [e["key"] for e in view["recentEvents"]] == ["purchase"]


def test_readme_shows_the_sdk_configuration_the_tests_use() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Using Hackle's SDKs with magpie", 1)[1].split("\n## ", 1)[0]
    driver = DRIVER.read_text()
    for call in (".sdk_url(", ".event_url(", ".monitoring_enabled(False)", "hackle.Client(sdk_key="):
        assert call in section, call
        assert call in driver, call
