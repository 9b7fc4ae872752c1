"""CSV exports on both engines: a dispatch's recipients (every outcome, reason, channel, type, masked
number, never a full number or a secret, formulas defused) and a campaign's figures, from the admin
API and the dashboard; and a 100,000-recipient dispatch read in chunks, streamed with bounded memory
by a real ``magpie serve``."""

from __future__ import annotations

import csv
import io
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from magpie.api.admin.exports import cell
from magpie.config import Settings
from magpie.store import exports
from magpie.store.db import Database
from tests.dashboard.test_session import _send, _sign_in
from tests.dispatch.test_messages import SEOUL, run
from tests.store.test_gateways import DAY, traffic  # noqa: F401 (the fixture)
from tests.support import AppClient, Env, ServerProcess, trigger

TODAY = datetime.now(SEOUL).date().isoformat()


def _rows(response: httpx.Response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text[:500]
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"].startswith('attachment; filename="')
    text = response.content.decode("utf-8")
    assert text.startswith("\ufeff")
    return list(csv.DictReader(io.StringIO(text[1:])))


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        pytest.param('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")', id="equals"),
        pytest.param("+82 10-****-0000", "'+82 10-****-0000", id="plus"),
        pytest.param("-1+2", "'-1+2", id="minus"),
        pytest.param("@SUM(A1)", "'@SUM(A1)", id="at"),
        pytest.param("\t=1", "'\t=1", id="tab"),
        pytest.param("user-1", "user-1", id="plain"),
        pytest.param(-3, -3, id="number"),
        pytest.param(None, "", id="none"),
        pytest.param(True, "true", id="bool"),
    ],
)
def test_csv_cell_defuses_formulas(value: object, shown: object) -> None:
    assert cell(value) == shown


def test_dispatch_recipients_csv_every_outcome_masked_and_filtered(
    client: AppClient,
    env: Env,
    traffic: dict[str, Any],  # noqa: F811
) -> None:
    base = f"/admin/v1/environments/{env.name}/dispatches"
    sms = _rows(client.get(f"{base}/{traffic['sms']}/recipients.csv", headers=env.admin))
    assert [(r["userId"], r["outcome"], r["reason"], r["channel"], r["type"]) for r in sms] == [
        ("u0", "SENT", "", "sms", "SMS"),
        ("u1", "SENT", "", "sms", "SMS"),
        ("u2", "SENT", "", "sms", "SMS"),
        ("u3", "EXCLUDED", "DAILY_LIMIT", "sms", ""),
    ]
    # Masked, and quoted so a spreadsheet does not read the number as a formula.
    assert [r["phoneNumber"] for r in sms] == [f"'+82 10-****-000{i}" for i in range(4)]
    assert (sms[2]["delivered"], sms[2]["reportCode"], sms[0]["delivered"]) == ("false", "3040", "true")
    assert sms[0]["provider"] == "solapi" and sms[0]["deliveryStatus"] == "SENT"
    kakao = _rows(client.get(f"{base}/{traffic['kakao']}/recipients.csv", headers=env.admin))
    assert {(r["outcome"], r["reason"], r["type"]) for r in kakao} == {("UNKNOWN", "GATEWAY_UNCONFIRMED", "alimtalk")}
    push = _rows(client.get(f"{base}/{traffic['push']}/recipients.csv", headers=env.admin))
    assert [(r["userId"], r["outcome"], r["type"], r["provider"], r["phoneNumber"]) for r in push] == [
        ("u0", "SENT", "push", "sandbox", "")
    ]
    raw = b"".join(
        client.get(f"{base}/{traffic[k]}/recipients.csv", headers=env.admin).content for k in ("sms", "kakao", "push")
    ).decode()
    for leaked in ("01077770000", "+821077770000", "1077770000", "fcm-token-u0", *traffic["secrets"]):
        assert leaked not in raw, leaked

    only = _rows(client.get(f"{base}/{traffic['sms']}/recipients.csv?outcome=EXCLUDED", headers=env.admin))
    assert [r["userId"] for r in only] == ["u3"]
    bad = client.get(f"{base}/{traffic['sms']}/recipients.csv?outcome=LOST", headers=env.admin)
    assert (bad.status_code, bad.json()["code"]) == (400, "INVALID_REQUEST")
    missing = client.get(f"{base}/{uuid.uuid4()}/recipients.csv", headers=env.admin)
    assert missing.status_code == 404

    # The dashboard: the same file, from a link on the dispatch page that keeps the filter on screen.
    cookies = _sign_in(client, env)
    page = _send(client, "GET", f"/dashboard/{env.name}/dispatches/{traffic['sms']}?outcome=EXCLUDED", cookies=cookies)
    link = f"/dashboard/{env.name}/dispatches/{traffic['sms']}/recipients.csv?outcome=EXCLUDED"
    assert f'href="{link}"' in page.text
    assert _rows(_send(client, "GET", link, cookies=cookies)) == only
    unsigned = _send(client, "GET", link, follow_redirects=False)
    assert unsigned.status_code == 303 and "/dashboard/login" in unsigned.headers["location"]


def test_dispatch_recipients_csv_quotes_a_formula_user_id_and_lists_pending_recipients(
    client: AppClient, env: Env
) -> None:
    from tests.support import apply_campaign

    apply_campaign(client, env)
    hostile = "=cmd|' /C calc'!A0"
    dispatch_id = trigger(client, env, [{"userId": hostile}, {"userId": "later"}])
    url = f"/admin/v1/environments/{env.name}/dispatches/{dispatch_id}/recipients.csv"
    pending = _rows(client.get(url, headers=env.admin))  # no worker has run: named, not prepared
    assert [(r["userId"], r["outcome"]) for r in pending] == [("'" + hostile, "PENDING"), ("later", "PENDING")]
    run(client)
    done = _rows(client.get(url, headers=env.admin))
    assert [(r["userId"], r["outcome"], r["reason"]) for r in done] == [
        ("'" + hostile, "EXCLUDED", "UNKNOWN_USER"),
        ("later", "EXCLUDED", "UNKNOWN_USER"),
    ]


def test_campaign_figures_csv_per_day_and_hour_match_the_statistics(
    client: AppClient,
    env: Env,
    traffic: dict[str, Any],  # noqa: F811
) -> None:
    url = f"/admin/v1/environments/{env.name}/campaigns/12/figures.csv"
    span = {"from": TODAY, "to": DAY}  # outcomes are counted at the writer's time: today, real time
    per_day = _rows(client.get(url, params={**span, "grain": "day"}, headers=env.admin))
    assert [r["time"] for r in per_day] == [TODAY, DAY]
    total = {k: sum(int(r[k]) for r in per_day) for k in ("requested", "sent", "excluded", "failed", "unknown")}
    assert total == {"requested": 4, "sent": 3, "excluded": 1, "failed": 0, "unknown": 0}
    stats = client.get("/v1/sms-message/campaigns/12/stats", headers=env.headers).json()
    assert (stats["requested"], stats["sent"], stats["excludedTotal"]) == (4, 3, 1)
    per_hour = _rows(client.get(url, params={**span, "grain": "hour"}, headers=env.admin))
    assert len(per_hour) == 48 and per_hour[0]["time"] == f"{TODAY} 00:00"
    assert sum(int(r["sent"]) for r in per_hour) == 3
    kakao = _rows(
        client.get(f"/admin/v1/environments/{env.name}/campaigns/10/figures.csv", params=span, headers=env.admin)
    )
    assert sum(int(r["unknown"]) for r in kakao) == 2
    for query in ({"from": DAY, "to": DAY, "grain": "week"}, {"from": "0001-01-01", "to": "0001-01-02"}):
        assert client.get(url, params=query, headers=env.admin).status_code == 400
    assert client.get(url.replace("/12/", "/999/"), headers=env.admin).status_code == 404

    # The dashboard's link (on the push campaign's page) carries the range and grain on screen.
    cookies = _sign_in(client, env)
    query = f"from={TODAY}&to={DAY}&grain=hour"
    page = _send(client, "GET", f"/dashboard/{env.name}/campaigns/1?{query}", cookies=cookies)
    assert page.status_code == 200, page.text[:1000]
    link = f"/dashboard/{env.name}/campaigns/1/figures.csv?{query.replace('&', '&amp;')}"
    assert f'href="{link}"' in page.text
    shown = _rows(_send(client, "GET", link.replace("&amp;", "&"), cookies=cookies))
    push = url.replace("/12/", "/1/")
    assert shown == _rows(client.get(push, params={**span, "grain": "hour"}, headers=env.admin))
    assert sum(int(r["sent"]) for r in shown) == 1


# -- 100,000 recipients --------------------------------------------------------------------------------

MANY = 100_000


def _insert_dispatch(db: Database, *, env_id: int) -> str:
    """A completed push dispatch of ``MANY`` recipients, each SENT with one delivery, written directly."""
    dispatch_id = str(uuid.uuid4())
    now = int(time.time() * 1000)
    users = [{"userId": f"user-{i:06d}"} for i in range(MANY)]
    with db.transaction() as conn:
        db.execute(
            conn,
            "INSERT INTO dispatches (id, exec_id, env_id, campaign_key, status, users, requested, created_at, channel) "
            "VALUES (?, ?, ?, 1, 'COMPLETED', ?, ?, ?, 'push')",
            (dispatch_id, now, env_id, msgspec.json.encode(users).decode(), MANY, now),
        )
        db.executemany(
            conn,
            "INSERT INTO recipients (dispatch_id, idx, env_id, user_id, outcome, updated_at) "
            "VALUES (?, ?, ?, ?, 'SENT', ?)",
            [(dispatch_id, i, env_id, f"user-{i:06d}", now) for i in range(MANY)],
        )
        db.executemany(
            conn,
            "INSERT INTO deliveries (env_id, dispatch_id, recipient_idx, campaign_key, user_key, device_id, token, "
            "provider, status, attempts, created_at, updated_at, channel) "
            "VALUES (?, ?, ?, 1, ?, ?, ?, 'sandbox', 'SENT', 1, ?, ?, 'push')",
            [(env_id, dispatch_id, i, f"u:user-{i:06d}", f"d{i}", f"token-{i:06d}", now, now) for i in range(MANY)],
        )
    return dispatch_id


@pytest.mark.slow
def test_recipient_chunks_never_read_more_than_a_chunk(client: AppClient, env: Env) -> None:
    db = client.app.db
    dispatch_id = _insert_dispatch(db, env_id=env.id)
    sizes: list[int] = []
    after: int | None = -1
    with db.transaction(write=False) as conn:
        head = exports.dispatch_head(conn, db, env_id=env.id, dispatch_id=dispatch_id)
        while after is not None:
            lines, after = exports.recipient_chunk(
                conn, db, client.app.ctx.cipher, head=head, env_id=env.id, after=after
            )
            sizes.append(len(lines))
        assert list(exports.unprepared(conn, db, head=head, outcome=None)) == []
    assert sum(sizes) == MANY and max(sizes) == exports.CHUNK and len(sizes) == MANY // exports.CHUNK + 1


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.slow
def test_csv_of_100k_recipients_streams_with_bounded_memory(tmp_path: Path) -> None:
    with ServerProcess(data_dir=tmp_path / "data") as server:
        _, token = server.credentials()
        db = Database(Settings(data_dir=tmp_path / "data").database_url)
        try:
            dispatch_id = _insert_dispatch(db, env_id=1)
        finally:
            db.close_readers()
        assert server.proc is not None
        headers = {"Authorization": f"Bearer {token}"}
        url = f"{server.url}/admin/v1/environments/development/dispatches/{dispatch_id}/recipients.csv"
        with httpx.Client(timeout=120) as http:
            assert http.get(url + "?outcome=FAILED", headers=headers).status_code == 200  # warm the code path
            before = _peak_rss_kib(server.proc.pid)
            size = chunks = lines = 0
            with http.stream("GET", url, headers=headers) as response:
                assert response.status_code == 200
                for piece in response.iter_bytes():
                    size += len(piece)
                    chunks += 1
                    lines += piece.count(b"\n")
            rise = _peak_rss_kib(server.proc.pid) - before
            # For scale: the dispatch as JSON, every recipient in memory at once.
            assert http.get(url.removesuffix("/recipients.csv"), headers=headers).status_code == 200
            whole = _peak_rss_kib(server.proc.pid) - before
    assert lines == MANY + 1 and size > 5_000_000 and chunks > 10
    # What rises is mostly SQLite's page cache (at most 64 MiB per connection), not recipients held at
    # once: 100,000 of them as one JSON answer raised it by ~200 MB on this machine, streaming by ~23 MB.
    assert rise < 48_000, f"peak RSS rose {rise} KiB while streaming {size} bytes"
    assert whole > 4 * rise, (whole, rise)
