"""``magpie stats campaign`` for a campaign with an experiment: text, JSON and CSV."""

from __future__ import annotations

import json

from magpie.config import Settings
from tests.dispatch.test_experiments import _report, _rows, _track
from tests.dispatch.test_experiments import _send as send_experiment
from tests.support import AppClient, Env, magpie_cli


def test_cli_stats_campaign_shows_the_experiment(client: AppClient, env: Env, settings: Settings) -> None:
    users = [f"user{i}" for i in range(45)]
    send_experiment(client, env, users)
    (sent_at,) = _rows(client, "SELECT MAX(exposed_at) FROM exposures WHERE env_id = ?", (env.id,))[0]
    for i, user in enumerate(users[::2]):
        _track(client, env, user, at=sent_at + 1, insert_id=f"b{i}", currency="KRW", amount=5)
    report = _report(client, env)
    where = {"data_dir": settings.data_dir, "database_url": settings.database_url_override}
    shown = magpie_cli("stats", "campaign", "7", "--env", env.name, "--json", **where)  # type: ignore[arg-type]
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["experiment"] == report
    text = magpie_cli("stats", "campaign", "7", "--env", env.name, **where)  # type: ignore[arg-type]
    assert text.returncode == 0, text.stderr
    for arm in report["versions"][0]["arms"]:
        assert f"    {arm['name']}: exposed {arm['exposed']}," in text.stdout
        assert f"conversions {arm['conversions']} ({arm['conversionRate']:.2%}" in text.stdout
    assert "always-valid" in text.stdout
    csv_out = magpie_cli("stats", "campaign", "7", "--env", env.name, "--csv", **where)  # type: ignore[arg-type]
    assert csv_out.stdout == _report(client, env, format="csv")
