"""Benchmark 7: Kakao trigger acceptance, and delivery to the fake NHN Cloud and Solapi gateways.

Acceptance: Hackle's Kakao trigger body (50 users) against `magpie serve` on SQLite, an AlimTalk
campaign on the sandbox; acceptance only, as benchmark 3 measures push.

Delivery: from accepted dispatches (50 users each: one gateway batch) to the fake gateway's receipt,
two `magpie worker` processes deciding, decrypting phone numbers, rendering, marking each batch SENDING,
sending and recording outcomes. Baseline: magpie's gateway client alone sending the same batches to
the same fake with as many batches in flight as the workers run (32).

    python -m bench.bench_messages
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from typing import Any

import httpx

from bench._delivery import Observe, Round, accept_all, run_rounds
from bench._harness import (
    PYTHON,
    ROOT,
    Report,
    baseline,
    free_port,
    magpie_cli,
    magpie_serve,
    median,
    rounds,
    seconds,
    workdir,
    wrk,
)
from magpie.domain.environment import parse_settings
from magpie.providers.base import PhoneGateway, PhoneMessage
from magpie.providers.nhn import NhnGateway
from magpie.providers.solapi import SolapiGateway
from magpie.store import accounts, campaigns
from magpie.store.crypto import Cipher
from magpie.store.db import Database

RECIPIENTS = int(os.environ.get("BENCH_MESSAGES", "20000"))
WORKER_PROCESSES = int(os.environ.get("BENCH_WORKERS", "1"))
WORKER_CONCURRENCY = 32
# Each dispatcher runs as many Kakao and SMS work items (one gateway batch each) at once as its concurrency.
IN_FLIGHT = WORKER_PROCESSES * WORKER_CONCURRENCY
TEMPLATE = "#{name}님, 주문 #{order}이 출발했어요"
ALIMTALK: dict[str, Any] = {
    "key": 1,
    "name": "bench",
    "status": "ACTIVE",
    "channel": "kakao",
    "type": "alimtalk",
    "provider": "sandbox",
    "message": {
        "templateCode": "ORDER_SHIPPED",
        "text": TEMPLATE,
        "variables": {"name": "{{ user_properties.name }}", "order": "{{ api_properties.productNumber }}"},
    },
}
SMS: dict[str, Any] = {
    "key": 1,
    "name": "bench",
    "status": "ACTIVE",
    "channel": "sms",
    "purpose": "INFORMATION",
    "message": {"text": "{{ user_properties.name }}님, 주문 {{ api_properties.productNumber }} 출발"},
}


def acceptance() -> Report:
    runs = []
    with workdir("kakao-trigger") as tmp:
        data = tmp / "data"
        key = magpie_cli("env", "create", "development", data_dir=data)["apiKey"]
        path = tmp / "campaign.json"
        path.write_text(json.dumps(ALIMTALK))
        magpie_cli("campaign", "apply", "-f", str(path), data_dir=data)
        base = baseline(free_port())
        server = magpie_serve(data_dir=data, port=free_port())
        env = {"BENCH_KEY": key, "BENCH_PATH": "/v1/kakao-message/trigger/send"}
        try:
            for i in range(rounds()):
                b = wrk(base.url + env["BENCH_PATH"], script="trigger.lua", seconds=seconds(), env=env)
                m = wrk(server.url + env["BENCH_PATH"], script="trigger.lua", seconds=seconds(), env=env)
                runs.append({"round": i + 1, "baseline": asdict(b), "magpie": asdict(m)})
                print(
                    f"  [kakao trigger] round {i + 1}: baseline {b.requests_per_second:,.0f}/s, magpie "
                    f"{m.requests_per_second:,.0f}/s, p99 {m.p99_ms:.1f} ms, non-2xx {m.non_2xx}",
                    flush=True,
                )
        finally:
            server.stop()
            base.stop()
    rps = median([r["magpie"]["requests_per_second"] for r in runs])
    summary = {
        "magpie_rps_median": round(rps),
        "recipients_per_second_median": round(rps * 50),
        "baseline_rps_median": round(median([r["baseline"]["requests_per_second"] for r in runs])),
        "p99_ms_median": round(median([r["magpie"]["p99_ms"] for r in runs]), 2),
        "non_2xx": sum(r["magpie"]["non_2xx"] for r in runs),
    }
    report = Report(
        name="kakao_trigger_sqlite",
        command="python -m bench.bench_messages",
        target=">= 1,000 requests/s accepted (50,000 recipients/s) on SQLite, as for push",
        met=bool(rps >= 1000 and summary["non_2xx"] == 0),
        summary=summary,
        runs=runs,
    )
    report.save()
    print(f"kakao_trigger_sqlite: {'MET' if report.met else 'MISSED'} {summary}")
    return report


class Fake:
    def __init__(self, gateway: str) -> None:
        args = ["--templates", json.dumps({"ORDER_SHIPPED": TEMPLATE})]
        self.proc = subprocess.Popen(
            [PYTHON, "-m", f"tests.fakes.{gateway}", "--port", "0", "--quiet", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"the fake {gateway} did not start: {line!r}")
        self.url = f"http://127.0.0.1:{line.split()[1]}"

    def accepted(self) -> int:
        stats: dict[str, int] = httpx.get(self.url + "/__fake/stats", timeout=5).json()
        return stats["accepted"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def _config(gateway: str, url: str) -> dict[str, Any]:
    from tests.fakes import nhn, solapi

    if gateway == "nhn":
        return {
            "alimtalkAppKey": nhn.APP_KEY,
            "alimtalkSecretKey": nhn.SECRET_KEY,
            "senderKey": nhn.SENDER_KEY,
            "smsAppKey": nhn.SMS_APP_KEY,
            "smsSecretKey": nhn.SMS_SECRET_KEY,
            "alimtalkBaseUrl": url,
            "smsBaseUrl": url,
        }
    return {"apiKey": solapi.API_KEY, "apiSecret": solapi.API_SECRET, "pfId": solapi.PF_ID, "baseUrl": url}


def _phone(i: int) -> str:
    return f"+82104{i:07d}"


def _messages(gateway: str, count: int) -> list[list[PhoneMessage]]:
    batches = []
    for start in range(0, count, 50):
        batch = []
        for i in range(start, min(count, start + 50)):
            if gateway == "nhn":
                batch.append(
                    PhoneMessage(
                        delivery_id=str(i),
                        to=_phone(i),
                        channel="kakao",
                        kind="alimtalk",
                        text=f"고객{i}님, 주문 {i}이 출발했어요",
                        template_code="ORDER_SHIPPED",
                        template_parameters={"name": f"고객{i}", "order": str(i)},
                    )
                )
            else:
                text = f"고객{i}님, 주문 {i} 출발"
                batch.append(PhoneMessage(delivery_id=str(i), to=_phone(i), channel="sms", kind="SMS", text=text))
        batches.append(batch)
    return batches


async def _blast(gateway: str, url: str, count: int) -> float:
    """The baseline: the gateway client alone, ``IN_FLIGHT`` batches of 50 at a time."""
    client: PhoneGateway
    if gateway == "nhn":
        client = NhnGateway(config=_config(gateway, url), sender_number="0212345678")
    else:
        client = SolapiGateway(config=_config(gateway, url), sender_number="0212345678")
    batches = _messages(gateway, count)
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def one(n: int, batch: list[PhoneMessage]) -> None:
        async with slots:
            results = await client.send_batch(batch, batch_key=f"base-{time.time()}-{n}")
            assert all(r.status == "SENT" for r in results), results[:1]

    started = time.perf_counter()
    await asyncio.gather(*(one(n, b) for n, b in enumerate(batches)))
    elapsed = time.perf_counter() - started
    await client.aclose()
    return count / elapsed


def _seed(db: Database, cipher: Cipher, env_id: int, users: int) -> None:
    now = int(time.time() * 1000)
    with db.transaction() as conn:
        db.executemany(
            conn,
            "INSERT INTO profiles (env_id, kind, ident, properties, crm, phone_enc, created_at, updated_at) "
            "VALUES (?, 'u', ?, ?, '{}', ?, ?, ?)",
            [
                (env_id, f"user-{i}", json.dumps({"name": f"고객{i}"}), cipher.encrypt(_phone(i)), now, now)
                for i in range(users)
            ],
        )


def delivery(gateway: str, *, observe: Observe | None = None) -> Report:
    channel = "kakao" if gateway == "nhn" else "sms"
    with workdir(f"delivery-{gateway}") as tmp:
        fake = Fake(gateway)
        data = tmp / "data"
        db = Database(f"sqlite:///{data / 'magpie.db'}")
        db.upgrade()
        cipher = Cipher.load(secret_key=None, data_dir=data)
        env = accounts.create_environment(db, name="bench")
        key, _ = accounts.create_api_key(db, environment="bench")
        accounts.update_environment_settings(
            db,
            name="bench",
            settings=parse_settings(
                {
                    f"{channel}Gateway": gateway,
                    "smsSender": "02-1234-5678",
                    "providers": {gateway: _config(gateway, fake.url)},
                }
            ),
        )
        campaign = {**(ALIMTALK if channel == "kakao" else SMS), "provider": "gateway"}
        campaigns.apply_campaign(db, env_id=env.id, raw=campaign)
        _seed(db, cipher, env.id, RECIPIENTS)

        def report(r: Round[float]) -> dict[str, Any]:
            print(
                f"  [delivery {gateway}] round {r.number}: baseline {r.baseline:,.0f}/s, magpie {r.rate:,.0f}/s "
                f"(ratio {r.rate / r.baseline:.2f})",
                flush=True,
            )
            return {
                "round": r.number,
                "baseline_per_second": r.baseline,
                "magpie_per_second": r.rate,
                "ratio": r.rate / r.baseline,
            }

        try:
            runs, outcomes = run_rounds(
                db=db,
                data=data,
                processes=WORKER_PROCESSES,
                worker_env={
                    "MAGPIE_WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
                    "MAGPIE_REPORT_POLL_SECONDS": "3600",
                },
                recipients=RECIPIENTS,
                received=fake.accepted,
                baseline=lambda: asyncio.run(_blast(gateway, fake.url, RECIPIENTS)),
                accept=lambda writer, round_no: accept_all(
                    writer, key=key, env_id=env.id, users=RECIPIENTS, round_no=round_no, channel=channel
                ),
                report=report,
                settle_seconds=60,
                fake_pid=fake.proc.pid,
                observe=observe,
            )
        finally:
            fake.stop()
    summary = {
        "ratio_median": round(median([r["ratio"] for r in runs]), 3),
        "magpie_per_second_median": round(median([r["magpie_per_second"] for r in runs])),
        "baseline_per_second_median": round(median([r["baseline_per_second"] for r in runs])),
        "recipients_per_round": RECIPIENTS,
        "batches_in_flight": IN_FLIGHT,
        "outcomes": outcomes,
    }
    report = Report(
        name=f"delivery_{gateway}",
        command="python -m bench.bench_messages",
        target=f">= 0.7x the baseline client's rate against the same fake {gateway} gateway",
        met=bool(summary["ratio_median"] >= 0.7 and outcomes.get("SENT") == RECIPIENTS * len(runs)),
        summary=summary,
        runs=runs,
    )
    report.save()
    print(f"delivery_{gateway}: {'MET' if report.met else 'MISSED'} {summary}")
    return report


def main(which: list[str]) -> list[Report]:
    reports = []
    if not which or "trigger" in which:
        reports.append(acceptance())
    for gateway in ("nhn", "solapi"):
        if not which or gateway in which:
            reports.append(delivery(gateway))
    return reports


if __name__ == "__main__":
    main(sys.argv[1:])
