"""Benchmarks 1, 2 and 6: property updates on SQLite and PostgreSQL, and peak memory.

The seed's ``POST /v1/properties`` body (plus ``$increment: {bench_hits: 1}``, so the run can
prove every 200 was stored), 100k distinct users, 64 connections, load from wrk in a separate
process. Baseline: ``bench/baseline_app.py`` on the same server software, parsing the same JSON.

    python -m bench.bench_properties [sqlite|pg|all]
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psycopg

from bench._harness import (
    RESULTS,
    CpuMeter,
    PidGroups,
    Proc,
    Report,
    baseline,
    free_port,
    magpie_cli,
    magpie_serve,
    median,
    postgres_backends,
    rounds,
    seconds,
    workdir,
    wrk,
)

USERS = 100_000
# SQLite's ratio is judged on more runs than the others: its target bounds the worst run too.
SQLITE_ROUNDS = int(os.environ.get("BENCH_SQLITE_ROUNDS", "5"))
PG_ADMIN = os.environ.get("MAGPIE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


CPU_GROUPS = ("server", "writer", "postgres", "wrk")


def _groups(servers: list[Proc], database: str | None) -> PidGroups:
    """magpie's processes by role: the server processes, their writer children, their database backends."""
    groups: PidGroups = {"server": [s.proc.pid for s in servers], "writer": [], "postgres": []}
    for server in servers:
        groups["writer"].extend(server.pids()[1:])
    if database is not None:
        groups["postgres"] = postgres_backends(database, PG_ADMIN)
    return groups


def _cpu_line(cpu: dict[str, float]) -> str:
    return ", ".join(f"{name} {cpu.get(name, 0):.0f}" for name in (*CPU_GROUPS, "other"))


def _alternate(
    base: Proc, servers: list[Proc], key: str, *, label: str, database: str | None = None, count: int | None = None
) -> tuple[list[dict[str, Any]], int]:
    """Alternate baseline and magpie runs; returns per-round results and magpie's acknowledged count.

    Each run also records the CPU time per request of every process taking part (µs, from /proc).
    """
    runs: list[dict[str, Any]] = []
    acked = 0
    env = {"BENCH_KEY": key, "BENCH_USERS": str(USERS)}
    for i in range(count or rounds()):
        with CpuMeter(lambda: {"server": base.pids()}) as base_cpu:
            b = wrk(base.url + "/v1/properties", script="properties.lua", seconds=seconds(), env=env)
        with CpuMeter(lambda: _groups(servers, database)) as magpie_cpu:
            m = wrk(servers[0].url + "/v1/properties", script="properties.lua", seconds=seconds(), env=env)
        acked += m.requests - m.non_2xx
        ratio = m.requests_per_second / b.requests_per_second
        b_us = base_cpu.per_request_us(b.requests)
        m_us = magpie_cpu.per_request_us(m.requests)
        runs.append(
            {
                "round": i + 1,
                "baseline": asdict(b),
                "magpie": asdict(m),
                "ratio": ratio,
                "baseline_cpu_us": b_us,
                "magpie_cpu_us": m_us,
            }
        )
        print(
            f"  [{label}] round {i + 1}: baseline {b.requests_per_second:,.0f}/s, magpie "
            f"{m.requests_per_second:,.0f}/s (ratio {ratio:.2f}), p50 {m.p50_ms:.1f} ms, p99 {m.p99_ms:.1f} ms, "
            f"non-2xx {m.non_2xx}\n"
            f"      CPU µs/request: baseline {_cpu_line(b_us)}; magpie {_cpu_line(m_us)}",
            flush=True,
        )
    return runs, acked


def _cpu_summary(runs: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Median µs of CPU per request for each process group over the runs, and magpie's own (server + writer)."""
    names = [*CPU_GROUPS, "other"]
    out = {name: round(median([r[key].get(name, 0.0) for r in runs]), 1) for name in names}
    out["magpie"] = round(median([r[key].get("server", 0.0) + r[key].get("writer", 0.0) for r in runs]), 1)
    out["total"] = round(median([sum(r[key].get(n, 0.0) for n in CPU_GROUPS) for r in runs]), 1)
    return out


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "ratio_median": round(median([r["ratio"] for r in runs]), 3),
        "magpie_rps_median": round(median([r["magpie"]["requests_per_second"] for r in runs])),
        "baseline_rps_median": round(median([r["baseline"]["requests_per_second"] for r in runs])),
        "p50_ms_median": round(median([r["magpie"]["p50_ms"] for r in runs]), 2),
        "p99_ms_median": round(median([r["magpie"]["p99_ms"] for r in runs]), 2),
        "non_2xx": sum(r["magpie"]["non_2xx"] for r in runs),
        "cpu_us_per_request": _cpu_summary(runs, "magpie_cpu_us"),
        "baseline_cpu_us_per_request": _cpu_summary(runs, "baseline_cpu_us"),
    }


def bench_sqlite() -> tuple[Report, Report]:
    with workdir("sqlite") as tmp:
        data = tmp / "data"
        key = magpie_cli("env", "create", "bench", data_dir=data)["apiKey"]
        base = baseline(free_port())
        server = magpie_serve(data_dir=data, port=free_port())
        try:
            runs, acked = _alternate(base, [server], key, label="sqlite", count=SQLITE_ROUNDS)
            peak = server.peak_rss_mb()
            writer_peak = server.child_peak_rss_mb()
        finally:
            server.stop()
            base.stop()
        stored = (
            sqlite3.connect(data / "magpie.db")
            .execute("SELECT COALESCE(SUM(json_extract(properties, '$.bench_hits')), 0) FROM profiles WHERE kind = 'u'")
            .fetchone()[0]
        )
    summary = _summary(runs)
    # Requests still in flight when wrk stopped may be stored without being counted: at most 64.
    summary.update(
        {
            "acknowledged": acked,
            "stored_increments": stored,
            "durable": acked <= stored <= acked + 64 * len(runs),
            "ratio_min": round(min(r["ratio"] for r in runs), 3),
        }
    )
    met = (
        summary["ratio_median"] >= 0.5
        and summary["ratio_min"] >= 0.45
        and summary["p99_ms_median"] <= 25
        and summary["durable"]
    )
    command = "python -m bench.bench_properties sqlite"
    properties = Report(
        name="properties_sqlite",
        command=command,
        target=f">= 0.5x baseline throughput in the median of {SQLITE_ROUNDS} runs, none below 0.45x, p99 <= 25 ms, "
        "every 200 durable",
        met=bool(met and summary["non_2xx"] == 0),
        summary=summary,
        runs=runs,
    )
    memory = Report(
        name="memory",
        command=command,
        target="peak RSS of magpie serve during benchmark 1 <= 200 MB",
        # Counted with its writer process: together they are what `magpie serve` costs.
        met=peak + writer_peak <= 200,
        summary={
            "peak_rss_mb": round(peak + writer_peak, 1),
            "server_process_mb": round(peak, 1),
            "writer_process_mb": round(writer_peak, 1),
        },
    )
    return properties, memory


def _pg_database() -> str:
    name = f"magpie_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


def _drop_pg(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def bench_pg(processes: int) -> Report:
    url = _pg_database()
    try:
        with workdir("pg") as tmp:
            data = tmp / "data"
            env = {"MAGPIE_DATABASE_URL": url, "MAGPIE_SECRET_KEY": "A" * 43}
            key = magpie_cli("env", "create", "bench", data_dir=data, env=env)["apiKey"]
            base = baseline(free_port())
            port = free_port()
            serve_env = {**env, "MAGPIE_REUSE_PORT": "1"} if processes > 1 else env
            servers = [magpie_serve(data_dir=data, port=port, env=serve_env) for _ in range(processes)]
            try:
                runs, acked = _alternate(base, servers, key, label=f"pg x{processes}", database=url.rsplit("/", 1)[1])
            finally:
                for server in servers:
                    server.stop()
                base.stop()
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT COALESCE(SUM((properties::jsonb ->> 'bench_hits')::int), 0) FROM profiles WHERE kind = 'u'"
            ).fetchone()
        stored = int(row[0]) if row else 0
    finally:
        _drop_pg(url)
    summary = _summary(runs)
    summary.update(
        {
            "processes": processes,
            "acknowledged": acked,
            "stored_increments": stored,
            "durable": acked <= stored <= acked + 64 * rounds(),
        }
    )
    if processes == 1:
        target, enough = ">= 0.35x baseline throughput, every 200 durable", summary["ratio_median"] >= 0.35
    else:
        one = _one_process_ratio()
        summary["one_process_ratio"] = one
        target = ">= the one-process ratio (never slower with more processes), every 200 durable"
        enough = one is not None and summary["ratio_median"] >= one
    return Report(
        name=f"properties_pg_{processes}proc",
        command=f"python -m bench.bench_properties pg{processes}",
        target=target,
        met=bool(enough and summary["durable"] and summary["non_2xx"] == 0),
        summary=summary,
        runs=runs,
    )


def _one_process_ratio() -> float | None:
    """The one-process PostgreSQL ratio last measured (this invocation's, when it ran ``pg`` or ``all``)."""
    path = RESULTS / "properties_pg_1proc.json"
    if not path.exists():
        return None
    ratio: float = json.loads(path.read_text())["summary"]["ratio_median"]
    return ratio


def main(argv: list[str]) -> list[Report]:
    which = argv[0] if argv else "all"
    reports: list[Report] = []
    if which in ("sqlite", "all"):
        reports.extend(bench_sqlite())
    if which in ("pg", "pg1", "all"):
        reports.append(bench_pg(1))
        reports[-1].save()  # the two-process run compares itself with this one
    if which in ("pg", "pg2", "all"):
        reports.append(bench_pg(2))
    for report in reports:
        path = report.save()
        print(f"{report.name}: {'MET' if report.met else 'MISSED'} {report.summary} -> {path.relative_to(Path.cwd())}")
    return reports


if __name__ == "__main__":
    main(sys.argv[1:])
