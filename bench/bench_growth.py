"""Benchmark 5: property-update throughput with 10k vs 10M stored profiles (SQLite).

Each store is filled in bulk with N users and their linked devices (zero-padded ids), then
the seed body is sent for users drawn at random from all N, so every request reads and
rewrites an existing profile somewhere in the whole table. Both stores are served side by
side and their runs alternate, as magpie and the baselines do in the other benchmarks.

    python -m bench.bench_growth            (BENCH_GROWTH_LARGE=10000000 by default)
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench._harness import (
    CpuMeter,
    Proc,
    Report,
    free_port,
    magpie_cli,
    magpie_serve,
    median,
    rounds,
    seconds,
    workdir,
    wrk,
)

SMALL = 10_000
LARGE = int(os.environ.get("BENCH_GROWTH_LARGE", "10000000"))
CHUNK = 250_000


def fill(data: Path, users: int) -> float:
    """Insert ``users`` users and linked devices straight into the SQLite file; returns seconds taken."""
    started = time.perf_counter()
    db = sqlite3.connect(data / "magpie.db", isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    env_id = db.execute("SELECT id FROM environments WHERE name = 'bench'").fetchone()[0]
    now = int(time.time() * 1000)
    props = json.dumps({"age": 30, "grade": "SILVER", "sign_up_date": "2019-05-01", "bench_hits": 0})
    for kind, prefix in (("d", "device"), ("u", "user")):
        for start in range(0, users, CHUNK):
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO profiles (env_id, kind, ident, properties, crm, linked_user, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, '{}', ?, ?, ?)",
                (
                    (
                        env_id,
                        kind,
                        f"{prefix}-{i:09d}",
                        props if kind == "u" else "{}",
                        f"user-{i:09d}" if kind == "d" else None,
                        now,
                        now,
                    )
                    for i in range(start, min(users, start + CHUNK))
                ),
            )
            db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return time.perf_counter() - started


def _store(stack: ExitStack, users: int) -> tuple[Proc, dict[str, str]]:
    """A filled store and its running server (stopped when ``stack`` closes)."""
    tmp = stack.enter_context(workdir(f"growth-{users}"))
    data = tmp / "data"
    key = magpie_cli("env", "create", "bench", data_dir=data)["apiKey"]
    filled = fill(data, users)
    print(f"  [growth] {users:,} profiles filled in {filled:.0f} s", flush=True)
    server = magpie_serve(data_dir=data, port=free_port())
    stack.callback(server.stop)
    env = {"BENCH_KEY": key, "BENCH_USERS": str(users), "BENCH_SPREAD": "1", "BENCH_PAD": "1"}
    wrk(server.url + "/v1/properties", script="properties.lua", seconds=3, env=env)  # warm the cache
    return server, env


def _run(server: Proc, env: dict[str, str], users: int, round_no: int) -> dict[str, object]:
    with CpuMeter(lambda: {"server": [server.proc.pid], "writer": server.pids()[1:]}) as cpu:
        result = wrk(server.url + "/v1/properties", script="properties.lua", seconds=seconds(), env=env)
    us = cpu.per_request_us(result.requests)
    print(
        f"  [growth] {users:,} profiles, round {round_no}: {result.requests_per_second:,.0f}/s, "
        f"p99 {result.p99_ms:.1f} ms, CPU µs/request server {us['server']:.0f} + writer {us['writer']:.0f}",
        flush=True,
    )
    return {"round": round_no, "profiles": users, **asdict(result), "cpu_us": us}


def measure() -> list[dict[str, object]]:
    """Both stores filled and served side by side, their runs alternated so drift hits both alike."""
    runs: list[dict[str, object]] = []
    with ExitStack() as stack:
        small = _store(stack, SMALL)
        large = _store(stack, LARGE)
        for i in range(rounds()):
            # Alternate which goes first, too: the second run of a pair meets a warmer machine.
            pair = [(small, SMALL), (large, LARGE)] if i % 2 == 0 else [(large, LARGE), (small, SMALL)]
            for (server, env), users in pair:
                runs.append(_run(server, env, users, i + 1))
    return runs


def _median_of(runs: list[dict[str, object]], users: int, pick: Callable[[dict[str, Any]], float]) -> float:
    return median([pick(r) for r in runs if r["profiles"] == users])


def main() -> Report:
    runs = measure()
    small_rps = _median_of(runs, SMALL, lambda r: float(r["requests_per_second"]))
    large_rps = _median_of(runs, LARGE, lambda r: float(r["requests_per_second"]))

    def magpie_cpu(r: dict[str, Any]) -> float:
        return float(r["cpu_us"]["server"] + r["cpu_us"]["writer"])

    small_cpu = _median_of(runs, SMALL, magpie_cpu)
    large_cpu = _median_of(runs, LARGE, magpie_cpu)
    summary = {
        "small_profiles": SMALL,
        "large_profiles": LARGE,
        "small_rps_median": round(small_rps),
        "large_rps_median": round(large_rps),
        "ratio_large_to_small": round(large_rps / small_rps, 3),
        # magpie's own CPU per request (server + writer): less sensitive to a shared machine than req/s.
        "small_cpu_us_median": round(small_cpu, 1),
        "large_cpu_us_median": round(large_cpu, 1),
    }
    report = Report(
        name="growth_sqlite",
        command="python -m bench.bench_growth",
        target=f"throughput with {LARGE:,} profiles >= 0.8x the figure with {SMALL:,}",
        met=summary["ratio_large_to_small"] >= 0.8,
        summary=summary,
        runs=runs,
    )
    report.save()
    print(f"growth_sqlite: {'MET' if report.met else 'MISSED'} {summary}")
    return report


if __name__ == "__main__":
    main()
