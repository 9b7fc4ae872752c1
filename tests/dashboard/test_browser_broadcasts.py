"""The broadcast pages in Debian's Chromium against a real ``magpie serve``: reach, send now, and an
occurrence page whose figures follow the scheduler and the worker without a reload."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chromium import screenshot
from tests.dashboard.served import Magpie
from tests.support import ServerProcess

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def magpie(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Magpie]:
    data_dir: Path = tmp_path_factory.mktemp("broadcasts") / "data"
    with ServerProcess(data_dir=data_dir, env={"MAGPIE_BROADCAST_POLL_SECONDS": "0.5"}) as server:
        instance = Magpie(server)
        try:
            yield instance
        finally:
            instance.http.close()


def test_broadcast_send_now_progress_refreshes_without_a_reload(magpie: Magpie, page: Any) -> None:
    for i in range(3):
        user = f"member-{i}"
        assert magpie.post("/v1/properties", {"userId": user, "operations": {"$set": {"grade": "GOLD"}}}).is_success
        if i < 2:
            token = {"userId": user, "deviceId": f"phone-{i}", "providerType": "FCM", "token": f"fcm-token-{i:04d}"}
            assert magpie.post("/v1/push-tokens", token).status_code == 200
    magpie.admin(
        "PUT",
        "/campaigns/5",
        {
            "name": "Weekly digest",
            "status": "ACTIVE",
            "purpose": "INFORMATION",
            "provider": "sandbox",
            "message": {"title": "이번 주 소식", "body": "{{ user.id }}님을 위한 소식"},
            "schedule": {"type": "weekly", "days": ["MON"], "time": "19:30"},
        },
    )
    magpie.sign_in(page, "/dashboard/development/broadcasts")
    assert "Weekly digest" in page.locator("main").inner_text()
    screenshot(page, "dashboard-broadcasts")
    page.get_by_role("link", name="#5 Weekly digest").click()
    counts = page.locator("[data-reach]").inner_text()
    assert "Reachable on Push\n2" in counts or "Reachable on Push 2" in counts, counts
    assert "NO_PUSH_TOKEN" in counts
    screenshot(page, "dashboard-broadcast")
    page.get_by_role("button", name="Send to all 2 reachable users now").click()
    page.wait_for_url("**/occurrences/*")
    page.evaluate("() => { window.__sameDocument = true; }")
    page.wait_for_function(
        "() => document.querySelector('[data-field=state]').textContent.trim() === 'completed'", timeout=30_000
    )
    assert page.evaluate("() => window.__sameDocument === true")
    assert page.locator('[data-field="sent"]').inner_text() == "2"
    assert page.locator('[data-field="remaining"]').inner_text() == "0"
    assert not page.get_by_role("button", name="Cancel").is_visible()  # over: no controls
    screenshot(page, "dashboard-occurrence")
    # In Korean: the state the page refreshes is a Korean word too.
    page.get_by_role("link", name="#5").first.click()
    page.get_by_role("link", name="한국어").click()
    page.get_by_role("button", name="보낼 수 있는 사용자 2명 모두에게 지금 발송").click()
    page.wait_for_url("**/occurrences/*")
    page.evaluate("() => { window.__sameDocument = true; }")
    page.wait_for_function(
        "() => document.querySelector('[data-field=state]').textContent.trim() === '완료'", timeout=30_000
    )
    assert page.evaluate("() => window.__sameDocument === true")
    assert page.locator('[data-field="sent"]').inner_text() == "2"
    assert "발송 2" in page.locator("[data-progress]").inner_text().replace("\n", " ")
    assert not page.get_by_role("button", name="취소").is_visible()
    screenshot(page, "dashboard-occurrence-ko")
