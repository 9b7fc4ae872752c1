"""Structured (JSON-lines) logging that never carries secrets or phone numbers."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar

# Anything that looks like a magpie key/token, a bearer credential or a phone number is masked,
# whatever the message that carries it.
_SECRETS = re.compile(r"(mg[pa]_[A-Za-z0-9_-]{8,}|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,}|\+?\d[\d -]{8,}\d)")


# The request being answered (method and path, never the query string, which may carry secrets),
# set once per HTTP request so that a record logged deep inside can say which request it was.
_REQUEST: ContextVar[tuple[str, str] | None] = ContextVar("magpie_request", default=None)


def set_request(method: str, path: str) -> None:
    """Name the request the current task is answering (the ASGI app calls this per request)."""
    _REQUEST.set((method, path[:512]))


def request_fields() -> dict[str, str]:
    """``{"method", "path"}`` of the request being answered, or ``{}`` outside a request."""
    current = _REQUEST.get()
    return {} if current is None else {"method": current[0], "path": current[1]}


def redact(text: str) -> str:
    return _SECRETS.sub("[redacted]", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": round(time.time(), 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["error"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str | int = "info") -> None:
    """JSON lines on stderr for the process: magpie's records at ``level``, every library's
    (psycopg, uvicorn, alembic...) from warnings up, in the same format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    own = logging.getLogger("magpie")
    own.handlers[:] = []
    own.setLevel(level.upper() if isinstance(level, str) else level)
    own.propagate = True


class Throttle:
    """At most one log line per ``interval`` seconds for a repeating condition, with a count of the rest.

    During an outage every request fails the same way; one line a second says so as well as
    thousands, and keeps the log readable (and small) when it matters most.

    >>> throttle = Throttle(interval=60.0)
    >>> throttle.ready(), throttle.ready()
    (0, None)
    """

    def __init__(self, *, interval: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._next = 0.0
        self._suppressed = 0
        self._lock = threading.Lock()

    def ready(self) -> int | None:
        """``None`` when this occurrence should not be logged, else how many were suppressed before it."""
        with self._lock:
            now = self.clock()
            if now < self._next:
                self._suppressed += 1
                return None
            self._next = now + self.interval
            suppressed, self._suppressed = self._suppressed, 0
            return suppressed
