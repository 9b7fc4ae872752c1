"""Solapi gateway: messages v4 ``send-many/detail`` for SMS, LMS, MMS (image uploaded to storage v1
first), AlimTalk (ATA) and free-form brand messages (BMS_FREE).

Requests are signed with ``Authorization: HMAC-SHA256 apiKey=…, date=…, salt=…, signature=…``,
the signature being HMAC-SHA256 of ``date + salt`` keyed by the API secret (hex). Solapi has no
idempotency key, so every message carries ``customFields.magpieDeliveryId`` and a retry that may
follow an accepted request (``maybe_sent``) first asks ``GET /messages/v4/list`` what Solapi holds
for each recipient (``lookup``), and sends only what it does not find.
Final results arrive through Solapi's delivery report webhook (``parse_report``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import aiohttp

from magpie.providers.base import (
    DeliveryReport,
    PhoneMessage,
    PhoneResult,
    ProviderRejected,
    ProviderUnavailable,
    compact_json,
)
from magpie.providers.http import ImageFetcher, ImageRefused, request_json

__all__ = ["BASE_URL", "SolapiGateway", "authorization", "parse_report", "verify_authorization"]

BASE_URL: Final = "https://api.solapi.com"
DELIVERY_FIELD: Final = "magpieDeliveryId"
# Solapi refuses a signature dated more than 15 minutes from its clock.
MAX_SKEW_SECONDS: Final = 15 * 60
DELIVERED: Final = "4000"
_AUTH_ERRORS: Final = {"InvalidAPIKey", "SignatureDoesNotMatch", "RequestTimeTooSkewed", "DuplicatedSignature"}
# Brand messages are free-form (no registered template): BMS_FREE with kakaoOptions.bms; the BMS_TEXT,
# BMS_IMAGE … types are for brand message templates (templateId), which magpie does not use.
_TYPES: Final = {"alimtalk": "ATA", "brand": "BMS_FREE", "SMS": "SMS", "LMS": "LMS", "MMS": "MMS"}
# kakaoOptions.bms.targeting: I = the channel's friends (FriendTalk's reach, magpie's default),
# M = users who accepted marketing messages, N = those of them who are not friends.
_TARGETING: Final = {"I", "M", "N"}
# A brand message image: a JPEG uploaded to storage as type BMS.
BMS_IMAGE_LIMIT: Final = 500 * 1024
# Solapi's pending states; every other code is final.
_PENDING: Final = {"2000", "3000"}
# MMS: one JPEG of at most 200 KB, uploaded to storage first (type MMS) and named by its fileId;
# an uploaded file is reused for the same image URL for an hour.
MMS_IMAGE_LIMIT: Final = 200 * 1024
_UPLOAD_TTL: Final = 3600.0
# A lookup follows the message list of a number for at most this many pages of 100.
_LIST_PAGES: Final = 10


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ts * 1000) % 1000:03d}Z"


def sign(*, secret: str, date: str, salt: str) -> str:
    return hmac.new(secret.encode(), (date + salt).encode(), hashlib.sha256).hexdigest()


def authorization(*, api_key: str, secret: str, now: float, salt: str | None = None) -> str:
    """The ``Authorization`` header value for a request made at ``now``."""
    date = _iso(now)
    salt = salt or secrets.token_hex(16)
    return (
        f"HMAC-SHA256 apiKey={api_key}, date={date}, salt={salt}, signature={sign(secret=secret, date=date, salt=salt)}"
    )


def parse_authorization(value: str) -> dict[str, str] | None:
    """The fields of an HMAC-SHA256 authorization (keys lower-cased), or None when it is not one."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.upper() != "HMAC-SHA256":
        return None
    fields: dict[str, str] = {}
    for part in rest.split(","):
        key, sep, val = part.strip().partition("=")
        if sep:
            fields[key.strip().lower()] = val.strip()
    return fields


def verify_authorization(value: str, *, secrets_by_key: Mapping[str, str], now: float) -> str | None:
    """None when ``value`` is a valid, fresh signature; else the error code Solapi answers with."""
    fields = parse_authorization(value)
    if fields is None or not {"apikey", "date", "salt", "signature"} <= set(fields):
        return "InvalidAuthorization"
    secret = secrets_by_key.get(fields["apikey"])
    if secret is None:
        return "InvalidAPIKey"
    try:
        when = datetime.fromisoformat(fields["date"].replace("Z", "+00:00")).timestamp()
    except ValueError:
        return "InvalidAuthorization"
    if abs(now - when) > MAX_SKEW_SECONDS:
        return "RequestTimeTooSkewed"
    expected = sign(secret=secret, date=fields["date"], salt=fields["salt"])
    if not hmac.compare_digest(expected.encode(), fields["signature"].encode()):
        return "SignatureDoesNotMatch"
    return None


def parse_report(doc: Any) -> list[DeliveryReport]:
    """Final results out of a delivery report webhook body: Solapi's single reports are a list of
    ``{"eventDataId", "data": <message>, "retryCount"}``; a bare message object is taken too."""
    items = doc if isinstance(doc, list) else [doc]
    reports: list[DeliveryReport] = []
    for entry in items:
        item = entry.get("data") if isinstance(entry, dict) and isinstance(entry.get("data"), dict) else entry
        if not isinstance(item, dict) or not isinstance(item.get("messageId"), str):
            continue
        code = str(item.get("statusCode") or "")
        if code in _PENDING:
            continue
        fields = item.get("customFields") if isinstance(item.get("customFields"), dict) else {}
        delivery = fields.get(DELIVERY_FIELD) if isinstance(fields, dict) else None
        reports.append(DeliveryReport(item["messageId"], code == DELIVERED, code, str(delivery) if delivery else None))
    return reports


class SolapiGateway:
    """Sends ``PhoneMessage`` batches through Solapi; see the module docstring."""

    name = "solapi"
    # Final results arrive on the webhook (``parse_report``), never polled.
    polled = False
    delivered_on_accept = False

    def __init__(
        self,
        *,
        config: Mapping[str, Any],
        sender_number: str = "",
        session: aiohttp.ClientSession | None = None,
        images: ImageFetcher | None = None,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._api_key = str(config["apiKey"])
        self._secret = str(config["apiSecret"])
        self._pf_id = str(config.get("pfId") or "")
        targeting = str(config.get("bmsTargeting") or "I")
        self._targeting = targeting if targeting in _TARGETING else "I"
        self._base = str(config.get("baseUrl") or BASE_URL).rstrip("/")
        self._sender = sender_number.replace("-", "")
        self._session = session
        self._owns_session = session is None
        # Images come from URLs campaigns name: fetched apart from the gateway's own session, public only.
        self._images = images or ImageFetcher()
        self._owns_images = images is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._clock = clock
        self._uploads: dict[str, tuple[str, float]] = {}

    async def send_batch(
        self,
        messages: list[PhoneMessage],
        *,
        batch_key: str,
        maybe_sent: bool = False,
    ) -> list[PhoneResult]:
        results: dict[str, PhoneResult] = {}
        for m in messages:
            if not self._sender or (m.channel == "kakao" and not self._pf_id):
                results[m.delivery_id] = PhoneResult(m.delivery_id, "FAILED", error_code="PROVIDER_NOT_CONFIGURED")
            elif m.kind == "MMS" and len(m.image_urls) > 1:
                # A Solapi MMS carries one image (imageId).
                results[m.delivery_id] = PhoneResult(m.delivery_id, "FAILED", error_code="MMS_ONE_IMAGE_ONLY")
        todo = [m for m in messages if m.delivery_id not in results]
        if todo and maybe_sent:
            for found in await self.lookup(todo, batch_key=batch_key):
                results[found.delivery_id] = found
            todo = [m for m in todo if m.delivery_id not in results]
        images: dict[str, str] = {}
        for m in todo:
            if m.kind in ("MMS", "brand") and m.image_urls:
                try:
                    kind = "MMS" if m.kind == "MMS" else "BMS"
                    images[m.delivery_id] = await self._upload(m.image_urls[0], kind=kind)
                except ImageRefused as exc:
                    results[m.delivery_id] = PhoneResult(m.delivery_id, "FAILED", error_code=exc.code)
        todo = [m for m in todo if m.delivery_id not in results]
        if todo:
            for result in await self._send(todo, images):
                results[result.delivery_id] = result
        return [results[m.delivery_id] for m in messages]

    async def _upload(self, url: str, *, kind: str) -> str:
        """Solapi's fileId for the image at ``url``: fetched, then uploaded to storage as ``kind`` (MMS, BMS)."""
        cached = self._uploads.get(f"{kind} {url}")
        if cached is not None and cached[1] > self._clock():
            return cached[0]
        limit = MMS_IMAGE_LIMIT if kind == "MMS" else BMS_IMAGE_LIMIT
        image = await self._images.jpeg(url, limit=limit, timeout=self._timeout)
        body = {
            "file": base64.b64encode(image).decode(),
            "name": hashlib.sha256(image).hexdigest()[:32] + ".jpg",
            "type": kind,
        }
        status, doc = await self._call("POST", "/storage/v1/files", body=body)
        if status >= 300:
            error = self._error(status, doc)
            if isinstance(error, ProviderUnavailable) or error.code.removeprefix("SOLAPI_") in _AUTH_ERRORS:
                raise error
            raise ImageRefused(error.code)
        file_id = (doc or {}).get("fileId") if isinstance(doc, dict) else None
        if not isinstance(file_id, str) or not file_id:
            raise ImageRefused("SOLAPI_NO_FILE_ID")
        self._uploads[f"{kind} {url}"] = (file_id, self._clock() + _UPLOAD_TTL)
        return file_id

    def _message(self, m: PhoneMessage, image_id: str | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "to": m.national_number,
            "from": self._sender,
            "text": m.text,
            "type": _TYPES[m.kind],
            "customFields": {DELIVERY_FIELD: m.delivery_id},
        }
        if m.title and m.kind in ("LMS", "MMS"):
            doc["subject"] = m.title
        if image_id is not None and m.kind == "MMS":
            doc["imageId"] = image_id
        if m.channel == "kakao":
            options: dict[str, Any] = {"pfId": self._pf_id, "disableSms": m.fallback is None}
            if m.kind == "alimtalk":
                options["templateId"] = m.template_code
                options["variables"] = {f"#{{{k}}}": v for k, v in m.template_parameters.items()}
                options["buttons"] = [_button(b) for b in m.buttons]
            else:
                bms: dict[str, Any] = {"targeting": self._targeting, "chatBubbleType": "TEXT"}
                if image_id is not None:
                    bms.update(chatBubbleType="IMAGE", imageId=image_id)
                if m.buttons:
                    bms["buttons"] = [_bms_button(b) for b in m.buttons]
                options["bms"] = bms
            doc["kakaoOptions"] = options
            if m.fallback is not None:
                doc["replacements"] = [
                    {
                        "to": m.national_number,
                        "from": self._sender,
                        "text": m.fallback.text,
                        "type": m.fallback.kind,
                        **({"subject": m.fallback.title} if m.fallback.title else {}),
                    }
                ]
        return doc

    async def _send(self, messages: list[PhoneMessage], images: Mapping[str, str]) -> list[PhoneResult]:
        body = {
            "messages": [self._message(m, images.get(m.delivery_id)) for m in messages],
            "showMessageList": True,
        }
        status, doc = await self._call("POST", "/messages/v4/send-many/detail", body=body)
        if status >= 300:
            raise self._error(status, doc)
        ids = [m.delivery_id for m in messages]
        failed: dict[str, str] = {}
        accepted: dict[str, str] = {}
        for item in (doc or {}).get("failedMessageList") or []:
            delivery = _delivery_of(item)
            if delivery:
                failed[delivery] = f"SOLAPI_{item.get('statusCode')}"
        for item in (doc or {}).get("messageList") or []:
            delivery = _delivery_of(item)
            if delivery and isinstance(item.get("messageId"), str):
                accepted[delivery] = item["messageId"]
        out: list[PhoneResult] = []
        for delivery in ids:
            if delivery in failed:
                out.append(PhoneResult(delivery, "FAILED", error_code=failed[delivery]))
            elif delivery in accepted:
                out.append(PhoneResult(delivery, "SENT", provider_message_id=accepted[delivery]))
            else:
                out.append(PhoneResult(delivery, "FAILED", error_code="SOLAPI_NO_RESULT"))
        return out

    async def lookup(
        self,
        messages: list[PhoneMessage],
        *,
        batch_key: str,  # noqa: ARG002 - Solapi has no idempotency key: deliveries are matched by id
    ) -> list[PhoneResult]:
        """What Solapi already holds for these deliveries (listed by recipient, matched by our field);
        raises ``ProviderError`` when Solapi cannot be asked."""
        wanted = {m.delivery_id for m in messages}
        found: list[PhoneResult] = []
        for number in sorted({m.national_number for m in messages}):
            for item in await self._listed(number):
                delivery = _delivery_of(item)
                if delivery in wanted and isinstance(item.get("messageId"), str):
                    code = str(item.get("statusCode") or "")
                    if code.startswith("1"):
                        # 1xxx: refused when the message was registered, so never sent.
                        found.append(PhoneResult(delivery, "FAILED", error_code=f"SOLAPI_{code}"))
                    else:
                        found.append(PhoneResult(delivery, "SENT", provider_message_id=item["messageId"]))
                    wanted.discard(delivery)
        return found

    async def _listed(self, number: str) -> list[dict[str, Any]]:
        """The messages Solapi holds for one recipient, newest first, following ``nextKey`` a few pages."""
        items: list[dict[str, Any]] = []
        params = {"criteria": "to", "cond": "eq", "value": number, "limit": "100"}
        for _ in range(_LIST_PAGES):
            status, doc = await self._call("GET", "/messages/v4/list", params=params)
            if status >= 300:
                raise self._error(status, doc)
            listed = (doc or {}).get("messageList") or {} if isinstance(doc, dict) else {}
            items.extend(i for i in (listed.values() if isinstance(listed, dict) else listed) if isinstance(i, dict))
            next_key = doc.get("nextKey") if isinstance(doc, dict) else None
            if not next_key:
                break
            params = {**params, "startKey": str(next_key)}
        return items

    @staticmethod
    def _error(status: int, doc: Any) -> ProviderRejected | ProviderUnavailable:
        code = str((doc or {}).get("errorCode") or f"HTTP_{status}") if isinstance(doc, dict) else f"HTTP_{status}"
        message = str((doc or {}).get("errorMessage") or "") if isinstance(doc, dict) else ""
        if code in _AUTH_ERRORS:
            return ProviderRejected(f"SOLAPI_{code}", f"Solapi refused the credentials: {code} {message}".strip())
        if status == 429 or status >= 500:
            return ProviderUnavailable(f"SOLAPI_{code}", message or "Solapi is unavailable")
        return ProviderRejected(f"SOLAPI_{code}", message)

    async def _call(
        self, method: str, path: str, *, body: Any = None, params: Mapping[str, str] | None = None
    ) -> tuple[int, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {"Authorization": authorization(api_key=self._api_key, secret=self._secret, now=self._clock())}
        kwargs: dict[str, Any] = {"headers": headers, "params": params}
        if body is not None:
            headers["Content-Type"] = "application/json"
            kwargs["data"] = compact_json(body)
        return await request_json(
            self._session, method, self._base + path, timeout=self._timeout, what="Solapi", **kwargs
        )

    async def poll(self, provider_message_ids: list[str]) -> list[DeliveryReport]:  # noqa: ARG002 - see polled
        return []

    async def aclose(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None
        if self._owns_images:
            await self._images.aclose()


def _delivery_of(item: Any) -> str | None:
    if not isinstance(item, dict):
        return None
    fields = item.get("customFields")
    value = fields.get(DELIVERY_FIELD) if isinstance(fields, dict) else None
    return str(value) if value else None


def _bms_button(button: Mapping[str, str]) -> dict[str, str]:
    """magpie's (NHN-style) button fields in the names of Solapi's brand message buttons."""
    names = {
        "type": "linkType",
        "name": "name",
        "linkMo": "linkMobile",
        "linkPc": "linkPc",
        "schemeAndroid": "linkAndroid",
        "schemeIos": "linkIos",
    }
    return {names[k]: v for k, v in button.items() if k in names}


def _button(button: Mapping[str, str]) -> dict[str, str]:
    """magpie's (NHN-style) button fields in Solapi's names."""
    names = {
        "type": "buttonType",
        "name": "buttonName",
        "linkMo": "linkMo",
        "linkPc": "linkPc",
        "schemeAndroid": "linkAnd",
        "schemeIos": "linkIos",
    }
    return {names[k]: v for k, v in button.items() if k in names}
