"""The experiment section in Debian's Chromium against a real ``magpie serve``: the table and the chart."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.chromium import screenshot
from tests.dashboard.served import served

pytestmark = pytest.mark.browser

VARIANTS = [
    {"name": "Plain", "weight": 1, "message": {"title": "New arrivals", "body": "Take a look"}},
    {"name": "Personal", "weight": 1, "message": {"title": "{{ user.id }}, new arrivals for you", "body": "Look"}},
]


def test_browser_experiment_section_draws_cumulative_conversions(page: Any, tmp_path: Any) -> None:
    with served(tmp_path / "data") as magpie:
        magpie.admin(
            "POST",
            "/campaigns",
            {
                "key": 23,
                "name": "Experiment",
                "status": "ACTIVE",
                "purpose": "INFORMATION",
                "provider": "sandbox",
                "consentRule": "SUBSCRIBED_OR_UNKNOWN",
                "goal": {"event": "purchase", "window": "24h", "value": "amount"},
                "controlGroup": 20,
                "variants": VARIANTS,
            },
        )
        users = [f"shopper-{i}" for i in range(40)]
        for user in users:
            token = {"userId": user, "deviceId": f"dev-{user}", "providerType": "FCM", "token": f"tok-{user}"}
            magpie.ok("/v1/push-tokens", token)
        answer = magpie.ok(
            "/v1/push-message/trigger/send", {"campaignKey": 23, "users": [{"userId": u} for u in users]}
        )
        assert magpie.settle(answer["dispatchId"])["status"] == "COMPLETED"
        now = int(time.time() * 1000)
        for i, user in enumerate(users[::3]):
            event = {
                "event": {"key": "purchase", "properties": {"amount": 1000 + i}},
                "user": {"userId": user},
                "timestamp": now + 1000,
                "insertId": f"buy-{i}",
            }
            magpie.ok("/v1/track", event)
        magpie.sign_in(page, "/dashboard/development/campaigns/23")
        section = page.locator("section[aria-labelledby=experiment]")
        assert section.locator("tbody tr").count() == 3  # control, Plain, Personal
        assert "Not final while the campaign runs" in section.inner_text()
        page.wait_for_function("() => window.Chart && window.Chart.getChart('experiment-chart')")
        lines = page.evaluate("() => window.Chart.getChart('experiment-chart').data.datasets.map(d => d.label)")
        assert lines == ["control", "Plain", "Personal"]
        report = magpie.admin("GET", "/campaigns/23/experiment")
        total = sum(a["conversions"] for a in report["versions"][0]["arms"])
        drawn = page.evaluate(
            "() => window.Chart.getChart('experiment-chart').data.datasets.map(d => d.data[d.data.length - 1])"
        )
        assert sum(drawn) == total == len(users[::3])
        section.scroll_into_view_if_needed()
        screenshot(page, "campaign-experiment")
        page.get_by_role("link", name="한국어").click()
        section = page.locator("section[aria-labelledby=experiment]")
        assert "캠페인이 진행되는 동안에는 확정된 결과가 아닙니다" in section.inner_text()
        page.wait_for_function("() => window.Chart && window.Chart.getChart('experiment-chart')")
        lines = page.evaluate("() => window.Chart.getChart('experiment-chart').data.datasets.map(d => d.label)")
        assert lines == ["대조군", "Plain", "Personal"]
        section.scroll_into_view_if_needed()
        screenshot(page, "campaign-experiment-ko")
