"""Structured (JSON-lines) logging that never carries secrets or phone numbers."""

from __future__ import annotations

import json
import logging
import re
import sys
import time

# Anything that looks like a magpie key/token, a bearer credential or a phone number is masked,
# whatever the message that carries it.
_SECRETS = re.compile(r"(mg[pa]_[A-Za-z0-9_-]{8,}|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,}|\+?\d[\d -]{8,}\d)")


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


def configure_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("magpie")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
