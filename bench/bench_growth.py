"""Benchmark 5: property-update throughput with 10k vs 10M stored profiles (SQLite).

Each store is filled in bulk with N users and their linked devices (zero-padded ids), then
the seed body is sent for users drawn at random from all N, so every request reads and
rewrites an existing profile somewhere in the whole table.

    python -m bench.bench_growth            (BENCH_GROWTH_LARGE=10000000 by default)
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import asdict
from pathlib import Path

from bench._harness import Report, free_port, magpie_cli, magpie_serve, median, rounds, seconds, workdir, wrk

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


def measure(users: int) -> tuple[list[dict[str, object]], float]:
    with workdir(f"growth-{users}") as tmp:
        data = tmp / "data"
        key = magpie_cli("env", "create", "bench", data_dir=data)["apiKey"]
        filled = fill(data, users)
        print(f"  [growth] {users:,} profiles filled in {filled:.0f} s", flush=True)
        server = magpie_serve(data_dir=data, port=free_port())
        env = {"BENCH_KEY": key, "BENCH_USERS": str(users), "BENCH_SPREAD": "1", "BENCH_PAD": "1"}
        runs = []
        try:
            wrk(server.url + "/v1/properties", script="properties.lua", seconds=3, env=env)  # warm the cache
            for i in range(rounds()):
                result = wrk(server.url + "/v1/properties", script="properties.lua", seconds=seconds(), env=env)
                runs.append({"round": i + 1, "profiles": users, **asdict(result)})
                print(
                    f"  [growth] {users:,} profiles, round {i + 1}: {result.requests_per_second:,.0f}/s, "
                    f"p99 {result.p99_ms:.1f} ms",
                    flush=True,
                )
        finally:
            server.stop()
    return runs, filled


def main() -> Report:
    small, _ = measure(SMALL)
    large, fill_seconds = measure(LARGE)
    small_rps = median([float(r["requests_per_second"]) for r in small])  # type: ignore[arg-type]
    large_rps = median([float(r["requests_per_second"]) for r in large])  # type: ignore[arg-type]
    summary = {
        "small_profiles": SMALL,
        "large_profiles": LARGE,
        "small_rps_median": round(small_rps),
        "large_rps_median": round(large_rps),
        "ratio_large_to_small": round(large_rps / small_rps, 3),
        "large_fill_seconds": round(fill_seconds),
    }
    report = Report(
        name="growth_sqlite",
        command="python -m bench.bench_growth",
        target=f"throughput with {LARGE:,} profiles >= 0.8x the figure with {SMALL:,}",
        met=summary["ratio_large_to_small"] >= 0.8,
        summary=summary,
        runs=small + large,
    )
    report.save()
    print(f"growth_sqlite: {'MET' if report.met else 'MISSED'} {summary}")
    return report


if __name__ == "__main__":
    main()
