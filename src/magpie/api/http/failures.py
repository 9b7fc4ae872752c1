"""Any exception to what the client sees: status, ``{code, message}`` and headers, in one place.

The lean router, the Starlette side (admin API, docs, health) and pages that render an
error for a person all ask ``failure(exc)``:

- a ``MagpieError`` answers with its own status, code and message (``429`` adds ``Retry-After``);
- a storage outage (the database unreachable or not answering) is ``503 SERVICE_UNAVAILABLE``,
  logged at most once a second;
- data the database refuses (a NUL, a number out of its range) came from the request: ``400``;
- Starlette's own routing errors keep their status (``404``, ``405`` with ``Allow``);
- anything else is logged with its traceback and answered ``500 INTERNAL_ERROR``, never a
  plain-text body.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import msgspec
from starlette.exceptions import HTTPException

from magpie.errors import MagpieError, RateLimited, ServiceUnavailable, StorageRefused
from magpie.logs import Throttle, request_fields
from magpie.store.db import DATA_ERRORS, OPERATIONAL_ERRORS

log = logging.getLogger("magpie.http")
_outage_log = Throttle(interval=1.0)

_encode = msgspec.json.encode
_STARLETTE_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}
INTERNAL_MESSAGE = "An unexpected error occurred; it has been logged"


@dataclass(frozen=True, slots=True)
class Failure:
    """What a client is told about an error.

    >>> failure(RateLimited(retry_after=3)).headers
    ((b'retry-after', b'3'),)
    """

    status: int
    code: str
    message: str
    headers: tuple[tuple[bytes, bytes], ...] = ()
    problems: tuple[tuple[str, str], ...] = ()

    @property
    def body(self) -> bytes:
        """The JSON body every API answers errors with; ``problems`` lists each one when there are several."""
        if not self.problems:
            return _encode({"code": self.code, "message": self.message})
        listed = [{"field": field, "message": message} for field, message in self.problems]
        return _encode({"code": self.code, "message": self.message, "problems": listed})


def failure(exc: BaseException) -> Failure:
    """Map ``exc`` to the answer; unexpected errors are logged here, once."""
    if isinstance(exc, MagpieError):
        headers: tuple[tuple[bytes, bytes], ...] = ()
        if isinstance(exc, RateLimited):
            headers = ((b"retry-after", str(exc.retry_after).encode()),)
        return Failure(exc.status, exc.code, exc.message, headers, exc.every_problem)
    if isinstance(exc, OPERATIONAL_ERRORS):
        suppressed = _outage_log.ready()
        if suppressed is not None:
            log.error("storage unavailable: %s (%d more since the last line)", type(exc).__name__, suppressed)
        return failure(ServiceUnavailable())
    if isinstance(exc, DATA_ERRORS):
        # What the database cannot hold or compare (a NUL, a number out of range) came from the request.
        return failure(StorageRefused())
    if isinstance(exc, HTTPException):
        extra = tuple((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (exc.headers or {}).items())
        code = _STARLETTE_CODES.get(exc.status_code, "INVALID_REQUEST")
        return Failure(exc.status_code, code, str(exc.detail), extra)
    where = request_fields()
    message = f"unhandled error in {where['method']} {where['path']}" if where else "unhandled error"
    log.error(message, exc_info=exc, extra={"fields": where})
    return Failure(500, "INTERNAL_ERROR", INTERNAL_MESSAGE)
