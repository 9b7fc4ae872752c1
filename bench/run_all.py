"""Run every benchmark and write bench/results/*.json and docs/benchmarks.md.

    make bench        (or: python -m bench.run_all [name ...])

Names: properties (benchmarks 1, 2, 6), profile (where a property update's time goes), trigger (3),
delivery (4), growth (5), dashboard (7), messages (8).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from bench import (
    bench_dashboard,
    bench_delivery,
    bench_growth,
    bench_messages,
    bench_profile,
    bench_properties,
    bench_trigger,
)
from bench._harness import RESULTS, ROOT, machine, median, rounds, seconds
from bench.bench_properties import SQLITE_ROUNDS

ORDER = [
    ("properties_sqlite", "1. Property updates, SQLite", "ratio_median"),
    ("properties_pg_1proc", "2. Property updates, PostgreSQL, 1 process", "ratio_median"),
    ("properties_pg_2proc", "2. Property updates, PostgreSQL, 2 processes", "ratio_median"),
    ("trigger_sqlite", "3. Trigger-send acceptance, SQLite", "magpie_rps_median"),
    ("delivery_fcm", "4. Delivery to fake FCM", "ratio_median"),
    ("growth_sqlite", "5. Growth, 10k vs 10M profiles", "ratio_large_to_small"),
    ("memory", "6. Peak RSS of magpie serve", "peak_rss_mb"),
    ("dashboard_sqlite", "7. Dashboard pages, 100k users and 1M outcomes, SQLite", "worst_p95_ms"),
    ("dashboard_pg", "7. Dashboard pages, 100k users and 1M outcomes, PostgreSQL", "worst_p95_ms"),
    ("kakao_trigger_sqlite", "8. Kakao trigger acceptance, SQLite", "magpie_rps_median"),
    ("delivery_nhn", "8. Delivery to fake NHN Cloud (AlimTalk)", "ratio_median"),
    ("delivery_solapi", "8. Delivery to fake Solapi (SMS)", "ratio_median"),
    ("delivery_nhn_pg", "8. Delivery to fake NHN Cloud (AlimTalk), PostgreSQL, 1 and 2 workers", "ratio_median"),
    ("delivery_solapi_pg", "8. Delivery to fake Solapi (SMS), PostgreSQL, 1 and 2 workers", "ratio_median"),
    ("worker_rss_nhn", "8. Peak RSS of a worker delivering a 10,000-recipient item", "peak_mb_median"),
]


def _result_text(name: str, s: dict[str, Any]) -> str:
    if name.startswith("properties"):
        worst = f" (lowest run {s['ratio_min']:.2f}×)" if "ratio_min" in s else ""
        return (
            f"{s['ratio_median']:.2f}× baseline{worst} "
            f"({s['magpie_rps_median']:,} vs {s['baseline_rps_median']:,} req/s), "
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
    if name.startswith(("delivery_nhn", "delivery_solapi")):
        cpu = s.get("cpu_us_per_recipient")
        own = f"; magpie's CPU {cpu['magpie']:.0f} µs per recipient" if cpu else ""
        two = s.get("two_workers")
        pair = (
            f"; two workers {two['cpu_us_per_recipient']['magpie']:.0f} µs "
            f"({two['magpie_cpu_two_over_one']:.2f}× one's)"
            if two
            else ""
        )
        return (
            f"{s['ratio_median']:.2f}× baseline ({s['magpie_per_second_median']:,} vs "
            f"{s['baseline_per_second_median']:,} messages/s, {s['batches_in_flight']} batches of 50 in flight)"
            f"{own}{pair}; outcomes {s['outcomes']}"
        )
    if name == "worker_rss_nhn":
        return (
            f"{s['peak_mb_median']:.1f} MB peak ({s['idle_mb_median']:.0f} MB idle before the item, "
            "once the worker settled), "
            f"{s['recipients_in_item']:,} recipients in {s['seconds_median']} s; outcomes {s['outcomes']}"
        )
    if name == "delivery_fcm":
        provider = (
            f"provider alone {s['provider_ratio_median']:.2f}× ({s['provider_per_second_median']:,}/s), "
            if "provider_ratio_median" in s
            else ""
        )
        return (
            f"{provider}end to end {s['ratio_median']:.2f}× ({s['magpie_per_second_median']:,}/s) of the minimal "
            f"client's {s['baseline_per_second_median']:,} deliveries/s; outcomes {s['outcomes']}"
        )
    if name == "growth_sqlite":
        return (
            f"{s['ratio_large_to_small']:.2f} ({s['large_rps_median']:,} req/s with {s['large_profiles']:,} "
            f"profiles vs {s['small_rps_median']:,} with {s['small_profiles']:,})"
            + (
                f"; magpie CPU {s['large_cpu_us_median']:.0f} vs {s['small_cpu_us_median']:.0f} µs/request"
                if "large_cpu_us_median" in s
                else ""
            )
        )
    if name == "memory":
        return (
            f"{s['peak_rss_mb']} MB ({s.get('server_process_mb', s['peak_rss_mb'])} MB server process + "
            f"{s.get('writer_process_mb', 0)} MB writer process)"
        )
    if name.startswith("dashboard"):
        slowest = max(s["pages"].items(), key=lambda kv: kv[1]["p95_ms"])
        return (
            f"slowest page p95 {s['worst_p95_ms']} ms ({slowest[0]}), {len(s['pages'])} pages; "
            f"{s['users']:,} users, {s['recipients']:,} recipients, {s['deliveries']:,} deliveries; "
            f"migration backfill {s['migration_backfill_seconds']} s"
        )
    return json.dumps(s)


CPU_ROWS = [
    ("properties_sqlite", "SQLite, 1 process"),
    ("properties_pg_1proc", "PostgreSQL, 1 process"),
    ("properties_pg_2proc", "PostgreSQL, 2 processes"),
]


def _us(value: float) -> str:
    return f"{value:,.0f}"


def cpu_section() -> str:
    """The CPU-per-request table of the property-update runs, magpie next to its baseline."""
    rows = []
    commands = []
    magpie: dict[str, float] = {}
    for name, title in CPU_ROWS:
        path = RESULTS / f"{name}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        s = data["summary"]
        cpu = s.get("cpu_us_per_request")
        base = s.get("baseline_cpu_us_per_request")
        if not cpu or not base:
            continue
        magpie[name] = cpu["magpie"]
        pairs = (("magpie", cpu, s["magpie_rps_median"]), ("baseline", base, s["baseline_rps_median"]))
        for who, figures, rps in pairs:
            # How busy the rest of the machine was: its CPU per request times the request rate.
            busy = median(
                [r[f"{who}_cpu_us"].get("other", 0.0) * r[who]["requests_per_second"] / 1e6 for r in data["runs"]]
            )
            rows.append(
                f"| {title}, {who} | {rps:,} | {_us(figures['server'])} | {_us(figures['writer'])} | "
                f"{_us(figures['postgres'])} | {_us(figures['wrk'])} | **{_us(figures['total'])}** | "
                f"{_us(figures['other'])} ({busy:.1f} cores) |"
            )
        commands.append(f"`{data['command']}` ({data['when']})")
    if not rows:
        return ""
    verdict = ""
    if "properties_sqlite" in magpie and "properties_pg_1proc" in magpie:
        ratio = magpie["properties_pg_1proc"] / magpie["properties_sqlite"]
        verdict = (
            f"\nmagpie's own CPU per request (server + writer) on PostgreSQL, one process: "
            f"{_us(magpie['properties_pg_1proc'])} µs against {_us(magpie['properties_sqlite'])} µs on SQLite, "
            f"{ratio:.2f}× (target: within 1.25×: {'met' if ratio <= 1.25 else '**missed**'}).\n"
        )
    projection = ""
    pg = _cpu_figures("properties_pg_1proc")
    if pg is not None:
        api_cores, db_cores = 16, 8
        magpie_us, pg_us = pg["magpie"], pg["postgres"]
        api_rps = api_cores / (magpie_us * 1e-6)
        db_rps = db_cores / (pg_us * 1e-6) if pg_us else float("inf")
        projection = f"""
### Projection: a 16-core API host and an 8-core database host

**A projection from the table above, not a measurement** (its assumptions are in
[scaling.md](scaling.md#sizing-from-the-cpu-table)). With PostgreSQL, one process: the API host
spends {_us(magpie_us)} µs of CPU per request (server + writer), so its {api_cores} cores carry about
{_round(api_rps)} requests/s ({api_cores // 2} `magpie serve` processes); the database host spends
{_us(pg_us)} µs per request in PostgreSQL backends, so its {db_cores} cores carry about {_round(db_rps)}
requests/s. The projected ceiling is the lower: **about {_round(min(api_rps, db_rps))} property updates per
second**, bound by the {"API" if api_rps <= db_rps else "database"} host.
"""
    return f"""
## CPU time per request (property updates)

Microseconds of CPU per request, by process, median of the runs above: `utime + stime` of each
process and its threads read from `/proc/<pid>/stat` before and after every wrk run, divided by
the requests wrk completed. *server*: the `magpie serve` process(es) or the baseline app; *writer*:
their writer child processes; *PostgreSQL*: the backends connected to the benchmark's database
(`pg_stat_activity`); *wrk*: the load generator; *total*: the sum of those four. *Others*: CPU the
rest of the machine used during the same runs (PostgreSQL's shared background processes, and
anything else running), per request and in cores busy on average, for context: of the machine's
cores, that much was not available to the run. On a CPU-bound machine, throughput is the CPU available
divided by *total*; that figure, not req/s, is what carries to a machine with more cores.

| set-up | req/s | server | writer | PostgreSQL | wrk | total | others (machine load) |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}
{verdict}
Commands: {"; ".join(commands)}.
{projection}"""


def profile_section() -> str:
    """Where a property update's time goes in the server and writer processes (``bench_profile``)."""
    blocks = []
    for engine, title in (("sqlite", "SQLite"), ("pg", "PostgreSQL")):
        path = RESULTS / f"profile_{engine}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        s = data["summary"]
        for process in ("server", "writer"):
            figures = s[process]
            rows = "\n".join(f"| {category} | {share:.0%} |" for category, share in figures["shares"].items())
            blocks.append(
                f"**{title}, {process} process** ({_us(figures['cpu_us_per_request'])} µs of CPU per request, "
                f"{s['requests_per_second']:,} req/s while sampled; `{data['command']}`, {data['when']}):\n\n"
                f"| where | share of busy samples |\n|---|---|\n{rows}\n"
            )
    if not blocks:
        return ""
    body = "\n".join(blocks)
    return f"""
## Where the time goes (property updates)

A sampling profile of `magpie serve` under benchmark 1's load: py-spy samples the server process
and its writer process {bench_profile.RATE} times a second without stopping them, and each sample in which the
process was not waiting for work is put in one category (the rules are in `bench/bench_profile.py`;
an fsync counts as busy, so the writer's shares are of its busy time, not only of its CPU).

{body}"""


# Measured before the delivery pipeline was reshaped (commit 1e654a1), with the same commands, on
# 2026-12-04 on a shared 2-core machine; kept here because the results files hold the latest runs only.
DELIVERY_BEFORE = """\
| benchmark | workers | writers | fake | ratio (median of 3) |
|---|---|---|---|---|
| 8, AlimTalk to fake NHN Cloud | 60–62 µs | 38–40 µs | 12 µs | 0.10× (5,919 vs 53,351/s; 6,863 vs 71,042/s) |
| 8, SMS to fake Solapi | 74 µs | 41 µs | 20 µs | 0.10× (6,517 vs 72,241/s) |
| 4, push to fake FCM (2 workers) | 317 µs | 62 µs | 80 µs | 0.35× end to end (1,896 vs 4,993/s), provider 0.91× |

- AlimTalk workers: load 19–21%, event loop 19–22%, hand-off to the writer 16–17%, stages 11–15%,
  gateway client 8–10%, render 6%; writer: commit 42%, per-recipient records 25%, reserve 16%,
  pickle and pipe 16%.
- SMS workers: render 18%, load 18%, hand-off 18%, event loop 16%; writer: commit 49%,
  per-recipient records 21%, reserve 13%.
- Push workers: aiohttp 27%, load 24% (a scan of the environment's devices per work item), event
  loop 21%; writer: commit 58%, pickle and pipe 23%, records 10%.
"""


def delivery_profile_section() -> str:
    """Where a delivered recipient's CPU goes, by process (``bench_profile delivery``), before and after."""
    blocks = []
    for target, title in (
        ("nhn", "AlimTalk to fake NHN Cloud"),
        ("solapi", "SMS to fake Solapi"),
        ("fcm", "push to fake FCM"),
    ):
        path = RESULTS / f"profile_delivery_{target}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        s = data["summary"]
        figures = ", ".join(f"{role} {s[role]['cpu_us_per_recipient_median']:,.0f} µs" for role in s)
        parts = []
        for role in ("workers", "writers"):
            if role in s and s[role].get("shares"):
                rows = "\n".join(f"| {category} | {share:.0%} |" for category, share in s[role]["shares"].items())
                parts.append(f"*{role}*:\n\n| where | share of busy samples |\n|---|---|\n{rows}\n")
        blocks.append(
            f"**{title}** (CPU per recipient: {figures}; `{data['command']}`, {data['when']}):\n\n" + "\n".join(parts)
        )
    if not blocks:
        return ""
    body = "\n".join(blocks)
    return f"""
## Where the time goes (delivery)

`python -m bench.bench_profile delivery [fcm|nhn|solapi]` runs benchmark 4 or 8 and, around each
round's delivery (from acceptance to the fake's receipt of the last message), reads the CPU time of
the `magpie worker` processes, their writer processes and the fake from `/proc`, divided by the
round's recipients (median of the rounds; *other* is the rest of the machine: on a shared machine it
says how noisy the run was), while py-spy samples them (rules in `bench/bench_profile.py`).

Before (commit 1e654a1: a push recipient's outcome one writer job, a Kakao/SMS batch's outcomes a
few statements per recipient, a separate lease check before each gateway batch, the items in flight a
quarter of the concurrency, and the linked-devices query scanning the environment's devices on
SQLite), CPU per recipient by process, with the same commands on 2026-12-04 (the benchmark files of
this commit, so rounds of 20,000 and 32 batches in flight for the gateway client alone):

{DELIVERY_BEFORE}
After (one reserve job and one record job per batch, the lease checked in the reserve job, Kakao and
SMS items in flight up to the concurrency, msgspec for job rows and vendor bodies, the linked-user index
named on SQLite):

{body}
What is left, by the profiles: the worker's load stage (SQLite reads of the batch's profiles, about a
quarter of a Kakao/SMS worker's samples), rendering (`magpie.domain.campaigns`, a fifth on Solapi) and
building gateway requests; in the writer, inserting the batch's recipient and delivery rows and the
commit. Push spends most of its worker CPU in aiohttp and the event loop, as the minimal client does.
These machines are shared: the figures of one run move by a third between runs.
"""


def _round(value: float) -> str:
    """Two significant figures: a projection has no more."""
    return f"{float(f'{value:.2g}'):,.0f}"


def _cpu_figures(name: str) -> dict[str, float] | None:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return None
    figures: dict[str, float] | None = json.loads(path.read_text())["summary"].get("cpu_us_per_request")
    return figures


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

Every figure is the median of {rounds()} runs (SQLite property updates: {SQLITE_ROUNDS}), measured as a
ratio against a baseline run in the same invocation on the same machine, alternating baseline and
magpie runs (these machines are shared and noisy; absolute numbers drift). Load comes from `wrk` in
a separate process (2 threads, 64 connections, {seconds()} s per run). Reproduce with `make bench`
(after `make run`'s install; it installs `wrk` from Debian if missing), or one benchmark with the
command in its row.

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
4. **Delivery** — 20,000 recipients per round (`BENCH_RECIPIENTS`) from accepted dispatches to receipt at the fake FCM
   server (`tests/fakes/fcm.py`, its own process, OAuth2 and HTTP v1 as FCM speaks them), with two
   `magpie worker` processes (claim, resolve, audience, consent, caps, render, send, record).
   Baseline: a minimal FCM v1 client written for the benchmark on aiohttp (one OAuth2 token from the
   service account, then the same `messages:send` requests) with the same concurrency (64).
   magpie's FCM provider alone, driven the same way, is the second figure: what the provider costs
   apart from the rest of delivery.
5. **Growth** — property updates on stores filled with 10k and with 10M users (and as many devices),
   users drawn at random over the whole store; both stores served side by side, their runs
   alternated. magpie's CPU per request (server + writer) for each is reported beside req/s.
6. **Memory** — peak RSS (VmHWM) of `magpie serve` during benchmark 1: the server process plus its
   writer process, added up.
7. **Dashboard pages** — a store (SQLite, then PostgreSQL) with 100,000 users (and their devices and tokens), 20
   campaigns and 1,000,000 recipient outcomes over 30 days (20,000 dispatches, ~900,000 deliveries,
   ~50,000 clicks, ~150,000 events), written at schema revision 0002 and then migrated (the
   migration's backfill of the hourly counts is timed), then `ANALYZE` (PostgreSQL: `VACUUM ANALYZE`,
   the state autovacuum keeps a store that takes inserts in). A signed-in client asks a real
   `magpie serve` for each page 50 times (`BENCH_DASHBOARD_REQUESTS`), one at a time; the figure is the
   client-observed time on loopback (an upper bound of the server-side render); per-page figures are
   in the results file, with the machine it ran on.
8. **Kakao and SMS** (`python -m bench.bench_messages`) — Hackle's Kakao trigger body (50 users) accepted
   as in 3, on an AlimTalk campaign; then delivery from accepted dispatches (50 users each, one gateway
   batch) to receipt at the fake NHN Cloud (AlimTalk v2.3) and fake Solapi (SMS, send-many/detail), each
   its own process, through `magpie worker` (deciding, decrypting numbers, rendering, reserving, sending,
   recording), 20,000 messages per round (`BENCH_MESSAGES`); baseline: magpie's gateway client alone
   sending the same batches to the same fake with as many batches in flight as the workers run (each
   worker runs as many Kakao and SMS work items at once as its concurrency, 32 here). Each round also
   reads, from `/proc`, the CPU per recipient of every process taking part: the workers, their writers,
   PostgreSQL's backends, the fake and the load (the benchmark process accepting the dispatches);
   *magpie* is workers + writers. On PostgreSQL (`python -m bench.bench_messages nhn-pg`) one worker's
   rounds are followed, on the same store and fake, by two workers' rounds. `python -m
   bench.bench_messages rss`: a fresh `magpie worker` delivers one work item of 10,000 recipients
   (one dispatch) to the fake NHN Cloud; its peak RSS is `VmHWM` from `/proc/PID/status`.

{cpu_section()}{profile_section()}{delivery_profile_section()}
## Runs

{chr(10).join(details)}
"""
    docs = ROOT / "docs" / "benchmarks.md"
    docs.parent.mkdir(exist_ok=True)
    docs.write_text(text)
    return docs


def main(argv: list[str]) -> int:
    names = argv or ["properties", "profile", "trigger", "delivery", "growth", "dashboard", "messages"]
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
        elif name == "dashboard":
            bench_dashboard.main(["all"])
        elif name == "messages":
            bench_messages.main([])
        elif name == "profile":
            bench_profile.main([])
        elif name == "profile-delivery":  # not in the default list: it runs benchmarks 4 and 8 again
            bench_profile.main(["delivery"])
        else:
            raise SystemExit(f"unknown benchmark {name!r}")
    path = write_docs()
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
