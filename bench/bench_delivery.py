"""Benchmark 4: delivery, end to end, from accepted dispatches to the fake FCM server's receipt.

magpie: `magpie worker` processes (one per core) claim the dispatches' work items, resolve
recipients, render, send through FCM HTTP v1 (OAuth2 included) and record every outcome.
Baseline: a minimal FCM HTTP v1 client written here on aiohttp (one OAuth2 token from the
service account, then the same ``messages:send`` requests) blasting the same fake server with
the same concurrency. magpie's FCM provider alone, driven the same way, is reported beside it,
so the provider's own overhead shows apart from the rest of delivery. The fake runs as its own
process.

    python -m bench.bench_delivery             (dispatches of 50, as Hackle's trigger sends them)
    python -m bench.bench_delivery broadcast   (a "send now" occurrence of BENCH_BROADCAST_SLICE users, 100,000)

In ``broadcast`` the round is a broadcast's slice: its clock starts when the occurrence is created, so the
planning of its audience (dispatches of 1,000) is timed with the delivery; the baseline sends as many pushes.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import jwt

from bench._delivery import Observe, Round, accept_all, nothing_accepted, plan_occurrence, run_rounds
from bench._harness import PYTHON, ROOT, Report, median, workdir
from magpie.domain.environment import parse_settings
from magpie.providers.base import PushMessage
from magpie.providers.fcm import FcmProvider
from magpie.store import accounts, campaigns
from magpie.store.db import Database

RECIPIENTS = int(os.environ.get("BENCH_RECIPIENTS", "20000"))
SLICE = int(os.environ.get("BENCH_BROADCAST_SLICE", "100000"))
CONCURRENCY = 64
WORKER_PROCESSES = 2


@dataclass
class Fake:
    proc: subprocess.Popen[str]
    port: int
    service_account: dict[str, str]
    _http: httpx.Client | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def delivered(self) -> int:
        # One client for the whole run: a new one per look costs milliseconds of this process's CPU,
        # taken from the two cores the round measures, every 20 ms.
        if self._http is None:
            self._http = httpx.Client(timeout=5)
        stats: dict[str, int] = self._http.get(self.url + "/__fake/stats").json()
        return stats["delivered"]

    def stop(self) -> None:
        if self._http is not None:
            self._http.close()
        self.proc.terminate()
        self.proc.wait(timeout=10)


def start_fake(tmp: Path) -> Fake:
    out = tmp / "service-account.json"
    proc = subprocess.Popen(
        [PYTHON, "-m", "tests.fakes.fcm", "--port", "0", "--quiet", "--service-account-out", str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY"):
        raise RuntimeError(f"the fake FCM server did not start: {line!r}")
    return Fake(proc, int(line.split()[1]), json.loads(out.read_text()))


def _message(i: int) -> PushMessage:
    return PushMessage(
        token=f"token-{i}",
        provider_type="FCM",
        title="재입고 알림",
        body=f"상품 {i}",
        hackle={"pushMessageKey": 1, "pushMessageDeliveryId": i, "title": "재입고 알림", "body": f"상품 {i}"},
    )


async def _oauth_token(session: aiohttp.ClientSession, account: dict[str, str]) -> str:
    """An access token for the service account: a signed JWT exchanged at its token URI (RFC 7523)."""
    now = int(time.time())
    assertion = jwt.encode(
        {
            "iss": account["client_email"],
            "scope": "https://www.googleapis.com/auth/firebase.messaging",
            "aud": account["token_uri"],
            "iat": now,
            "exp": now + 3600,
        },
        account["private_key"],
        algorithm="RS256",
        headers={"kid": account["private_key_id"]},
    )
    form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion}
    async with session.post(account["token_uri"], data=form) as response:
        response.raise_for_status()
        token: str = (await response.json())["access_token"]
    return token


async def _minimal_client(fake: Fake, count: int) -> float:
    """The baseline: the fewest lines that send the same FCM v1 requests, ``CONCURRENCY`` in flight."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY * 2)) as session:
        token = await _oauth_token(session, fake.service_account)
        url = f"{fake.url}/v1/projects/magpie-test/messages:send"
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json; charset=UTF-8"}
        slots = asyncio.Semaphore(CONCURRENCY)

        async def one(i: int) -> None:
            m = _message(i)
            data = {"hackle": json.dumps(m.hackle, separators=(",", ":"), ensure_ascii=False)}
            body = {"message": {"token": m.token, "data": data, "android": {"priority": "HIGH", "ttl": "86400s"}}}
            async with slots, session.post(url, json=body, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"the fake FCM server answered {response.status}")

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        elapsed = time.perf_counter() - started
    return count / elapsed


async def _provider_alone(fake: Fake, count: int) -> float:
    """magpie's FCM provider alone, driven like the minimal client: ``CONCURRENCY`` sends in flight."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY * 2)) as session:
        provider = FcmProvider(
            project_id="magpie-test", service_account=fake.service_account, session=session, base_url=fake.url
        )
        await provider.send(_message(-1))  # the OAuth token first, as the minimal client fetches its own
        slots = asyncio.Semaphore(CONCURRENCY)

        async def one(i: int) -> None:
            async with slots:
                await provider.send(_message(i))

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        elapsed = time.perf_counter() - started
        await provider.aclose()
    return count / elapsed


def _seed(db: Database, env_id: int, users: int) -> None:
    """Users, linked devices and FCM tokens, inserted in bulk."""
    now = int(time.time() * 1000)
    with db.transaction() as conn:
        db.executemany(
            conn,
            "INSERT INTO profiles (env_id, kind, ident, properties, crm, linked_user, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, '{}', ?, ?, ?)",
            [(env_id, "u", f"user-{i}", json.dumps({"name": f"고객{i}"}), None, now, now) for i in range(users)]
            + [(env_id, "d", f"device-{i}", "{}", f"user-{i}", now, now) for i in range(users)],
        )
        db.executemany(
            conn,
            "INSERT INTO push_tokens (env_id, token, device_id, provider_type, status, created_at, updated_at) "
            "VALUES (?, ?, ?, 'FCM', 'ACTIVE', ?, ?)",
            [(env_id, f"token-{i}", f"device-{i}", now, now) for i in range(users)],
        )


def main(*, observe: Observe | None = None, shape: str = "trigger") -> Report:
    broadcast = shape == "broadcast"
    recipients = SLICE if broadcast else RECIPIENTS
    with workdir("delivery") as tmp:
        fake = start_fake(tmp)
        data = tmp / "data"
        db = Database(f"sqlite:///{data / 'magpie.db'}")
        db.upgrade()
        env = accounts.create_environment(db, name="bench")
        key, _ = accounts.create_api_key(db, environment="bench")
        accounts.update_environment_settings(
            db,
            name="bench",
            settings=parse_settings(
                {
                    "providers": {
                        "fcm": {"projectId": "magpie-test", "serviceAccount": fake.service_account, "baseUrl": fake.url}
                    }
                }
            ),
        )
        campaigns.apply_campaign(
            db,
            env_id=env.id,
            raw={
                "key": 1,
                "name": "bench",
                "status": "ACTIVE",
                "purpose": "INFORMATION",
                "provider": "push",
                "message": {
                    "title": "{{ user_properties.name }}님, 재입고 알림",
                    "body": "상품 {{ api_properties.productNumber }}",
                },
            },
        )
        _seed(db, env.id, recipients)

        def baseline() -> tuple[float, float]:
            return asyncio.run(_minimal_client(fake, recipients)), asyncio.run(_provider_alone(fake, recipients))

        def report(r: Round[tuple[float, float]]) -> dict[str, Any]:
            base_rate, provider_rate = r.baseline
            with db.transaction(write=False) as conn:
                sent = db.fetchone(
                    conn,
                    f"SELECT COUNT(*) FROM recipients WHERE outcome = 'SENT' AND dispatch_id IN "
                    f"({','.join('?' * len(r.dispatch_ids))})",
                    r.dispatch_ids,
                )
            print(
                f"  [delivery] round {r.number}: minimal client {base_rate:,.0f}/s, provider alone "
                f"{provider_rate:,.0f}/s (ratio {provider_rate / base_rate:.2f}), end to end {r.rate:,.0f}/s "
                f"(ratio {r.rate / base_rate:.2f}); recipients SENT so far {sent[0] if sent else 0}",
                flush=True,
            )
            return {
                "round": r.number,
                "baseline_per_second": base_rate,
                "provider_per_second": provider_rate,
                "provider_ratio": provider_rate / base_rate,
                "magpie_per_second": r.rate,
                "ratio": r.rate / base_rate,
                "recipients": recipients,
            }

        try:
            runs, outcomes = run_rounds(
                db=db,
                data=data,
                processes=WORKER_PROCESSES,
                worker_env={"MAGPIE_WORKER_CONCURRENCY": str(CONCURRENCY // WORKER_PROCESSES)},
                recipients=recipients,
                received=fake.delivered,
                baseline=baseline,
                accept=nothing_accepted
                if broadcast
                else lambda writer, round_no: accept_all(
                    writer, key=key, env_id=env.id, users=recipients, round_no=round_no
                ),
                plan=(lambda: plan_occurrence(data, db, env.id)) if broadcast else None,
                report=report,
                fake_pid=fake.proc.pid,
                observe=observe,
            )
        finally:
            fake.stop()
    summary = {
        "ratio_median": round(median([r["ratio"] for r in runs]), 3),
        "provider_ratio_median": round(median([r["provider_ratio"] for r in runs]), 3),
        "provider_per_second_median": round(median([r["provider_per_second"] for r in runs])),
        "magpie_per_second_median": round(median([r["magpie_per_second"] for r in runs])),
        "baseline_per_second_median": round(median([r["baseline_per_second"] for r in runs])),
        "recipients_per_round": recipients,
        "worker_processes": WORKER_PROCESSES,
        "concurrency": CONCURRENCY,
        "outcomes": outcomes,
    }
    report = Report(
        name="delivery_fcm_broadcast" if broadcast else "delivery_fcm",
        command="python -m bench.bench_delivery" + (" broadcast" if broadcast else ""),
        target=(
            "against a minimal aiohttp FCM v1 client on the same fake server: "
            "magpie's FCM provider alone >= 0.9x, end-to-end delivery >= 0.7x"
        ),
        met=bool(
            summary["provider_ratio_median"] >= 0.9
            and summary["ratio_median"] >= 0.7
            and outcomes.get("SENT") == recipients * len(runs)
        ),
        summary=summary,
        runs=runs,
    )
    report.save()
    print(f"{report.name}: {'MET' if report.met else 'MISSED'} {summary}")
    return report


if __name__ == "__main__":
    sys.exit(0 if main(shape="broadcast" if "broadcast" in sys.argv[1:] else "trigger") else 1)
