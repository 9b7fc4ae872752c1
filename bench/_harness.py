"""Shared benchmark plumbing: servers as processes, wrk runs, peak RSS, medians, results files.

Every figure is a ratio against a baseline measured in the same invocation, alternating
baseline and magpie runs so that drift on a shared machine hits both alike.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def need_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("wrk is not installed: run `make bench`, which installs it (Debian package wrk)")
    return path


@dataclass
class Proc:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def peak_rss_mb(self) -> float:
        """Peak resident set size (VmHWM) of the process, in MB."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        match = re.search(r"VmHWM:\s+(\d+) kB", status)
        return int(match.group(1)) / 1024 if match else 0.0

    def child_peak_rss_mb(self) -> float:
        """Peak RSS of the process's children (the writer process of ``magpie serve``), in MB."""
        total = 0.0
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            for pid in (task / "children").read_text().split():
                status = Path(f"/proc/{pid}/status").read_text()
                match = re.search(r"VmHWM:\s+(\d+) kB", status)
                total += int(match.group(1)) / 1024 if match else 0.0
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start(cmd: list[str], *, port: int, env: dict[str, str] | None = None, ready_path: str = "/healthz") -> Proc:
    log = Path(tempfile.mkstemp(prefix="magpie-bench-", suffix=".log")[1])
    environ = {**os.environ, **(env or {})}
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, env=environ, stdout=out, stderr=out, cwd=ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[:3]} exited early:\n{log.read_text()[-3000:]}")
        try:
            httpx.get(f"http://127.0.0.1:{port}{ready_path}", timeout=1)
            return Proc(proc, port, log)
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{cmd[:3]} did not become ready:\n{log.read_text()[-3000:]}")


def baseline(port: int) -> Proc:
    """The minimal ASGI app on the same server software and options as ``magpie serve``."""
    return start([PYTHON, str(BENCH / "baseline_app.py"), str(port)], port=port, ready_path="/")


def magpie_serve(*, data_dir: Path, port: int, env: dict[str, str] | None = None) -> Proc:
    environ = {
        "MAGPIE_DATA_DIR": str(data_dir),
        "MAGPIE_PORT": str(port),
        "MAGPIE_HOST": "127.0.0.1",
        "MAGPIE_WORKERS": "0",
        "MAGPIE_BOOTSTRAP": "0",
        **(env or {}),
    }
    return start([PYTHON, "-m", "magpie.cli", "serve"], port=port, env=environ)


def magpie_cli(*args: str, data_dir: Path, env: dict[str, str] | None = None) -> Any:
    environ = {**os.environ, "MAGPIE_DATA_DIR": str(data_dir), **(env or {})}
    out = subprocess.run(
        [PYTHON, "-m", "magpie.cli", *args, "--json"], env=environ, capture_output=True, text=True, cwd=ROOT, check=True
    )
    return json.loads(out.stdout)


@dataclass
class WrkResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    errors: int


_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s)", text)
    assert match, text
    return float(match.group(1)) * _UNIT[match.group(2)]


def wrk(
    url: str,
    *,
    script: str,
    seconds: int,
    connections: int = 64,
    threads: int = 2,
    env: dict[str, str] | None = None,
) -> WrkResult:
    """Run wrk (a separate process) and parse its summary."""
    cmd = [need_wrk(), f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(BENCH / script), url]
    environ = {**os.environ, "BENCH_THREADS": str(threads), **(env or {})}
    out = subprocess.run(cmd, env=environ, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)$", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)$", out, re.M).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return WrkResult(
        requests_per_second=rps,
        p50_ms=p50,
        p99_ms=p99,
        requests=total,
        non_2xx=int(non2xx.group(1)) if non2xx else 0,
        errors=sum(int(g) for g in errors.groups()) if errors else 0,
    )


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


@contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"magpie-bench-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        mem = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1)) // 1024  # type: ignore[union-attr]
    except (OSError, AttributeError):
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_mb": mem,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


@dataclass
class Report:
    """One benchmark's outcome, written to bench/results/<name>.json."""

    name: str
    command: str
    target: str
    met: bool
    summary: dict[str, Any]
    runs: list[dict[str, Any]] = field(default_factory=list)

    def save(self) -> Path:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"{self.name}.json"
        data = {**asdict(self), "machine": machine(), "when": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        return path


def rounds() -> int:
    return int(os.environ.get("BENCH_ROUNDS", "3"))


def seconds() -> int:
    return int(os.environ.get("BENCH_SECONDS", "10"))
