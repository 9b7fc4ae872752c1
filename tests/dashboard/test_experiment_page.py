"""The campaign page's experiment section over the real ASGI app, after real sends and conversions."""

from __future__ import annotations

import html as html_lib
import json
import re
import urllib.parse

import yaml

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
    # In Korean: the section's words, the control arm's name (also in the chart's legend) and the verdicts.
    korean = _send(client, "GET", f"/dashboard/{env.name}/campaigns/7", cookies={**cookies, "magpie_lang": "ko"}).text
    ko_section = korean[korean.index('id="experiment"') : korean.index("</section>", korean.index('id="experiment"'))]
    ko_text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", ko_section))
    assert "캠페인이 진행되는 동안에는 확정된 결과가 아닙니다" in ko_text and "대조군 (발송 안 함)" in ko_text
    assert "Not final" not in ko_text and "Arm" not in ko_text and " pt" not in ko_text
    legend = re.search(r'data-experiment-names="experiment-chart">([^<]*)<', ko_section)
    assert legend is not None and json.loads(legend.group(1))[0] == "대조군"
    verdicts = re.findall(r'<strong class="verdict">([^<]*)</strong>', ko_section)
    assert verdicts and set(verdicts) <= {"더 좋음", "더 나쁨", "아직 차이 없음"}


def test_experiment_page_has_no_section_without_an_experiment(client: AppClient, env: Env) -> None:
    apply_campaign(client, env)
    cookies = _sign_in(client, env)
    response = _send(client, "GET", f"/dashboard/{env.name}/campaigns/7", cookies=cookies)
    assert response.status_code == 200
    assert 'id="experiment"' not in response.text


def test_experiment_page_shows_the_definition_and_where_to_change_it(client: AppClient, env: Env) -> None:
    send_experiment(client, env, [f"user{i}" for i in range(10)])
    cookies = _sign_in(client, env)
    html = _send(client, "GET", f"/dashboard/{env.name}/campaigns/7", cookies=cookies).text
    section = html[html.index('id="experiment"') : html.index("</section>", html.index('id="experiment"'))]
    note = re.search(r"<p[^>]*data-experiment-definition>(.*?)</p>", section, re.S)
    assert note is not None and 'href="#file"' in note.group(1)
    assert "magpie campaign apply" in note.group(1) and "admin API" in note.group(1)
    # The page's file section holds the whole definition: goal with its conditions, control share, variants.
    file_text = html[html.index('id="file"') :]
    pre = re.search(r'<pre class="file">(.*?)</pre>', file_text, re.S)
    assert pre is not None
    shown = yaml.safe_load(html_lib.unescape(pre.group(1)))
    assert shown["goal"] == {"event": "purchase", "window": "1h", "value": "amount", "where": {"currency": "KRW"}}
    assert shown["controlGroup"] == 30
    assert [(v["name"], v["weight"], v["message"]["title"]) for v in shown["variants"]] == [
        ("A", 1, "A for {{ user.id }}"),
        ("B", 1, "B for {{ user.id }}"),
    ]
