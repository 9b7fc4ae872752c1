"""What Hackle's SDKs call: the workspace document, event batches, and the HTTP track call.

An SDK pointed at magpie (``sdk_url`` and ``event_url``) downloads
``GET /api/v2/workspaces/{sdkKey}/config`` every few seconds with ``If-Modified-Since`` and
posts ``{exposureEvents, trackEvents, remoteConfigEvents}`` to ``POST /api/v2/events``. Both
take the environment's API key, here named ``X-HACKLE-SDK-KEY``.

A batch is decoded and validated whole before anything is written: one invalid event is a
400 for the batch. It is then one writer job, sharing the group commit with property updates.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from email.utils import formatdate, parsedate_to_datetime
from typing import Annotated, Any

import msgspec

from magpie.api.hackle import views
from magpie.api.http.asgi import SUCCESS, Request, Response, encode
from magpie.api.http.auth import API_KEY_HEADER, SDK_KEY_HEADER
from magpie.api.http.context import Context
from magpie.domain.bodies import decode_json
from magpie.domain.events import (
    DEVICE_ID,
    HACKLE_ID,
    MAX_EVENT_KEY_LENGTH,
    MAX_INSERT_ID_LENGTH,
    USER_ID,
    Event,
    check_event_key,
    check_insert_id,
    check_properties,
    check_value,
    event_ids,
    system_effect,
)
from magpie.domain.identity import clean_id
from magpie.errors import InvalidApiKey, InvalidRequest
from magpie.store import events as store

MAX_BATCH_EVENTS = 1000
# A workspace change this recent may still be joined by one committed in the same second:
# leave Last-Modified out until it settles, so no SDK caches a list that is about to grow.
_SETTLE_MS = 5_000
_CONFIG_PATH = "/api/v2/workspaces/{sdkKey}/config"

InsertId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_INSERT_ID_LENGTH)]
# Epoch milliseconds, within what both engines' BIGINT and JavaScript's numbers hold exactly.
Millis = Annotated[int, msgspec.Meta(ge=0, le=2**53)]


class _SdkEvent(msgspec.Struct, kw_only=True):
    insertId: InsertId
    timestamp: Millis
    userId: str | None = None
    identifiers: dict[str, str] = {}
    userProperties: dict[str, Any] = {}
    hackleProperties: dict[str, Any] = {}
    properties: dict[str, Any] | None = None


class _TrackEvent(_SdkEvent, kw_only=True):
    eventTypeKey: Annotated[str, msgspec.Meta(max_length=MAX_EVENT_KEY_LENGTH)]
    eventTypeId: int | None = None
    value: float | None = None


class _ExposureEvent(_SdkEvent, kw_only=True):
    experimentId: int | None = None
    experimentKey: int | None = None
    experimentType: str | None = None
    experimentVersion: int | None = None
    variationId: int | None = None
    variationKey: str | None = None
    decisionReason: str | None = None


class _RemoteConfigEvent(_SdkEvent, kw_only=True):
    parameterId: int | None = None
    parameterKey: str | None = None
    parameterType: str | None = None
    valueId: int | None = None
    decisionReason: str | None = None


class _Batch(msgspec.Struct):
    exposureEvents: list[_ExposureEvent] = []
    trackEvents: list[_TrackEvent] = []
    remoteConfigEvents: list[_RemoteConfigEvent] = []


class _TrackUser(msgspec.Struct):
    id: str | None = None
    userId: str | None = None
    deviceId: str | None = None
    identifiers: dict[str, str] = {}
    properties: dict[str, Any] = {}


class _TrackBody(msgspec.Struct):
    key: Annotated[str, msgspec.Meta(max_length=MAX_EVENT_KEY_LENGTH)]
    value: float | None = None
    properties: dict[str, Any] = {}


class _TrackRequest(msgspec.Struct):
    event: _TrackBody
    user: _TrackUser
    insertId: InsertId | None = None
    timestamp: Millis | None = None


_batch_decoder = msgspec.json.Decoder(_Batch)
_track_decoder = msgspec.json.Decoder(_TrackRequest)


def _event(
    *,
    where: str,
    insert_id: str,
    key: str,
    timestamp: int,
    identifiers: Mapping[str, str],
    fallback_user_id: str | None,
    value: float | None,
    properties: Mapping[str, Any],
    context: Mapping[str, Any],
) -> Event:
    check_event_key(key, where=where)
    check_insert_id(insert_id, where=where)
    check_value(value, where=where)
    check_properties(properties, where=where)
    user_id, device_id = event_ids(identifiers, fallback_user_id=fallback_user_id, where=where)
    effect, stored = system_effect(key, properties, device_id=device_id, where=where)
    return Event(
        insert_id=insert_id,
        key=key,
        timestamp=timestamp,
        user_id=user_id,
        device_id=device_id,
        value=value,
        properties=encode(stored).decode(),
        identifiers=encode(identifiers).decode(),
        context=encode({k: v for k, v in context.items() if v}).decode(),
        effect=effect,
        where=where,
    )


def _sdk_context(item: _SdkEvent) -> dict[str, Any]:
    return {"userProperties": item.userProperties, "hackleProperties": item.hackleProperties}


def parse_batch(body: bytes) -> list[Event]:
    """Every event of an SDK batch, validated, in event-time order, each insertId once."""
    batch: _Batch = decode_json(body, _batch_decoder)
    total = len(batch.exposureEvents) + len(batch.trackEvents) + len(batch.remoteConfigEvents)
    if total > MAX_BATCH_EVENTS:
        raise InvalidRequest(f"a batch may hold at most {MAX_BATCH_EVENTS} events, got {total}")
    parsed: list[Event] = []
    for index, exposure in enumerate(batch.exposureEvents):
        details = {
            "$experiment_id": exposure.experimentId,
            "$experiment_key": exposure.experimentKey,
            "$experiment_type": exposure.experimentType,
            "$experiment_version": exposure.experimentVersion,
            "$variation_id": exposure.variationId,
            "$variation_key": exposure.variationKey,
            "$decision_reason": exposure.decisionReason,
        }
        parsed.append(_sdk_event(f"exposureEvents[{index}]", exposure, "$exposure", None, details))
    for index, track in enumerate(batch.trackEvents):
        parsed.append(_sdk_event(f"trackEvents[{index}]", track, track.eventTypeKey, track.value, {}))
    for index, remote in enumerate(batch.remoteConfigEvents):
        details = {
            "$parameter_id": remote.parameterId,
            "$parameter_key": remote.parameterKey,
            "$parameter_type": remote.parameterType,
            "$value_id": remote.valueId,
            "$decision_reason": remote.decisionReason,
        }
        parsed.append(_sdk_event(f"remoteConfigEvents[{index}]", remote, "$remote_config", None, details))
    # The three lists interleave in time; a stable sort keeps the SDK's own order among events
    # of the same millisecond (a property update and the track right after it).
    parsed.sort(key=lambda e: e.timestamp)
    return _first_of_each(parsed)


def _sdk_event(where: str, item: _SdkEvent, key: str, value: float | None, details: dict[str, Any]) -> Event:
    properties = item.properties or {}
    if details:
        properties = {**{k: v for k, v in details.items() if v is not None}, **properties}
    return _event(
        where=where,
        insert_id=item.insertId,
        key=key,
        timestamp=item.timestamp,
        identifiers=item.identifiers,
        fallback_user_id=item.userId,
        value=value,
        properties=properties,
        context=_sdk_context(item),
    )


def _first_of_each(events: list[Event]) -> list[Event]:
    seen: set[str] = set()
    unique: list[Event] = []
    for event in events:
        if event.insert_id not in seen:
            seen.add(event.insert_id)
            unique.append(event)
    return unique


def parse_track(body: bytes, *, now_ms: int) -> Event:
    """The one event of a ``POST /v1/track`` body."""
    request: _TrackRequest = decode_json(body, _track_decoder)
    user = request.user
    identifiers = dict(user.identifiers)
    for name, value, field in (
        (HACKLE_ID, user.id, "user.id"),
        (USER_ID, user.userId, "user.userId"),
        (DEVICE_ID, user.deviceId, "user.deviceId"),
    ):
        cleaned = clean_id(value, field=field)
        if cleaned is not None:
            identifiers[name] = cleaned
    return _event(
        where="event",
        insert_id=request.insertId or str(uuid.uuid4()),
        key=request.event.key,
        timestamp=request.timestamp if request.timestamp is not None else now_ms,
        identifiers=identifiers,
        fallback_user_id=None,
        value=request.event.value,
        properties=request.event.properties,
        context={"userProperties": user.properties},
    )


async def _store(ctx: Context, key_hash: str, env_id: int, events: list[Event]) -> None:
    if events:
        await ctx.writer.submit(store.StoreEvents(key_hash=key_hash, env_id=env_id, events=events))


async def ingest_events(ctx: Context, request: Request) -> Response:
    """Accept a Hackle SDK event batch; each insertId is stored and applied once."""
    key_hash, env_id = await ctx.auth.authenticate(request.headers, sdk=True)
    await _store(ctx, key_hash, env_id, parse_batch(request.body))
    return 200, SUCCESS


async def track(ctx: Context, request: Request) -> Response:
    """Track one event for a user, as Hackle's HTTP tracking call does."""
    key_hash, env_id = await ctx.auth.authenticate(request.headers, sdk=True)
    event = parse_track(request.body, now_ms=int(ctx.clock() * 1000))
    await _store(ctx, key_hash, env_id, [event])
    return 200, SUCCESS


def _not_modified_since(header: str | None, changed_s: int) -> bool:
    if not header:
        return False
    try:
        since = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return False
    return changed_s <= int(since.timestamp())


async def workspace_config(ctx: Context, request: Request) -> Response:
    """Download the workspace document an SDK initialises from (event types; no experiments)."""
    # The SDK key is part of this path: keep it out of metrics and logs, which label by path.
    request.scope["path"] = _CONFIG_PATH
    path_key = request.path_params["sdk_key"]
    raw = request.headers.get(SDK_KEY_HEADER) or request.headers.get(API_KEY_HEADER)
    if raw is not None and raw.decode("latin-1").strip() not in ("", path_key):
        raise InvalidApiKey("the SDK key in the header is not the one in the path")
    _, env_id = await ctx.auth.check(path_key)
    types, changed_ms = await ctx.read(lambda conn: store.event_types(conn, ctx.db, env_id=env_id))
    changed_s = changed_ms // 1000
    headers: list[tuple[bytes, bytes]] = []
    if int(ctx.clock() * 1000) - changed_ms >= _SETTLE_MS:
        if _not_modified_since(request.header(b"if-modified-since"), changed_s):
            return 304, b""
        headers.append((b"last-modified", formatdate(changed_s, usegmt=True).encode()))
    document = {
        "workspace": {"id": 1, "environment": {"id": env_id}},
        "experiments": [],
        "featureFlags": [],
        "buckets": [],
        "events": views.rows(types),
        "segments": [],
        "containers": [],
        "parameterConfigurations": [],
        "remoteConfigParameters": [],
        "inAppMessages": [],
    }
    return 200, encode(document), headers
