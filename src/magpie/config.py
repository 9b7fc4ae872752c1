"""Settings, read once from ``MAGPIE_*`` environment variables and passed down.

``Settings`` is the one table of what is configurable: each field carries its environment
variable, default and description, and both ``Settings.from_env`` and the generated
``docs/configuration.md`` (``make docs``) are read from it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import typing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def setting(default: T, env: str, description: str) -> T:
    """One row of the table: the default, the ``MAGPIE_*`` variable and what it means."""
    return dataclasses.field(default=default, metadata={"env": env, "description": description})


def default_data_dir() -> Path:
    """The data directory when neither ``--data-dir`` nor ``MAGPIE_DATA_DIR`` names one.

    The same wherever a command runs: ``$XDG_DATA_HOME/magpie``, or ``~/.local/share/magpie``.

    >>> default_data_dir().name
    'magpie'
    """
    xdg = os.environ.get("XDG_DATA_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "magpie"


DEFAULT_DATA_DIR_SHOWN = "`$XDG_DATA_HOME/magpie`, else `~/.local/share/magpie`"


@dataclass(frozen=True)
class Settings:
    """Everything configurable about one magpie process.

    >>> Settings(data_dir=Path("/tmp/m")).database_url
    'sqlite:////tmp/m/magpie.db'
    """

    data_dir: Path = dataclasses.field(
        default_factory=default_data_dir,
        metadata={
            "env": "MAGPIE_DATA_DIR",
            "description": "Directory of the SQLite database and of the generated secret key (`secret.key`). "
            "Every command finds it the same way, wherever it runs: `--data-dir`, then this variable, "
            "then the default (never the current directory).",
            "shown": DEFAULT_DATA_DIR_SHOWN,
        },
    )
    database_url_override: str | None = setting(
        None,
        "MAGPIE_DATABASE_URL",
        "`postgresql://user:password@host:5432/db` to use PostgreSQL; unset: SQLite in the data directory.",
    )
    host: str = setting("127.0.0.1", "MAGPIE_HOST", "Address `magpie serve` listens on (`0.0.0.0`: every interface).")
    port: int = setting(8080, "MAGPIE_PORT", "TCP port `magpie serve` listens on.")
    reuse_port: bool = setting(
        False,
        "MAGPIE_REUSE_PORT",
        "Open the port with `SO_REUSEPORT`, so that several `magpie serve` processes share it (the kernel "
        "balances connections between them).",
    )
    max_body_bytes: int = setting(
        1 << 20,
        "MAGPIE_MAX_BODY_BYTES",
        "Largest request body accepted on every route (the dashboard's forms: 64 KiB at most), enforced while "
        "reading; larger bodies answer `413 PAYLOAD_TOO_LARGE`.",
    )
    batch_max: int = setting(
        512, "MAGPIE_BATCH_MAX", "Group commit: at most this many requests share one transaction and one fsync."
    )
    rate_limit_per_key: float = setting(
        0.0, "MAGPIE_RATE_LIMIT", "Requests per second allowed per API key (`429 RATE_LIMITED` beyond); 0: no limit."
    )
    rate_limit_burst: int = setting(
        0, "MAGPIE_RATE_LIMIT_BURST", "Requests a key may send at once above the rate; 0: the rate, rounded up."
    )
    key_cache_seconds: float = setting(
        5.0,
        "MAGPIE_KEY_CACHE_SECONDS",
        "A revoked API key is refused by every endpoint of every process within this many seconds.",
    )
    header_timeout_seconds: float = setting(
        10.0, "MAGPIE_HEADER_TIMEOUT", "Seconds for a request's head to arrive; then `408 REQUEST_TIMEOUT`."
    )
    body_timeout_seconds: float = setting(
        30.0, "MAGPIE_BODY_TIMEOUT", "Seconds for a request's body to arrive after its head; then `408`."
    )
    max_connections: int = setting(
        2048,
        "MAGPIE_MAX_CONNECTIONS",
        "Connections served at once per process; one more is answered `503 SERVICE_UNAVAILABLE` and closed.",
    )
    auth_failures_per_second: float = setting(
        5.0,
        "MAGPIE_AUTH_FAILURES_PER_SECOND",
        "Failed authentications per client address per second (burst 4x) before `429 RATE_LIMITED`; 0: off.",
    )
    max_item_attempts: int = setting(
        3,
        "MAGPIE_MAX_ITEM_ATTEMPTS",
        "Attempts at a dispatch work item failing for its own reason; then its open recipients end `FAILED` "
        "(`PROCESSING_ERROR`).",
    )
    workers: int = setting(
        1, "MAGPIE_WORKERS", "Dispatch workers inside each `magpie serve` (0: the API only, run `magpie worker`)."
    )
    worker_concurrency: int = setting(
        64, "MAGPIE_WORKER_CONCURRENCY", "Deliveries one dispatch worker has in flight at once."
    )
    worker_recipients: int = setting(
        4000,
        "MAGPIE_WORKER_RECIPIENTS",
        "Recipients one dispatch worker holds at once, summed over the work items it has claimed (it always "
        "takes one item, however large): bounds its memory when broadcasts hand it dispatches of 1,000. "
        "Triggers (at most 50 users each) stay under it at the default concurrency.",
    )
    lease_seconds: float = setting(
        30.0,
        "MAGPIE_LEASE_SECONDS",
        "How long a worker holds claimed work; work of a worker that died is taken over after this.",
    )
    poll_interval: float = setting(
        0.2, "MAGPIE_POLL_INTERVAL", "Seconds between a worker's looks for due work when nothing woke it."
    )
    max_delivery_attempts: int = setting(
        6, "MAGPIE_MAX_DELIVERY_ATTEMPTS", "Attempts per delivery before it ends `FAILED` (retryable errors only)."
    )
    retry_base_seconds: float = setting(
        0.5, "MAGPIE_RETRY_BASE_SECONDS", "First retry delay of a delivery; doubles per attempt, with jitter."
    )
    retry_max_seconds: float = setting(60.0, "MAGPIE_RETRY_MAX_SECONDS", "Longest delay between two attempts.")
    provider_timeout_seconds: float = setting(
        10.0, "MAGPIE_PROVIDER_TIMEOUT", "Timeout of one call to FCM, APNs or a webhook, in seconds."
    )
    report_poll_seconds: float = setting(
        60.0,
        "MAGPIE_REPORT_POLL_SECONDS",
        "Seconds between two polls of NHN Cloud for the final results of accepted Kakao and SMS messages.",
    )
    event_retention_days: int = setting(
        365, "MAGPIE_EVENT_RETENTION_DAYS", "Stored events are deleted this many days after receipt; 0: kept forever."
    )
    event_purge_interval_seconds: float = setting(
        3600.0, "MAGPIE_EVENT_PURGE_INTERVAL", "Seconds between two purges of expired events by each `magpie serve`."
    )
    secret_key: str | None = setting(
        None,
        "MAGPIE_SECRET_KEY",
        "Base64 of 32 bytes encrypting phone numbers (AES-GCM). Unset: read from (or generated "
        "into) `secret.key` in the data directory. Every process sharing a PostgreSQL database needs the same key.",
    )
    log_level: str = setting("info", "MAGPIE_LOG_LEVEL", "`debug`, `info`, `warning` or `error`.")
    access_log: bool = setting(
        False,
        "MAGPIE_ACCESS_LOG",
        "Log one JSON record per request: method, route template, status, duration and environment "
        "(never the key, a token or the body).",
    )
    bootstrap: bool = setting(
        True,
        "MAGPIE_BOOTSTRAP",
        "On the first start with an empty store, create a `development` environment, an API key, an admin "
        "token and a demo campaign, and print the key and token once.",
    )
    writer: str = setting(
        "process",
        "MAGPIE_WRITER",
        "Where the group-commit writer runs: `process` (a child process, so that database work does not "
        "hold the event loop's interpreter lock) or `thread` (a thread of this process).",
    )
    freeze_gc: bool = setting(
        True,
        "MAGPIE_FREEZE_GC",
        "After start-up, move what start-up allocated out of the garbage collector's sight (shorter collections "
        "on the hot path). A program that builds many apps in one process should turn it off.",
    )
    fetch_allow_cidrs: str = setting(
        "",
        "MAGPIE_FETCH_ALLOW_CIDRS",
        "Comma-separated address ranges (CIDR) magpie may fetch campaign images (MMS, brand) from although "
        "they are not public, e.g. `10.20.0.0/16` for an internal image server. Unset: public addresses "
        "only; loopback, private, shared, link-local and metadata addresses are refused "
        "([operations.md](operations.md#outbound-fetches)).",
    )

    def __post_init__(self) -> None:
        self.fetch_allow_networks  # noqa: B018 - a bad range fails at start, naming the variable
        if self.broadcast_catch_up not in ("latest", "all", "none"):
            raise ValueError(f"MAGPIE_BROADCAST_CATCH_UP must be latest, all or none, not {self.broadcast_catch_up!r}")

    @property
    def fetch_allow_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """``fetch_allow_cidrs`` as networks; raises ``ValueError`` naming the variable and the bad range."""
        networks = []
        for part in self.fetch_allow_cidrs.split(","):
            if part.strip():
                try:
                    networks.append(ipaddress.ip_network(part.strip()))
                except ValueError as exc:
                    raise ValueError(f"MAGPIE_FETCH_ALLOW_CIDRS: {part.strip()!r} is not a CIDR range: {exc}") from None
        return tuple(networks)

    trusted_proxies: str | None = setting(
        None,
        "MAGPIE_TRUSTED_PROXIES",
        "Comma-separated addresses or CIDR ranges of reverse proxies whose `X-Forwarded-For` and "
        "`X-Forwarded-Proto` are believed (the client address the failed-authentication throttle counts). "
        "Unset: no proxy is trusted and the connection's own address counts.",
    )
    broadcast_poll_seconds: float = setting(
        5.0,
        "MAGPIE_BROADCAST_POLL_SECONDS",
        "Seconds between two looks of each broadcast scheduler for due slots and occurrences to plan "
        "([broadcasts.md](broadcasts.md)). One runs beside the dispatch workers of every `magpie worker` and of "
        "`magpie serve` (unless `MAGPIE_WORKERS=0`); 0: none in this process.",
    )
    broadcast_catch_up: str = setting(
        "latest",
        "MAGPIE_BROADCAST_CATCH_UP",
        "Slots of a schedule missed while no scheduler ran: `latest` sends the newest one, `all` sends each, "
        "`none` sends none; never one older than `MAGPIE_BROADCAST_CATCH_UP_MAX_AGE`.",
    )
    broadcast_catch_up_max_age_seconds: float = setting(
        21600.0,
        "MAGPIE_BROADCAST_CATCH_UP_MAX_AGE",
        "Seconds after its time past which a missed slot is skipped whatever `MAGPIE_BROADCAST_CATCH_UP` says.",
    )
    broadcast_page_size: int = setting(
        1000,
        "MAGPIE_BROADCAST_PAGE_SIZE",
        "Users per dispatch an occurrence's planner writes; it reads ten times as many users per page and "
        "writes their dispatches in one transaction.",
    )

    @property
    def trusted_proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """``MAGPIE_TRUSTED_PROXIES`` parsed; ``ValueError`` naming the variable when it does not parse."""
        if not self.trusted_proxies:
            return ()
        try:
            return tuple(
                ipaddress.ip_network(part.strip(), strict=False)
                for part in self.trusted_proxies.split(",")
                if part.strip()
            )
        except ValueError as exc:
            raise ValueError(
                f"MAGPIE_TRUSTED_PROXIES={self.trusted_proxies!r} is not a list of CIDR ranges: {exc}"
            ) from None

    @property
    def database_url(self) -> str:
        if self.database_url_override:
            return self.database_url_override
        return f"sqlite:///{self.data_dir.resolve() / 'magpie.db'}"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @classmethod
    def from_env(cls, env: typing.Mapping[str, str] | None = None) -> Settings:
        """Read every field from its environment variable; unset or empty variables keep the default.

        Raises ``ValueError`` naming the variable when a value does not parse.
        """
        source = os.environ if env is None else env
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = source.get(f.metadata["env"], "")
            if raw != "":
                values[f.name] = _parse(f.metadata["env"], hints[f.name], raw)
        return cls(**values)


def _parse(name: str, kind: Any, raw: str) -> Any:
    base = next((a for a in typing.get_args(kind) if a is not type(None)), kind)
    try:
        if base is bool:
            if raw.lower() in _TRUE:
                return True
            if raw.lower() in _FALSE:
                return False
            raise ValueError("expected 1/0, true/false, yes/no or on/off")
        return base(raw)
    except ValueError as exc:
        raise ValueError(f"{name}={raw!r} is not a valid {base.__name__}: {exc}") from None


def _shown(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "`1`" if value else "`0`"
    return f"`{value}`"


# Variables read by the test suite and the benchmarks, never by a magpie process.
DEVELOPMENT_VARIABLES: tuple[tuple[str, str, str], ...] = (
    (
        "MAGPIE_TEST_POSTGRES_URL",
        "`postgresql://postgres@127.0.0.1:5432/postgres` if it answers without a password, else a throwaway server",
        "PostgreSQL server the tests create their databases on. Unset, and with no password-less server at "
        "the default address, the test session starts its own with Debian's `initdb`/`pg_ctl`.",
    ),
    ("MAGPIE_REQUIRE_POSTGRES", "(unset)", "`1`: the PostgreSQL tests fail instead of skipping without a server (CI)."),
    ("MAGPIE_REQUIRE_BROWSER", "(unset)", "`1`: the page tests fail instead of skipping without Chromium (CI)."),
    ("MAGPIE_CHROMIUM", "`chromium` on the PATH", "Chromium binary the page tests drive."),
    (
        "MAGPIE_SCREENSHOTS",
        "`build/screenshots`",
        "Directory, relative to the checkout, the page tests save screenshots in (`make screenshots`: `docs/img`).",
    ),
    (
        "MAGPIE_BENCH_POSTGRES_URL",
        "`postgresql://postgres@127.0.0.1:5432/postgres`",
        "PostgreSQL server of the benchmarks (`make bench`).",
    ),
)


def configuration_markdown() -> str:
    """``docs/configuration.md``: every environment variable, its type, default and meaning."""
    hints = typing.get_type_hints(Settings)
    lines = [
        "# Configuration",
        "",
        "<!-- Generated from the table in src/magpie/config.py by `make docs`;",
        "     tests/test_config.py fails when this file is stale. -->",
        "",
        "magpie reads its settings once, at start, from environment variables. Unset or empty variables keep",
        "the default. Booleans accept `1`/`0`, `true`/`false`, `yes`/`no` and `on`/`off`. The command-line",
        "options `--data-dir`, `--database-url`, `--host`, `--port` and `--workers` override the variables of",
        "the same name. Per-environment settings (providers, marketing rules) are not here: see",
        "[operations.md](operations.md#environment-settings).",
        "",
        "| Variable | Type | Default | Meaning |",
        "|---|---|---|---|",
    ]
    for f in dataclasses.fields(Settings):
        kind = hints[f.name]
        base = next((a for a in typing.get_args(kind) if a is not type(None)), kind)
        type_name = {Path: "path", str: "text", int: "integer", float: "number", bool: "boolean"}[base]
        shown = f.metadata.get("shown") or _shown(f.default)
        lines.append(f"| `{f.metadata['env']}` | {type_name} | {shown} | {f.metadata['description']} |")
    lines += ["", "## For tests and benchmarks", "", "| Variable | Default | Meaning |", "|---|---|---|"]
    lines += [f"| `{name}` | {default} | {meaning} |" for name, default, meaning in DEVELOPMENT_VARIABLES]
    return "\n".join(lines) + "\n"
