"""Shared benchmark plumbing: servers as processes, wrk runs, peak RSS, medians, results files.

Every figure is a ratio against a baseline measured in the same invocation, alternating
baseline and magpie runs so that drift on a shared machine hits both alike.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
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


# -- CPU time per process, from /proc -----------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads, live or exited) and of its reaped children."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    # After the command name: state is field 3, so utime..cstime (14..17) sit at 11..14 here.
    return sum(int(v) for v in fields[11:15]) / _TICK


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, grandchildren...), from /proc/<pid>/task/*/children."""
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            found.extend(kids)
            todo.extend(kids)
    return found


def machine_cpu_seconds() -> float:
    """CPU time spent by the whole machine (every core, every process) since boot, from /proc/stat."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()
    # user nice system idle iowait irq softirq steal: busy = all but idle and iowait.
    values = [int(v) for v in first[1:9]]
    return (sum(values) - values[3] - values[4]) / _TICK


PidGroups = dict[str, list[int]]


@dataclass
class CpuMeter:
    """CPU seconds per group of processes over one run: read from /proc before and after it.

    ``groups`` is called at both ends (processes can appear during the run, e.g. a database
    backend for a new connection): a process seen only at the end counts whole. The load
    generator is a child of this process that exits within the run, so its time is the change
    in ``RUSAGE_CHILDREN``.
    """

    groups: Any  # Callable[[], PidGroups]
    _start: dict[int, float] = field(default_factory=dict)
    _children: float = 0.0
    _machine: float = 0.0
    _wall: float = 0.0
    seconds: dict[str, float] = field(default_factory=dict)

    @staticmethod
    def _children_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    def __enter__(self) -> CpuMeter:
        self._start = {pid: cpu_seconds(pid) for pids in self.groups().values() for pid in pids}
        self._children = self._children_cpu()
        self._machine = machine_cpu_seconds()
        self._wall = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.monotonic() - self._wall
        machine_busy = machine_cpu_seconds() - self._machine
        load = self._children_cpu() - self._children
        seconds: dict[str, float] = {}
        for name, pids in self.groups().items():
            seconds[name] = sum(max(0.0, cpu_seconds(pid) - self._start.get(pid, 0.0)) for pid in pids)
        seconds["wrk"] = load
        ours = sum(seconds.values())
        seconds["other"] = max(0.0, machine_busy - ours)  # everyone else on the machine meanwhile
        seconds["wall"] = wall
        self.seconds = seconds

    def per_request_us(self, requests: int) -> dict[str, float]:
        """Microseconds of CPU per request for each group, plus ``wall`` and ``other`` for context."""
        n = max(1, requests)
        return {name: round(value * 1e6 / n, 1) for name, value in self.seconds.items() if name != "wall"}


def postgres_backends(database: str, admin_url: str) -> list[int]:
    """PIDs of the PostgreSQL backends connected to ``database`` (children of the postmaster)."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (database,)
        ).fetchall()
    return [int(r[0]) for r in rows]


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

    def pids(self) -> list[int]:
        """This process and every live process below it."""
        return [self.proc.pid, *descendants(self.proc.pid)]

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
