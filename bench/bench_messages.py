"""Benchmark 7: Kakao trigger acceptance, and delivery to the fake NHN Cloud and Solapi gateways.

Acceptance: Hackle's Kakao trigger body (50 users) against `magpie serve` on SQLite, an AlimTalk
campaign on the sandbox; acceptance only, as benchmark 3 measures push.

Delivery: from accepted dispatches (50 users each: one gateway batch) to the fake gateway's receipt,
`magpie worker` processes deciding, decrypting phone numbers, rendering, marking each batch SENDING,
sending and recording outcomes. Baseline: magpie's gateway client alone sending the same batches to
the same fake with as many batches in flight as the workers run (32). Each round also reports the
CPU per recipient of every process taking part (workers, their writers, PostgreSQL's backends, the
fake, and the load: this process accepting the dispatches), read from /proc.

On PostgreSQL (``nhn-pg``, ``solapi-pg``) one worker's rounds are followed, on the same store, by
two workers' rounds: magpie's CPU per recipient of two workers against one's. ``rss`` delivers
one 10,000-recipient work item with a fresh worker and reads its peak resident set (``VmHWM``).

``nhn-broadcast`` and ``solapi-broadcast`` (``-pg`` on PostgreSQL) deliver a broadcast's slice: a "send
now" occurrence of ``BENCH_BROADCAST_SLICE`` users (100,000) with a phone number, planned in the round by
the scheduler's own code into dispatches of 1,000 (the clock starts when the occurrence is created). Its
baseline sends the same batches of 1,000 with as many in flight as the workers hold (their recipient budget,
4,000 each), by two workers (``BENCH_WORKERS``). These run only when named.

    python -m bench.bench_messages [trigger] [nhn] [solapi] [nhn-pg] [solapi-pg] [rss]
    python -m bench.bench_messages nhn-broadcast solapi-broadcast [nhn-broadcast-pg] [solapi-broadcast-pg]
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from bench._delivery import (
    Observe,
    Round,
    accept_all,
    cpu_summary,
    nothing_accepted,
    outcomes,
    peak_rss_mb,
    plan_occurrence,
    run_rounds,
    settled,
    start_workers,
)
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
from magpie.store.crypto import Cipher, hash_secret
from magpie.store.db import Database
from magpie.store.dispatches import AcceptTrigger
from magpie.store.writer import GroupCommitWriter

RECIPIENTS = int(os.environ.get("BENCH_MESSAGES", "20000"))
WORKER_PROCESSES = int(os.environ.get("BENCH_WORKERS", "1"))
# The work item whose delivery the peak-RSS run measures.
RSS_RECIPIENTS = 10_000
# The broadcast slice: a "send now" occurrence of this many users, planned into dispatches of BROADCAST_PAGE
# (MAGPIE_BROADCAST_PAGE_SIZE), a worker holding BROADCAST_BUDGET recipients at once (MAGPIE_WORKER_RECIPIENTS).
SLICE = int(os.environ.get("BENCH_BROADCAST_SLICE", "100000"))
BROADCAST_PAGE = 1000
BROADCAST_BUDGET = int(os.environ.get("BENCH_WORKER_RECIPIENTS", "4000"))
PG_SECRET = "A" * 43
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
# A broadcast has no API properties: its order variable is the user's id.
BROADCAST_VARIABLES = {"name": "{{ user_properties.name }}", "order": "{{ user.id }}"}
BROADCAST_SMS_TEXT = "{{ user_properties.name }}님, 주문 {{ user.id }} 출발"
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
        self.gateway = gateway
        self._http: httpx.Client | None = None
        self.proc, self.url = self._start(port=0)

    def _start(self, *, port: int) -> tuple[subprocess.Popen[str], str]:
        args = ["--templates", json.dumps({"ORDER_SHIPPED": TEMPLATE})]
        proc = subprocess.Popen(
            [PYTHON, "-m", f"tests.fakes.{self.gateway}", "--port", str(port), "--quiet", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"the fake {self.gateway} did not start: {line!r}")
        return proc, f"http://127.0.0.1:{line.split()[1]}"

    def accepted(self) -> int:
        # One client for the whole run: a new one per look costs milliseconds of this process's CPU,
        # taken from the two cores the round measures, every 20 ms.
        if self._http is None:
            self._http = httpx.Client(timeout=5)
        stats: dict[str, int] = self._http.get(self.url + "/__fake/stats").json()
        return stats["accepted"]

    def stop(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        self.proc.terminate()
        self.proc.wait(timeout=10)

    def restart(self) -> None:
        """A fresh fake on the same port. The fake keeps every message it took (for lookups); over rounds of
        100,000 they pile up and slow it, the baseline (whose CPU is mostly the fake's) more than magpie."""
        self.stop()
        self.proc, self.url = self._start(port=int(self.url.rsplit(":", 1)[1]))


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


def _messages(gateway: str, count: int, size: int, *, broadcast: bool = False) -> list[list[PhoneMessage]]:
    batches = []
    for start in range(0, count, size):
        batch = []
        for i in range(start, min(count, start + size)):
            order = f"user-{i}" if broadcast else str(i)
            if gateway == "nhn":
                batch.append(
                    PhoneMessage(
                        delivery_id=str(i),
                        to=_phone(i),
                        channel="kakao",
                        kind="alimtalk",
                        text=f"고객{i}님, 주문 {order}이 출발했어요",
                        template_code="ORDER_SHIPPED",
                        template_parameters={"name": f"고객{i}", "order": order},
                    )
                )
            else:
                text = f"고객{i}님, 주문 {order} 출발"
                batch.append(PhoneMessage(delivery_id=str(i), to=_phone(i), channel="sms", kind="SMS", text=text))
        batches.append(batch)
    return batches


async def _blast(
    gateway: str, url: str, count: int, *, size: int = 50, in_flight: int = IN_FLIGHT, broadcast: bool = False
) -> float:
    """The baseline: the gateway client alone, ``in_flight`` batches of ``size`` at a time."""
    client: PhoneGateway
    if gateway == "nhn":
        client = NhnGateway(config=_config(gateway, url), sender_number="0212345678")
    else:
        client = SolapiGateway(config=_config(gateway, url), sender_number="0212345678")
    batches = _messages(gateway, count, size, broadcast=broadcast)
    slots = asyncio.Semaphore(in_flight)

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


class _Store:
    """The benchmark's store, seeded: an environment, its gateway, the campaign and ``users`` users with phones."""

    def __init__(self, tmp: Path, gateway: str, url: str, engine: str, users: int, *, broadcast: bool = False) -> None:
        self.channel = "kakao" if gateway == "nhn" else "sms"
        self.data = tmp / "data"
        self.pg_url = None if engine == "sqlite" else self._pg()
        self.db = Database(self.pg_url or f"sqlite:///{self.data / 'magpie.db'}")
        self.db.upgrade()
        cipher = Cipher.load(secret_key=PG_SECRET if self.pg_url else None, data_dir=self.data)
        env = accounts.create_environment(self.db, name="bench")
        self.env_id = env.id
        self.key, _ = accounts.create_api_key(self.db, environment="bench")
        accounts.update_environment_settings(
            self.db,
            name="bench",
            settings=parse_settings(
                {
                    f"{self.channel}Gateway": gateway,
                    "smsSender": "02-1234-5678",
                    "providers": {gateway: _config(gateway, url)},
                }
            ),
        )
        campaign = {**(ALIMTALK if self.channel == "kakao" else SMS), "provider": "gateway"}
        if broadcast:
            message = campaign["message"]
            campaign["message"] = (
                {**message, "variables": BROADCAST_VARIABLES}
                if self.channel == "kakao"
                else {**message, "text": BROADCAST_SMS_TEXT}
            )
        campaigns.apply_campaign(self.db, env_id=env.id, raw=campaign)
        _seed(self.db, cipher, env.id, users)

    @staticmethod
    def _pg() -> str:
        from bench.bench_properties import _pg_database

        return _pg_database()

    @property
    def database(self) -> str | None:
        return None if self.pg_url is None else self.pg_url.rsplit("/", 1)[1]

    def worker_env(self) -> dict[str, str]:
        env = {
            "MAGPIE_WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
            "MAGPIE_REPORT_POLL_SECONDS": "3600",
            "MAGPIE_WORKER_RECIPIENTS": str(BROADCAST_BUDGET),
        }
        if self.pg_url:
            env.update(MAGPIE_DATABASE_URL=self.pg_url, MAGPIE_SECRET_KEY=PG_SECRET)
        return env

    def analyze(self) -> None:
        """PostgreSQL: refresh the planner's statistics, as autovacuum would on a server that runs it
        (the local server of these runs has it off; without statistics the plans of the growing
        deliveries table turn to sequential scans)."""
        if self.pg_url:
            import psycopg

            with psycopg.connect(self.pg_url, autocommit=True) as conn:
                conn.execute("ANALYZE")

    def drop(self) -> None:
        if self.pg_url:
            from bench.bench_properties import _drop_pg

            _drop_pg(self.pg_url)


def delivery(gateway: str, *, engine: str = "sqlite", observe: Observe | None = None, shape: str = "trigger") -> Report:
    """Rounds of ``RECIPIENTS`` recipients; on PostgreSQL, one worker's rounds and then two workers'.

    With ``shape="broadcast"``, rounds of a "send now" occurrence of ``SLICE`` users, planned in the round.
    """
    from bench.bench_properties import PG_ADMIN

    broadcast = shape == "broadcast"
    recipients = SLICE if broadcast else RECIPIENTS
    if broadcast:
        # One `magpie worker` per core, as the push slice (``bench_delivery broadcast``) runs them.
        counts = [int(os.environ.get("BENCH_WORKERS", "2"))]
    else:
        counts = [WORKER_PROCESSES] if engine == "sqlite" else [1, 2]
    # The baseline sends the batches magpie's workers send: a broadcast's dispatches of 1,000, as many in
    # flight as the workers hold (their recipient budget), or a trigger's 50 at the workers' concurrency.
    size = BROADCAST_PAGE if broadcast else 50
    by_count: dict[int, list[dict[str, Any]]] = {}
    with workdir(f"delivery-{gateway}-{engine}{'-broadcast' if broadcast else ''}") as tmp:
        fake = Fake(gateway)
        store = _Store(tmp, gateway, fake.url, engine, recipients, broadcast=broadcast)

        def report(r: Round[float]) -> dict[str, Any]:
            print(
                f"  [delivery {gateway} {engine}] round {r.number}: baseline {r.baseline:,.0f}/s, magpie "
                f"{r.rate:,.0f}/s (ratio {r.rate / r.baseline:.2f})",
                flush=True,
            )
            return {
                "round": r.number,
                "baseline_per_second": r.baseline,
                "magpie_per_second": r.rate,
                "ratio": r.rate / r.baseline,
            }

        def accept(writer: GroupCommitWriter, round_no: int) -> list[str]:
            return accept_all(
                writer, key=store.key, env_id=store.env_id, users=recipients, round_no=round_no, channel=store.channel
            )

        def before_round() -> None:
            if broadcast:
                fake.restart()
            store.analyze()

        def blast(in_flight: int) -> float:
            return asyncio.run(
                _blast(gateway, fake.url, recipients, size=size, in_flight=in_flight, broadcast=broadcast)
            )

        def plan() -> list[str]:
            return plan_occurrence(
                store.data,
                store.db,
                store.env_id,
                channel=store.channel,
                database_url=store.pg_url,
                secret_key=PG_SECRET if store.pg_url else None,
            )

        try:
            for n, processes in enumerate(counts):
                in_flight = processes * (BROADCAST_BUDGET // size if broadcast else WORKER_CONCURRENCY)
                print(f"  [delivery {gateway} {engine}] {processes} worker process(es)", flush=True)
                by_count[processes], found = run_rounds(
                    db=store.db,
                    data=store.data,
                    processes=processes,
                    worker_env=store.worker_env(),
                    recipients=recipients,
                    received=fake.accepted,
                    baseline=partial(blast, in_flight),
                    accept=nothing_accepted if broadcast else accept,
                    plan=plan if broadcast else None,
                    report=report,
                    settle_seconds=60,
                    fake_pid=lambda: fake.proc.pid,
                    observe=observe,
                    database=store.database,
                    admin_url=PG_ADMIN,
                    first_round=1 + n * 100,
                    before_round=before_round,
                )
        finally:
            fake.stop()
            store.drop()
    runs = by_count[counts[0]]
    cpu = cpu_summary(runs)
    sent = sum(len(r) for r in by_count.values()) * recipients
    summary: dict[str, Any] = {
        "engine": engine,
        "ratio_median": round(median([r["ratio"] for r in runs]), 3),
        "magpie_per_second_median": round(median([r["magpie_per_second"] for r in runs])),
        "baseline_per_second_median": round(median([r["baseline_per_second"] for r in runs])),
        "recipients_per_round": recipients,
        "batch_size": size,
        "batches_in_flight": counts[0] * (BROADCAST_BUDGET // size if broadcast else WORKER_CONCURRENCY),
        "worker_processes": counts[0],
        "cpu_us_per_recipient": cpu,
        "outcomes": found,
    }
    ceiling = 60 if engine == "sqlite" else 80
    target = (
        f">= 0.25x the gateway client alone against the same fake {gateway}; magpie's CPU (workers + writers) "
        f"<= {ceiling} µs per recipient"
    )
    met = summary["ratio_median"] >= 0.25 and cpu["magpie"] <= ceiling and found.get("SENT") == sent
    if len(counts) > 1:
        two = cpu_summary(by_count[2])
        summary["two_workers"] = {
            "ratio_median": round(median([r["ratio"] for r in by_count[2]]), 3),
            "cpu_us_per_recipient": two,
            "magpie_cpu_two_over_one": round(two["magpie"] / cpu["magpie"], 3),
        }
        target += "; two workers' CPU per recipient within 1.15x of one worker's"
        met = met and summary["two_workers"]["magpie_cpu_two_over_one"] <= 1.15
    suffix = ("_broadcast" if broadcast else "") + ("" if engine == "sqlite" else f"_{engine}")
    arg = gateway + ("-broadcast" if broadcast else "") + ("" if engine == "sqlite" else "-" + engine)
    report_ = Report(
        name=f"delivery_{gateway}{suffix}",
        command=f"python -m bench.bench_messages {arg}",
        target=target,
        met=bool(met),
        summary=summary,
        runs=[{**r, "worker_processes": p} for p, rs in by_count.items() for r in rs],
    )
    report_.save()
    print(f"delivery_{gateway}{suffix}: {'MET' if report_.met else 'MISSED'} {summary}")
    return report_


def peak_rss(gateway: str = "nhn") -> Report:
    """A fresh `magpie worker` delivering one work item of ``RSS_RECIPIENTS`` recipients: its peak RSS."""
    runs = []
    with workdir(f"rss-{gateway}") as tmp:
        fake = Fake(gateway)
        store = _Store(tmp, gateway, fake.url, "sqlite", RSS_RECIPIENTS)
        writer = GroupCommitWriter(db=store.db)
        writer.start()
        try:
            for round_no in range(1, rounds() + 1):
                (worker,) = start_workers(store.data, 1, store.worker_env())
                try:
                    settled([worker])
                    idle = peak_rss_mb(worker.pid)
                    before = fake.accepted()
                    users = [
                        {"userId": f"user-{i}", "apiProperties": {"productNumber": str(i)}}
                        for i in range(RSS_RECIPIENTS)
                    ]
                    writer.run_sync(
                        AcceptTrigger(
                            key_hash=hash_secret(store.key),
                            env_id=store.env_id,
                            campaign_key=1,
                            users=json.dumps(users),
                            requested=len(users),
                            idempotency_key=f"rss-{round_no}",
                            channel=store.channel,
                        )
                    )
                    started = time.perf_counter()
                    deadline = time.monotonic() + 300
                    while fake.accepted() - before < RSS_RECIPIENTS and time.monotonic() < deadline:
                        time.sleep(0.05)
                    elapsed = time.perf_counter() - started
                    time.sleep(1)  # the outcomes recorded
                    peak = peak_rss_mb(worker.pid)
                finally:
                    worker.terminate()
                    worker.wait(timeout=30)
                runs.append(
                    {
                        "round": round_no,
                        "idle_mb": round(idle, 1),
                        "peak_mb": round(peak, 1),
                        "seconds": round(elapsed, 2),
                    }
                )
                print(
                    f"  [rss {gateway}] round {round_no}: idle {idle:.0f} MB, peak {peak:.0f} MB, {elapsed:.1f} s",
                    flush=True,
                )
        finally:
            writer.stop()
            found = outcomes(store.db)
            fake.stop()
    summary = {
        "recipients_in_item": RSS_RECIPIENTS,
        "peak_mb_median": round(median([r["peak_mb"] for r in runs]), 1),
        "idle_mb_median": round(median([r["idle_mb"] for r in runs]), 1),
        "seconds_median": round(median([r["seconds"] for r in runs]), 2),
        "outcomes": found,
    }
    report = Report(
        name=f"worker_rss_{gateway}",
        command="python -m bench.bench_messages rss",
        target=f"worker peak RSS <= 150 MB delivering a {RSS_RECIPIENTS:,}-recipient work item",
        met=bool(summary["peak_mb_median"] <= 150 and found.get("SENT") == RSS_RECIPIENTS * len(runs)),
        summary=summary,
        runs=runs,
    )
    report.save()
    print(f"worker_rss_{gateway}: {'MET' if report.met else 'MISSED'} {summary}")
    return report


def main(which: list[str]) -> list[Report]:
    reports = []
    if not which or "trigger" in which:
        reports.append(acceptance())
    for gateway in ("nhn", "solapi"):
        if not which or gateway in which:
            reports.append(delivery(gateway))
        if not which or f"{gateway}-pg" in which:
            reports.append(delivery(gateway, engine="pg"))
        if f"{gateway}-broadcast" in which:
            reports.append(delivery(gateway, shape="broadcast"))
        if f"{gateway}-broadcast-pg" in which:
            reports.append(delivery(gateway, engine="pg", shape="broadcast"))
    if not which or "rss" in which:
        reports.append(peak_rss())
    return reports


if __name__ == "__main__":
    main(sys.argv[1:])
