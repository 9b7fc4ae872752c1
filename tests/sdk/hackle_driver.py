"""Drive the unmodified ``hackle-sdk`` package against a magpie server, in its own process.

``hackle.Client`` is a process-wide singleton, so each scenario runs in a fresh interpreter:
``python tests/sdk/hackle_driver.py < scenario.json``. The scenario names the server, the key
and a list of steps; the script prints one JSON object: what the SDK decided, and every
warning or error the SDK logged (an SDK that cannot reach its server only logs).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from hackle import hackle
from hackle.config import HackleConfig
from hackle.model import HackleEvent, HackleUser, PropertyOperations


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _user(raw: dict[str, Any]) -> HackleUser:
    builder = HackleUser.builder()
    if "id" in raw:
        builder.id(raw["id"])
    if "userId" in raw:
        builder.user_id(raw["userId"])
    if "deviceId" in raw:
        builder.device_id(raw["deviceId"])
    builder.properties(raw.get("properties", {}))
    return builder.build()


def _operations(raw: list[list[Any]]) -> PropertyOperations:
    builder = PropertyOperations.builder()
    for op, *args in raw:
        getattr(builder, op)(*args)
    return builder.build()


def main() -> None:
    scenario = json.load(sys.stdin)
    logger = logging.getLogger("hackle-driver")
    collect = _Collect()
    logger.addHandler(collect)
    logger.setLevel(logging.INFO)
    config = (
        HackleConfig.builder().sdk_url(scenario["url"]).event_url(scenario["url"]).monitoring_enabled(False).build()
    )
    client = hackle.Client(sdk_key=scenario["key"], logger=logger, config=config)
    results: list[Any] = []
    for step in scenario["steps"]:
        user = _user(step.get("user", {"userId": "driver"}))
        if step["op"] == "variation":
            results.append(client.variation_detail(step["experiment"], user).reason)
        elif step["op"] == "feature_flag":
            results.append(client.feature_flag_detail(step["feature"], user).reason)
        elif step["op"] == "track":
            event = HackleEvent.builder(step["key"]).properties(step.get("properties", {}))
            if "value" in step:
                event.value(step["value"])
            client.track(event.build(), user)
        elif step["op"] == "properties":
            client.update_user_properties(_operations(step["operations"]), user)
    client.close()  # flushes the queued events synchronously
    json.dump({"results": results, "logged": collect.messages}, sys.stdout)


if __name__ == "__main__":
    main()
