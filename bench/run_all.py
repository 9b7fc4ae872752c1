"""Run every benchmark and write bench/results/*.json and docs/benchmarks.md.

    make bench        (or: python -m bench.run_all [name ...])

Names: properties (benchmarks 1, 2, 6), trigger (3), delivery (4), growth (5), messages (7).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from bench import bench_delivery, bench_growth, bench_messages, bench_properties, bench_trigger
from bench._harness import RESULTS, ROOT, machine, rounds, seconds

ORDER = [
    ("properties_sqlite", "1. Property updates, SQLite", "ratio_median"),
    ("properties_pg_1proc", "2. Property updates, PostgreSQL, 1 process", "ratio_median"),
    ("properties_pg_2proc", "2. Property updates, PostgreSQL, 2 processes", "ratio_median"),
    ("trigger_sqlite", "3. Trigger-send acceptance, SQLite", "magpie_rps_median"),
    ("delivery_fcm", "4. Delivery to fake FCM", "ratio_median"),
    ("growth_sqlite", "5. Growth, 10k vs 10M profiles", "ratio_large_to_small"),
    ("memory", "6. Peak RSS of magpie serve", "peak_rss_mb"),
    ("kakao_trigger_sqlite", "7. Kakao trigger acceptance, SQLite", "magpie_rps_median"),
    ("delivery_nhn", "7. Delivery to fake NHN Cloud (AlimTalk)", "ratio_median"),
    ("delivery_solapi", "7. Delivery to fake Solapi (SMS)", "ratio_median"),
]


def _result_text(name: str, s: dict[str, Any]) -> str:
    if name.startswith("properties"):
        return (
            f"{s['ratio_median']:.2f}× baseline ({s['magpie_rps_median']:,} vs {s['baseline_rps_median']:,} req/s), "
            f"p50 {s['p50_ms_median']} ms, p99 {s['p99_ms_median']} ms; {s['acknowledged']:,} acknowledged, "
            f"{s['stored_increments']:,} stored"
        )
    if name == "trigger_sqlite":
        return (
            f"{s['magpie_rps_median']:,} req/s ({s['recipients_per_second_median']:,} recipients/s), "
            f"p99 {s['p99_ms_median']} ms; {s['acknowledged']:,} acknowledged, {s['dispatches_stored']:,} "
            f"dispatches and outbox items stored (baseline parse-only {s['baseline_rps_median']:,} req/s)"
        )
    if name == "kakao_trigger_sqlite":
        return (
            f"{s['magpie_rps_median']:,} req/s ({s['recipients_per_second_median']:,} recipients/s), "
            f"p99 {s['p99_ms_median']} ms, non-2xx {s['non_2xx']} "
            f"(baseline parse-only {s['baseline_rps_median']:,} req/s)"
        )
    if name in ("delivery_nhn", "delivery_solapi"):
        return (
            f"{s['ratio_median']:.2f}× baseline ({s['magpie_per_second_median']:,} vs "
            f"{s['baseline_per_second_median']:,} messages/s, {s['batches_in_flight']} batches of 50 in flight); "
            f"outcomes {s['outcomes']}"
        )
    if name == "delivery_fcm":
        return (
            f"{s['ratio_median']:.2f}× baseline ({s['magpie_per_second_median']:,} vs "
            f"{s['baseline_per_second_median']:,} deliveries/s); outcomes {s['outcomes']}"
        )
    if name == "growth_sqlite":
        return (
            f"{s['ratio_large_to_small']:.2f} ({s['large_rps_median']:,} req/s with {s['large_profiles']:,} "
            f"profiles vs {s['small_rps_median']:,} with {s['small_profiles']:,})"
        )
    if name == "memory":
        return (
            f"{s['peak_rss_mb']} MB ({s.get('server_process_mb', s['peak_rss_mb'])} MB server process + "
            f"{s.get('writer_process_mb', 0)} MB writer process)"
        )
    return json.dumps(s)


def write_docs() -> Path:
    rows = []
    details = []
    for name, title, _ in ORDER:
        path = RESULTS / f"{name}.json"
        if not path.exists():
            rows.append(f"| {title} | — | not run | — |")
            continue
        data = json.loads(path.read_text())
        rows.append(
            f"| {title} | {data['target']} | {_result_text(name, data['summary'])} | "
            f"{'met' if data['met'] else '**missed**'} |"
        )
        details.append(
            f"- `{data['command']}` — {data['when']}, {len(data['runs']) or 1} run(s): `bench/results/{name}.json`"
        )
    m = machine()
    text = f"""# Benchmarks

Every figure is the median of {rounds()} runs, measured as a ratio against a baseline run in the
same invocation on the same machine, alternating baseline and magpie runs (these machines are shared
and noisy; absolute numbers drift). Load comes from `wrk` in a separate process (2 threads,
64 connections, {seconds()} s per run). Reproduce with `make bench` (after `make run`'s install;
it installs `wrk` from Debian if missing), or one benchmark with the command in its row.

Machine: {m["cpus"]} cores ({m["cpu"]}), {m["memory_mb"]:,} MB, Python {m["python"]}, Linux {m["kernel"]};
magpie and the baselines on uvicorn (httptools, uvloop), SQLite in WAL mode with `synchronous=FULL`,
PostgreSQL 15 local. Written by `python -m bench.run_all` on {time.strftime("%Y-%m-%d %H:%M %Z")}.

| benchmark | target | result (median) | |
|---|---|---|---|
{chr(10).join(rows)}

## What each measures

1. **Property updates** — the seed's `POST /v1/properties` body (with `"$increment": {{"bench_hits": 1}}`
   added, so that the run can prove durability: the stored sum of `bench_hits` must be at least the
   number of 200s wrk counted, and exceed it by no more than the 64 requests in flight each time
   wrk stopped), 100k distinct users and devices. Baseline: `bench/baseline_app.py`, a minimal ASGI app on
   the same server software that parses the same JSON and answers 200 without storing.
2. **The same on PostgreSQL**, one `magpie serve` process, then two sharing the port (`SO_REUSEPORT`).
3. **Trigger-send acceptance** — Hackle's trigger body with 50 users each; acceptance only (the
   dispatch and its outbox work item committed in one transaction per group commit).
4. **Delivery** — 10,000 recipients per round from accepted dispatches to receipt at the fake FCM
   server (`tests/fakes/fcm.py`, its own process, OAuth2 and HTTP v1 as FCM speaks them), with two
   `magpie worker` processes; baseline: magpie's FCM provider alone blasting the same server with
   the same concurrency (64).
5. **Growth** — property updates on stores filled with 10k and with 10M users (and as many devices),
   users drawn at random over the whole store.
6. **Memory** — peak RSS (VmHWM) of `magpie serve` during benchmark 1: the server process plus its
   writer process, added up.
7. **Kakao and SMS** (`python -m bench.bench_messages`) — Hackle's Kakao trigger body (50 users) accepted
   as in 3, on an AlimTalk campaign; then delivery from accepted dispatches (50 users each, one gateway
   batch) to receipt at the fake NHN Cloud (AlimTalk v2.3) and fake Solapi (SMS, send-many/detail), each
   its own process, through `magpie worker` (deciding, decrypting numbers, rendering, reserving, sending,
   recording); baseline: magpie's gateway client alone sending the same batches to the same fake with as
   many batches in flight as the workers run.

## Runs

{chr(10).join(details)}
"""
    docs = ROOT / "docs" / "benchmarks.md"
    docs.parent.mkdir(exist_ok=True)
    docs.write_text(text)
    return docs


def main(argv: list[str]) -> int:
    names = argv or ["properties", "trigger", "delivery", "growth"]
    for name in names:
        print(f"== {name}", flush=True)
        if name == "properties":
            bench_properties.main(["all"])
        elif name == "trigger":
            bench_trigger.main()
        elif name == "delivery":
            bench_delivery.main()
        elif name == "growth":
            bench_growth.main()
        elif name == "messages":
            bench_messages.main([])
        else:
            raise SystemExit(f"unknown benchmark {name!r}")
    path = write_docs()
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
