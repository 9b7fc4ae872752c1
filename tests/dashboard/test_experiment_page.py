"""The campaign page's experiment section over the real ASGI app, after real sends and conversions."""

from __future__ import annotations

import re
import urllib.parse

from tests.dashboard.test_session import _send, _sign_in
from tests.dispatch.test_experiments import _report, _rows, _track
from tests.dispatch.test_experiments import _send as send_experiment
from tests.support import AppClient, Env, apply_campaign


def test_experiment_page_shows_each_arm_with_interval_chart_and_csv(client: AppClient, env: Env) -> None:
    users = [f"user{i}" for i in range(50)]
    send_experiment(client, env, users)
    (sent_at,) = _rows(client, "SELECT MAX(exposed_at) FROM exposures WHERE env_id = ?", (env.id,))[0]
    for i, user in enumerate(users[::4]):
        _track(client, env, user, at=sent_at + 5, insert_id=f"p{i}", currency="KRW", amount=10)
    report = _report(client, env)
    cookies = _sign_in(client, env)
    response = _send(client, "GET", f"/dashboard/{env.name}/campaigns/7", cookies=cookies)
    assert response.status_code == 200, response.text[:2000]
    html = response.text
    section = html[html.index('id="experiment"') :]
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", section))
    assert "Not final while the campaign runs" in text
    for arm in report["versions"][0]["arms"]:
        low, high = arm["interval"]
        assert f"{arm['name']}" in text
        assert f"{arm['conversionRate'] * 100:.2f}% {low * 100:.2f}% – {high * 100:.2f}%" in text
    assert 'data-experiment-chart="experiment-chart"' in section
    assert '<script src="/dashboard/static/experiments.js" defer></script>' in section
    link = re.search(r'href="data:text/csv;charset=utf-8,([^"]+)"', section)
    assert link is not None
    csv_text = urllib.parse.unquote(link.group(1).replace("&amp;", "&"))
    assert csv_text == _report(client, env, format="csv")
    assert client.get("/dashboard/static/experiments.js").status_code == 200


def test_experiment_page_has_no_section_without_an_experiment(client: AppClient, env: Env) -> None:
    apply_campaign(client, env)
    cookies = _sign_in(client, env)
    response = _send(client, "GET", f"/dashboard/{env.name}/campaigns/7", cookies=cookies)
    assert response.status_code == 200
    assert 'id="experiment"' not in response.text
