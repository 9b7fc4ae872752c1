"""Process commands: ``serve``, ``worker``, ``db upgrade``, ``backup`` and ``restore``."""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import socket
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import magpie
from magpie.cli._common import LOOKUP_ORDER, UsageError, data_location, emit, location, open_db
from magpie.config import Settings
from magpie.errors import NotFound
from magpie.store import accounts
from magpie.store.crypto import BadSecretKey, Cipher, parse_key
from magpie.store.db import PRIVATE_FILE_MODE, Database, private_dir, private_file

log = logging.getLogger("magpie.server")

RECOVERY_HINT = "lost them? `magpie key create --env ENV` makes a new API key, `magpie admin-token` a new admin token"


def bootstrap(db: Database) -> dict[str, Any] | None:
    """On an empty store: a development environment, a key, an admin token and a demo campaign."""
    from magpie.store import campaigns

    if not accounts.is_empty(db):
        return None
    env = accounts.create_environment(db, name="development")
    key, _ = accounts.create_api_key(db, environment=env.name, name="bootstrap")
    token = accounts.create_admin_token(db, name="bootstrap")
    result: dict[str, Any] = {"environment": env.name, "apiKey": key, "adminToken": token}
    demo = campaigns.bootstrap_demo(db, env_id=env.id)
    if demo is not None:
        result["demoCampaignKey"] = demo
    return result


def say(facts: dict[str, Any], text: str, *, json_lines: bool) -> None:
    """A line for a person on stdout or, with ``--json``, the facts as one JSON line on stdout and the
    person's line on stderr: the standard output of ``--json`` is JSON lines and nothing else."""
    if json_lines:
        print(json.dumps(facts, ensure_ascii=False), flush=True)
        print(text, file=sys.stderr, flush=True)
    else:
        print(text, flush=True)


def announce(settings: Settings, *, role: str, url: str | None = None, json_lines: bool = False) -> None:
    """The start line for a person (stdout) and the same facts as one JSON log record."""
    engine = "sqlite" if settings.is_sqlite else "postgresql"
    facts: dict[str, Any] = {
        "event": "started",
        "version": magpie.__version__,
        "role": role,
        "engine": engine,
        "data": data_location(settings),
        "pid": os.getpid(),
    }
    where = f"listening on {url}" if url else "started"
    if url:
        facts["url"] = url
    say(
        facts, f"magpie {magpie.__version__} {where} · role {role} · {engine} at {facts['data']}", json_lines=json_lines
    )
    log.info("magpie %s %s", where, role, extra={"fields": facts})


def _roles(settings: Settings) -> str:
    return f"api+dispatch ({settings.workers} worker{'s' * (settings.workers != 1)})" if settings.workers else "api"


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    from magpie.logs import configure_logging

    configure_logging(settings.log_level)
    sock = listening_socket(settings)  # first: a port in use fails before anything is created
    try:
        _serve(args, settings, sock)
    finally:
        sock.close()


def check_secret_key(settings: Settings) -> None:
    """Load (or create) the secret key now, so that a bad one ends the start with one line, not a traceback."""
    Cipher.load(secret_key=settings.secret_key, data_dir=settings.data_dir)


def _serve(args: argparse.Namespace, settings: Settings, sock: socket.socket) -> None:
    from magpie.app import create_app

    check_secret_key(settings)
    db = open_db(settings, create=True)
    if settings.bootstrap:
        created = bootstrap(db)
        if created is not None:
            say(
                {"event": "created", **created},
                "magpie: created a new store with a ready demo environment.\n"
                f"  environment:  {created['environment']}\n"
                f"  API key:      {created['apiKey']}\n"
                f"  admin token:  {created['adminToken']}\n"
                f"  (shown once: magpie keeps only their hashes; {RECOVERY_HINT})",
                json_lines=args.json,
            )
    serve_app(create_app(settings), settings, sock=sock, role=_roles(settings), json_lines=args.json)


def listening_socket(settings: Settings) -> socket.socket:
    """The listening socket, opened here so that ``SO_REUSEPORT`` can be set when asked for."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if settings.reuse_port:
        # Several `magpie serve` processes on one port, balanced by the kernel.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}") from None
    sock.listen(4096)
    sock.set_inheritable(True)
    return sock


def serve_app(app: Any, settings: Settings, *, sock: socket.socket, role: str, json_lines: bool = False) -> None:
    """Run ``app`` under uvicorn on ``sock``, with the start and shutdown lines."""
    import uvicorn

    from magpie.api.access_log import AccessLog

    host, port = sock.getsockname()[:2]
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    asgi = AccessLog(app) if settings.access_log else app
    from magpie.api.http.protocol import server_options

    config = uvicorn.Config(
        asgi,
        **server_options(settings),
        access_log=False,
        log_level="warning",
        lifespan="on",
        backlog=4096,
    )

    class Server(uvicorn.Server):
        started_at = 0.0

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                self.started_at = time.monotonic()
                announce(settings, role=role, url=url, json_lines=json_lines)

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            drained = {"connections": len(self.server_state.connections), "requests": len(self.server_state.tasks)}
            await super().shutdown(sockets=sockets)
            # Said here: after a signal, uvicorn re-raises it once serving ends, and the process exits.
            say_stopped(role=role, uptime=time.monotonic() - self.started_at, drained=drained, json_lines=json_lines)

    # The socket object itself, not its descriptor: uvicorn then knows it is TCP, and the loop sets
    # TCP_NODELAY on each accepted connection (a bare descriptor is taken for a Unix socket, and small
    # responses wait ~40 ms for Nagle's algorithm and delayed ACKs).
    Server(config).run(sockets=[sock])


def say_stopped(*, role: str, uptime: float, drained: dict[str, int], json_lines: bool = False) -> None:
    facts = {"event": "stopped", "role": role, "uptimeSeconds": round(uptime, 1), **drained}
    parts = [
        f"{n} open connection{'s' * (n != 1)}" if k == "connections" else f"{n} request{'s' * (n != 1)} in flight"
        for k, n in drained.items()
    ]
    done = f"drained {', '.join(parts)}; " if parts else ""
    say(
        facts,
        f"magpie stopped after {uptime:.0f} s: {done}pending writes committed, in-flight dispatch work finished",
        json_lines=json_lines,
    )
    log.info("magpie stopped", extra={"fields": facts})


def cmd_worker(args: argparse.Namespace, settings: Settings) -> None:
    from magpie.dispatch.worker import run_worker
    from magpie.logs import configure_logging

    configure_logging(settings.log_level)
    check_secret_key(settings)
    open_db(settings, create=True)
    role = f"dispatch ({max(1, settings.workers)} worker{'s' * (max(1, settings.workers) != 1)})"
    announce(settings, role=role, json_lines=args.json)
    started = time.monotonic()
    run_worker(settings)
    say_stopped(role=role, uptime=time.monotonic() - started, drained={}, json_lines=args.json)


def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> None:
    db = open_db(settings, create=True)
    emit(args, {"revision": db.current_revision()}, f"schema at revision {db.current_revision()}")


# -- backup and restore ----------------------------------------------------------------------------------

_MANIFEST = "magpie-backup.json"


def cmd_backup(args: argparse.Namespace, settings: Settings) -> None:
    """A consistent copy of a live SQLite store, with the key that decrypts its encrypted fields."""
    if not settings.is_sqlite:
        raise UsageError(
            "magpie backup copies SQLite stores; for PostgreSQL use pg_dump and keep MAGPIE_SECRET_KEY "
            "(docs/operations.md#backups)"
        )
    source = settings.data_dir.resolve() / "magpie.db"
    if not source.exists():
        raise NotFound(
            f"no magpie store at {location(settings)}; looked in {LOOKUP_ORDER}: "
            "pass --data-dir (or MAGPIE_DATA_DIR) of the store to back up"
        )
    target = Path(args.to)
    if target.exists() and any(target.iterdir()):
        raise UsageError(f"{target}: exists and is not empty; back up into a new directory")
    private_dir(target)
    cipher = Cipher.load(secret_key=settings.secret_key, data_dir=settings.data_dir)
    started = time.time()
    private_file(target / "magpie.db")
    src = sqlite3.connect(str(source), timeout=30.0)
    dst = sqlite3.connect(str(target / "magpie.db"))
    try:
        # One step (pages=-1): the copy is the snapshot of a single read transaction, so it holds every
        # write committed before it began, whatever the server commits meanwhile.
        src.backup(dst, pages=-1)
        check = dst.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        dst.close()
        src.close()
    if check != "ok":
        raise UsageError(f"the copy failed its integrity check: {check}")
    key_path = target / "secret.key"
    _write_private(key_path, base64.urlsafe_b64encode(cipher.key))
    manifest = {
        "version": magpie.__version__,
        "revision": Database(f"sqlite:///{target / 'magpie.db'}").current_revision(),
        "startedAt": int(started * 1000),
        "seconds": round(time.time() - started, 3),
        "bytes": (target / "magpie.db").stat().st_size,
    }
    _write_private(target / _MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    emit(
        args,
        {"backup": str(target), **manifest},
        f"backed up {source} to {target} ({manifest['bytes']} bytes, schema {manifest['revision']}, "
        f"{manifest['seconds']} s)\n"
        f"  {key_path} decrypts the stored phone numbers: keep the backup as secret as the store",
    )


def _write_private(path: Path, data: bytes) -> None:
    """A new file (never an existing one, nor through a link) readable by magpie's user only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _backup_member(source: Path, name: str) -> Path:
    """A file of a backup, refused when it is missing or a link (a backup holds its own files)."""
    path = source / name
    if path.is_symlink():
        raise UsageError(f"{path}: is a symbolic link; a backup holds its own files, restore refuses links")
    if not path.is_file():
        raise UsageError(f"{source}: not a magpie backup (no {name})")
    return path


def cmd_restore(args: argparse.Namespace, settings: Settings) -> None:
    """Bring a backup back into an empty data directory, after checking the backup and its key."""
    if not settings.is_sqlite:
        raise UsageError("magpie restore restores SQLite backups; for PostgreSQL use pg_restore or psql")
    source = Path(args.source)
    _backup_member(source, _MANIFEST)
    store = _backup_member(source, "magpie.db")
    key_file = _backup_member(source, "secret.key")
    try:
        fd = os.open(key_file, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise UsageError(f"{key_file}: cannot read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        key_text = fh.read(4096)
    try:
        key = parse_key(key_text, where=str(key_file))
        if settings.secret_key and parse_key(settings.secret_key, where="MAGPIE_SECRET_KEY") != key:
            raise UsageError("MAGPIE_SECRET_KEY is set and is not the backup's key: unset it or set it to secret.key")
    except BadSecretKey as exc:
        raise UsageError(str(exc)) from None
    data_dir = settings.data_dir
    if data_dir.exists() and any(data_dir.iterdir()):
        raise UsageError(f"{data_dir}: not empty; restore into a new or empty data directory")
    private_dir(data_dir)
    private_file(data_dir / "magpie.db")
    # Read-only: restoring leaves the backup exactly as it was.
    src = sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True)
    dst = sqlite3.connect(str(data_dir / "magpie.db"))
    try:
        src.backup(dst, pages=-1)
    finally:
        dst.close()
        src.close()
    if settings.secret_key:
        note = "MAGPIE_SECRET_KEY is the backup's key"
    else:
        _write_private(data_dir / "secret.key", base64.urlsafe_b64encode(key))
        note = "secret.key restored beside it"
    db = open_db(settings, create=True)
    emit(
        args,
        {"restored": str(data_dir), "revision": db.current_revision()},
        f"restored {source} into {data_dir} (schema now {db.current_revision()}); {note}",
    )


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    serve = sub.add_parser("serve", parents=[common], help="serve the API, with in-process dispatch workers")
    serve.add_argument("--host", help="address to listen on (default: MAGPIE_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port (default: MAGPIE_PORT or 8080)")
    serve.add_argument("--workers", type=int, help="in-process dispatch workers, 0: API only (default: 1)")
    serve.set_defaults(fn=cmd_serve)

    worker = sub.add_parser("worker", parents=[common], help="run dispatch workers in their own process")
    worker.add_argument("--workers", type=int, help="dispatchers in this process (default: MAGPIE_WORKERS or 1)")
    worker.set_defaults(fn=cmd_worker)

    db = sub.add_parser("db", parents=[common], help="database schema").add_subparsers(dest="db_cmd", required=True)
    db.add_parser("upgrade", parents=[common], help="apply pending migrations").set_defaults(fn=cmd_db_upgrade)

    backup = sub.add_parser(
        "backup", parents=[common], help="copy a live SQLite store and its secret key into a new directory"
    )
    backup.add_argument("--to", required=True, metavar="DIR", help="new or empty directory to write the backup to")
    backup.set_defaults(fn=cmd_backup)
    restore = sub.add_parser("restore", parents=[common], help="restore a backup into an empty data directory")
    restore.add_argument("source", metavar="DIR", help="a directory written by magpie backup")
    restore.set_defaults(fn=cmd_restore)
