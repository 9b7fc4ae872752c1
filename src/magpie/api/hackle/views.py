"""The JSON bodies of read endpoints, from the store's typed rows (the API's camelCase lives here).

The data API, the admin API and the CLI's ``--json`` show the same bodies. A row's fields
become camelCase keys; the values inside its dictionaries (properties, consents) are data
and stay as they are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import cache
from typing import Any

from magpie.store.campaigns import CampaignRow
from magpie.store.dispatches import DispatchRow
from magpie.store.profiles import DeviceView
from magpie.store.stats import CampaignStats


@cache
def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {_camel(f.name): _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list):
        return [_encode(item) for item in value]
    return value


def row(value: object) -> dict[str, Any]:
    """Any row whose body is just its fields."""
    body: dict[str, Any] = _encode(value)
    return body


def rows(values: Sequence[object]) -> list[dict[str, Any]]:
    return [row(value) for value in values]


def campaign(value: CampaignRow) -> dict[str, Any]:
    return {**value.definition, "createdAt": value.created_at, "updatedAt": value.updated_at}


_PHONE_DELIVERY = ("type", "bytes", "delivered", "deliveredAt", "reportCode")


def dispatch(value: DispatchRow) -> dict[str, Any]:
    body: dict[str, Any] = _encode(value)
    if value.recipients is None:
        del body["recipients"]
    elif value.channel == "push":
        # Type, size and gateway reports belong to Kakao and SMS deliveries.
        for recipient in body["recipients"]:
            for delivery in recipient["deliveries"]:
                for key in _PHONE_DELIVERY:
                    del delivery[key]
    return body


def campaign_stats(stats: CampaignStats) -> dict[str, Any]:
    """Every figure from the campaign's ``Totals`` (``magpie.store.stats``): the dashboard's too.

    ``unknown`` is there for every channel (always 0 for push); ``ctr`` is null where clicks do not
    exist (Kakao, SMS) or nothing was sent.
    """
    return {
        "campaignKey": stats.campaign_key,
        "channel": stats.channel,
        "from": stats.since,
        "to": stats.until,
        "dispatches": stats.dispatches,
        "requested": stats.requested,
        "sent": stats.sent,
        "failed": stats.failed,
        "failures": stats.failures,
        "unknown": stats.unknown,
        "excluded": stats.excluded,
        "excludedTotal": stats.excluded_total,
        "pending": stats.pending,
        "sentRate": stats.sent_rate,
        "uniqueClicks": stats.unique_clicks,
        "totalClicks": stats.total_clicks,
        "clicks": stats.unique_clicks,
        "ctr": stats.ctr,
        **(
            {}
            if stats.sent_by_type is None and stats.channel in (None, "push")
            else {
                "delivered": stats.delivered,
                "undelivered": stats.undelivered,
                "sentByType": stats.sent_by_type or {},
            }
        ),
    }


def device(view: DeviceView) -> dict[str, Any]:
    body: dict[str, Any] = _encode(view)
    if view.user is None:
        del body["user"]
    return body
