"""Per-environment settings: marketing compliance, frequency caps, push providers and phone gateways. No I/O.

>>> parse_settings({"senderName": "magpie shop"})["nightPolicy"]
'HOLD'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from magpie.domain import messages
from magpie.errors import InvalidRequest

DEFAULT_OPT_OUT: Final = "수신거부: 앱 설정 > 알림 설정"
MAX_CAP_WINDOW_HOURS: Final = 30 * 24
_HHMM = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")

DEFAULTS: Final[dict[str, Any]] = {
    "senderName": "",
    "optOutText": DEFAULT_OPT_OUT,
    "nightPolicy": "HOLD",
    "nightStart": "21:00",
    "nightEnd": "08:00",
    "frequencyCaps": [],
    "providers": {},
    # Kakao and SMS: which gateway sends them (sandbox, nhn or solapi), the registered sender
    # number, the free opt-out line of marketing SMS, and a daily ceiling on paid messages (0: none).
    "kakaoGateway": "sandbox",
    "smsGateway": "sandbox",
    "smsSender": "",
    "smsOptOutNumber": "",
    "paidMessagesDailyLimit": 0,
    # Broadcasts: at most this many messages a minute handed to the workers per gateway (docs/broadcasts.md).
    "gatewayRatePerMinute": {},
}
GATEWAYS: Final = ("sandbox", "nhn", "solapi")
# The gateways a broadcast's messages leave by: push (FCM and APNs), a webhook, a Kakao/SMS gateway, the sandbox.
RATE_GATEWAYS: Final = ("push", "webhook", *GATEWAYS)

_PROVIDER_FIELDS: Final = {
    "fcm": ({"projectId", "serviceAccount"}, {"baseUrl"}),
    "apns": ({"teamId", "keyId", "privateKey", "topic"}, {"baseUrl", "caFile"}),
    "webhook": ({"url", "secret"}, set()),
    # NHN Cloud runs KakaoTalk Bizmessage and SMS as two services, each with its own app key.
    "nhn": (
        set(),
        {
            "alimtalkAppKey",
            "alimtalkSecretKey",
            "senderKey",
            "smsAppKey",
            "smsSecretKey",
            "alimtalkBaseUrl",
            "smsBaseUrl",
            "webhookSecret",
        },
    ),
    "solapi": ({"apiKey", "apiSecret"}, {"pfId", "baseUrl", "webhookSecret"}),
}


def _str(raw: Mapping[str, Any], name: str, default: str) -> str:
    value = raw.get(name, default)
    if not isinstance(value, str):
        raise InvalidRequest(f"settings.{name} must be a string")
    return value


def _caps(raw: object) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise InvalidRequest("settings.frequencyCaps must be a list")
    caps: list[dict[str, Any]] = []
    for i, cap in enumerate(raw):
        if not isinstance(cap, Mapping):
            raise InvalidRequest(f"settings.frequencyCaps[{i}] must be an object")
        limit, hours, tag = cap.get("limit"), cap.get("windowHours"), cap.get("tag")
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise InvalidRequest(f"settings.frequencyCaps[{i}].limit must be a positive integer")
        if not isinstance(hours, int | float) or isinstance(hours, bool) or not 0 < hours <= MAX_CAP_WINDOW_HOURS:
            raise InvalidRequest(
                f"settings.frequencyCaps[{i}].windowHours must be between 0 and {MAX_CAP_WINDOW_HOURS} (30 days)"
            )
        if tag is not None and (not isinstance(tag, str) or not tag):
            raise InvalidRequest(f"settings.frequencyCaps[{i}].tag must be a non-empty string or absent")
        channel = cap.get("channel")
        if channel is not None and channel not in messages.CHANNELS:
            raise InvalidRequest(
                f"settings.frequencyCaps[{i}].channel must be push, kakao or sms, or absent (every channel)"
            )
        caps.append({"limit": limit, "windowHours": hours, "tag": tag, "channel": channel})
    return caps


def _providers(raw: object) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise InvalidRequest("settings.providers must be an object")
    result: dict[str, Any] = {}
    for name, config in raw.items():
        if name not in _PROVIDER_FIELDS:
            raise InvalidRequest(f"settings.providers.{name}: unknown provider (fcm, apns, webhook, nhn or solapi)")
        if not isinstance(config, Mapping):
            raise InvalidRequest(f"settings.providers.{name} must be an object")
        required, optional = _PROVIDER_FIELDS[name]
        missing = required - set(config)
        if missing:
            raise InvalidRequest(f"settings.providers.{name} is missing {', '.join(sorted(missing))}")
        unknown = set(config) - required - optional
        if unknown:
            raise InvalidRequest(f"settings.providers.{name} has unknown fields {', '.join(sorted(unknown))}")
        if name == "fcm" and not isinstance(config["serviceAccount"], Mapping):
            raise InvalidRequest("settings.providers.fcm.serviceAccount must be the service-account JSON object")
        result[name] = dict(config)
    return result


def _gateway_rates(raw: object) -> dict[str, int]:
    if not isinstance(raw, Mapping):
        raise InvalidRequest("settings.gatewayRatePerMinute must be an object: gateway -> messages per minute")
    for name, rate in raw.items():
        if name not in RATE_GATEWAYS:
            raise InvalidRequest(f"settings.gatewayRatePerMinute.{name}: the gateways are {', '.join(RATE_GATEWAYS)}")
        if not isinstance(rate, int) or isinstance(rate, bool) or rate < 1:
            raise InvalidRequest(f"settings.gatewayRatePerMinute.{name} must be a positive integer")
    return dict(raw)


def parse_settings(raw: object) -> dict[str, Any]:
    """Validate settings and fill in defaults."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise InvalidRequest("settings must be an object")
    unknown = set(raw) - set(DEFAULTS)
    if unknown:
        raise InvalidRequest(f"unknown settings: {', '.join(sorted(unknown))}")
    policy = _str(raw, "nightPolicy", "HOLD")
    if policy not in ("HOLD", "DROP"):
        raise InvalidRequest("settings.nightPolicy must be HOLD or DROP")
    result: dict[str, Any] = {
        "senderName": _str(raw, "senderName", ""),
        "optOutText": _str(raw, "optOutText", DEFAULT_OPT_OUT),
        "nightPolicy": policy,
        "nightStart": _str(raw, "nightStart", "21:00"),
        "nightEnd": _str(raw, "nightEnd", "08:00"),
        "frequencyCaps": _caps(raw.get("frequencyCaps", [])),
        "providers": _providers(raw.get("providers", {})),
        "kakaoGateway": _str(raw, "kakaoGateway", "sandbox"),
        "smsGateway": _str(raw, "smsGateway", "sandbox"),
        "smsSender": _str(raw, "smsSender", ""),
        "smsOptOutNumber": _str(raw, "smsOptOutNumber", ""),
        "paidMessagesDailyLimit": raw.get("paidMessagesDailyLimit", 0),
        "gatewayRatePerMinute": _gateway_rates(raw.get("gatewayRatePerMinute", {})),
    }
    for name in ("kakaoGateway", "smsGateway"):
        if result[name] not in GATEWAYS:
            raise InvalidRequest(f"settings.{name} must be one of {', '.join(GATEWAYS)}")
        if result[name] != "sandbox" and result[name] not in result["providers"]:
            raise InvalidRequest(f"settings.{name} is {result[name]} but settings.providers.{result[name]} is missing")
    if result["smsOptOutNumber"] and not messages.is_opt_out_number(result["smsOptOutNumber"]):
        raise InvalidRequest("settings.smsOptOutNumber must be a free 080 number, e.g. 080-123-4567")
    if result["smsSender"] and not re.fullmatch(r"0\d{7,10}|1\d{7}", result["smsSender"].replace("-", "")):
        raise InvalidRequest("settings.smsSender must be a Korean number registered with the gateway, e.g. 02-123-4567")
    limit = result["paidMessagesDailyLimit"]
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise InvalidRequest("settings.paidMessagesDailyLimit must be a non-negative integer (0: no limit)")
    for name in ("nightStart", "nightEnd"):
        if not _HHMM.fullmatch(result[name]):
            raise InvalidRequest(f"settings.{name} must be HH:MM")
    return result


def effective(stored: Mapping[str, Any]) -> dict[str, Any]:
    """Stored settings with defaults for anything not set."""
    return {**DEFAULTS, **stored}


# -- secrets: write-only ------------------------------------------------------------------------------

# The provider fields that are credentials. Every answer (admin API, CLI, dashboard) shows them through
# ``redact_settings`` only; a settings update that leaves one out keeps the stored value.
SECRET_FIELDS: Final[dict[str, frozenset[str]]] = {
    "fcm": frozenset({"serviceAccount"}),
    "apns": frozenset({"privateKey"}),
    "webhook": frozenset({"secret"}),
    "nhn": frozenset({"alimtalkAppKey", "alimtalkSecretKey", "smsAppKey", "smsSecretKey", "webhookSecret"}),
    "solapi": frozenset({"apiKey", "apiSecret", "webhookSecret"}),
}
# A secret shorter than this shows no characters at all: four would be too large a part of it.
_SHOW_LAST_FROM: Final = 16


def redact_secret(value: object) -> dict[str, Any]:
    """What an answer shows of a secret: that it is set, and the last 4 characters of a long text one.

    >>> redact_secret("sk_live_0123456789abcdef")
    {'set': True, 'last4': 'cdef'}
    >>> redact_secret("short")
    {'set': True}
    >>> redact_secret(None)
    {'set': False}
    """
    if value is None or value == "":
        return {"set": False}
    if isinstance(value, str) and len(value) >= _SHOW_LAST_FROM:
        return {"set": True, "last4": value[-4:]}
    return {"set": True}


def is_redacted(value: object) -> bool:
    """Whether ``value`` is what ``redact_secret`` shows (sent back unchanged, it keeps the stored secret)."""
    return isinstance(value, Mapping) and set(value) <= {"set", "last4"} and isinstance(value.get("set"), bool)


def redact_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings as every surface shows them: each provider credential as ``redact_secret`` shows it.

    >>> redact_settings({"providers": {"webhook": {"url": "https://h.example", "secret": "s3cr3t"}}})["providers"]
    {'webhook': {'url': 'https://h.example', 'secret': {'set': True}}}
    """
    shown = dict(settings)
    providers = settings.get("providers")
    if isinstance(providers, Mapping):
        shown["providers"] = {
            name: {
                **{k: v for k, v in config.items() if k not in SECRET_FIELDS.get(name, ())},
                **{k: redact_secret(config.get(k)) for k in SECRET_FIELDS.get(name, ()) if k in config},
            }
            for name, config in providers.items()
            if isinstance(config, Mapping)
        }
    return shown


def keep_stored_secrets(raw: object, stored: Mapping[str, Any]) -> object:
    """New settings ``raw`` with each provider credential it leaves out (or sends back redacted) taken
    from the ``stored`` settings: secrets are write-only, so an update need not repeat them.

    ``null`` clears an optional credential; leaving a provider out of ``providers`` removes it whole.

    >>> stored = {"providers": {"webhook": {"url": "https://a.example", "secret": "s3cr3t"}}}
    >>> keep_stored_secrets({"providers": {"webhook": {"url": "https://b.example"}}}, stored)
    {'providers': {'webhook': {'url': 'https://b.example', 'secret': 's3cr3t'}}}
    """
    if not isinstance(raw, Mapping) or not isinstance(raw.get("providers"), Mapping):
        return raw
    before = stored.get("providers") or {}
    providers: dict[str, Any] = {}
    for name, config in raw["providers"].items():
        if isinstance(config, Mapping):
            config = dict(config)
            found = before.get(name)
            old: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
            for field in SECRET_FIELDS.get(name, ()):
                if field in config and config[field] is None:
                    del config[field]
                elif field in old and (field not in config or is_redacted(config[field])):
                    config[field] = old[field]
                elif field in config and is_redacted(config[field]):
                    raise InvalidRequest(
                        f"settings.providers.{name}.{field}: no {field} is stored to keep; send the secret itself"
                    )
        providers[name] = config
    return {**raw, "providers": providers}
