"""Benchmark 3: trigger-send acceptance, 50-user requests, on SQLite, durable.

Acceptance only (no in-process workers): each 200 means the dispatch and its outbox item are
committed. The baseline parses the same bodies and stores nothing; it is reported for scale.

    python -m bench.bench_trigger
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict

from bench._harness import Report, baseline, free_port, magpie_cli, magpie_serve, median, rounds, seconds, workdir, wrk
from magpie.domain.campaigns import DEMO_CAMPAIGN


def main() -> Report:
    runs = []
    acked = 0
    with workdir("trigger") as tmp:
        data = tmp / "data"
        key = magpie_cli("env", "create", "development", data_dir=data)["apiKey"]
        campaign = tmp / "campaign.json"
        campaign.write_text(json.dumps(DEMO_CAMPAIGN))
        magpie_cli("campaign", "apply", "-f", str(campaign), data_dir=data)
        base = baseline(free_port())
        server = magpie_serve(data_dir=data, port=free_port())
        try:
            for i in range(rounds()):
                b = wrk(
                    base.url + "/v1/push-message/trigger/send",
                    script="trigger.lua",
                    seconds=seconds(),
                    env={"BENCH_KEY": key},
                )
                m = wrk(
                    server.url + "/v1/push-message/trigger/send",
                    script="trigger.lua",
                    seconds=seconds(),
                    env={"BENCH_KEY": key},
                )
                acked += m.requests - m.non_2xx
                runs.append(
                    {
                        "round": i + 1,
                        "baseline": asdict(b),
                        "magpie": asdict(m),
                        "ratio": m.requests_per_second / b.requests_per_second,
                    }
                )
                print(
                    f"  [trigger] round {i + 1}: baseline {b.requests_per_second:,.0f}/s, magpie "
                    f"{m.requests_per_second:,.0f}/s ({m.requests_per_second * 50:,.0f} recipients/s), "
                    f"p99 {m.p99_ms:.1f} ms, non-2xx {m.non_2xx}",
                    flush=True,
                )
        finally:
            server.stop()
            base.stop()
        db = sqlite3.connect(data / "magpie.db")
        dispatches = db.execute("SELECT COUNT(*) FROM dispatches").fetchone()[0]
        outbox = db.execute("SELECT COUNT(*) FROM work_items").fetchone()[0]
    rps = median([r["magpie"]["requests_per_second"] for r in runs])
    summary = {
        "magpie_rps_median": round(rps),
        "recipients_per_second_median": round(rps * 50),
        "baseline_rps_median": round(median([r["baseline"]["requests_per_second"] for r in runs])),
        "ratio_median": round(median([r["ratio"] for r in runs]), 3),
        "p99_ms_median": round(median([r["magpie"]["p99_ms"] for r in runs]), 2),
        "non_2xx": sum(r["magpie"]["non_2xx"] for r in runs),
        "acknowledged": acked,
        "dispatches_stored": dispatches,
        "outbox_items_stored": outbox,
        "durable": acked <= dispatches == outbox <= acked + 64 * rounds(),
    }
    report = Report(
        name="trigger_sqlite",
        command="python -m bench.bench_trigger",
        target=">= 1,000 requests/s accepted (50,000 recipients/s) on SQLite, durable",
        met=bool(rps >= 1000 and summary["durable"] and summary["non_2xx"] == 0),
        summary=summary,
        runs=runs,
    )
    report.save()
    print(f"trigger_sqlite: {'MET' if report.met else 'MISSED'} {summary}")
    return report


if __name__ == "__main__":
    main()
