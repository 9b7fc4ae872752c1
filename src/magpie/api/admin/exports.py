"""CSV exports, shared by the admin API and the dashboard: a dispatch's recipients (streamed, one
chunk of recipients per read) and a campaign's figures per hour or day.

Cells are written by Python's ``csv`` module. A text cell that a spreadsheet would take for a
formula (starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return) is prefixed with
``'``, so an exported user id like ``=HYPERLINK(…)`` stays text. The file starts with a UTF-8
byte-order mark, so spreadsheet programs read Korean text as UTF-8.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from starlette.responses import Response, StreamingResponse

from magpie.api.http.context import Context
from magpie.store import exports
from magpie.store.db import Connection
from magpie.store.exports import FIGURE_COLUMNS, DispatchHead, RecipientLine
from magpie.store.stats import Totals

BOM = "\ufeff"
_FORMULA = ("=", "+", "-", "@", "\t", "\r")
RECIPIENT_COLUMNS = (
    "index",
    "userId",
    "deviceId",
    "outcome",
    "reason",
    "channel",
    "type",
    "provider",
    "deliveryStatus",
    "errorCode",
    "reportCode",
    "delivered",
    "phoneNumber",
    "attempts",
    "recordedAt",
)


def cell(value: object) -> object:
    """A value as a CSV cell: text that could run as a formula is quoted with a leading ``'``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    return value


def encode(rows: Iterable[Sequence[object]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    for row in rows:
        writer.writerow([cell(v) for v in row])
    return buffer.getvalue().encode("utf-8")


def _time(ms: int | None, zone: ZoneInfo) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, zone).strftime("%Y-%m-%d %H:%M:%S")


def _recipient_row(line: RecipientLine, zone: ZoneInfo) -> tuple[object, ...]:
    return (
        line.idx,
        line.user_id,
        line.device_id,
        line.outcome,
        line.reason,
        line.channel,
        line.kind,
        line.provider,
        line.status,
        line.error_code,
        line.report_code,
        line.delivered,
        line.phone,
        line.attempts,
        _time(line.at, zone),
    )


def _headers(filename: str) -> dict[str, str]:
    return {
        "content-disposition": f'attachment; filename="{filename}"',
        "cache-control": "no-store",
        "x-content-type-options": "nosniff",
    }


async def recipient_chunks(
    ctx: Context, *, head: DispatchHead, env_id: int, outcome: str | None, timezone: str, chunk: int = exports.CHUNK
) -> AsyncIterator[bytes]:
    """The CSV of a dispatch's recipients, one encoded chunk of at most ``chunk`` recipients at a time."""
    zone = ZoneInfo(timezone)
    yield (BOM + ",".join(RECIPIENT_COLUMNS) + "\r\n").encode("utf-8")

    def read_after(start: int) -> Callable[[Connection], tuple[list[RecipientLine], int | None]]:
        return lambda conn: exports.recipient_chunk(
            conn, ctx.db, ctx.cipher, head=head, env_id=env_id, after=start, outcome=outcome, limit=chunk
        )

    after: int | None = -1
    while after is not None:
        lines, after = await ctx.read(read_after(after))
        if lines:
            yield encode(_recipient_row(line, zone) for line in lines)
    rest = await ctx.read(lambda conn: list(exports.unprepared(conn, ctx.db, head=head, outcome=outcome)))
    if rest:
        yield encode(_recipient_row(line, zone) for line in rest)


async def recipients_csv(
    ctx: Context, *, env_id: int, dispatch_id: str, outcome: str | None, timezone: str
) -> StreamingResponse:
    """A streamed CSV of a dispatch's recipients (of one outcome, when given)."""
    wanted = exports.check_outcome(outcome)
    head = await ctx.read(lambda conn: exports.dispatch_head(conn, ctx.db, env_id=env_id, dispatch_id=dispatch_id))
    suffix = f"-{wanted.lower()}" if wanted else ""
    return StreamingResponse(
        recipient_chunks(ctx, head=head, env_id=env_id, outcome=wanted, timezone=timezone),
        media_type="text/csv; charset=utf-8",
        headers=_headers(f"dispatch-{dispatch_id}{suffix}.csv"),
    )


FIGURE_HEADER = ("time", *FIGURE_COLUMNS)


def figure_values(t: Totals) -> tuple[int, ...]:
    return (t.requested, t.sent, t.failed_total, t.unknown, t.excluded_total, t.unique_clicks, t.clicks)


def figures_csv(rows: list[tuple[str, Totals]], *, filename: str) -> Response:
    """A campaign's figures, one row per hour or day."""
    body = BOM.encode("utf-8") + encode([FIGURE_HEADER, *((slot, *figure_values(t)) for slot, t in rows)])
    return Response(body, media_type="text/csv; charset=utf-8", headers=_headers(filename))
