"""NHN Cloud gateway: KakaoTalk Bizmessage (AlimTalk API v2.3, brand messages through FriendTalk v2.3) and SMS API v3.0.

Both services authenticate with an app key in the path and ``X-Secret-Key``; each is its own NHN
Cloud service with its own keys. Every send request carries ``X-NC-API-IDEMPOTENCY-KEY`` derived
from the batch key and the deliveries in it (NHN fails a request that repeats a key within 10
minutes) and ``senderGroupingKey`` = the batch key, by which a batch whose answer was lost is
looked up (``lookup``) before anything of it is sent again. Final results come from polling the
request id and, for text messages, from the SMS service's webhook (``parse_webhook``): its
``MESSAGE_RESULT_UPDATE`` hooks carry each message's final status, its ``UNSUBSCRIBE`` hooks the
numbers that called the 080 opt-out line. NHN's KakaoTalk Bizmessage webhook documents template
review hooks only, so AlimTalk and brand message results are polled.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

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

__all__ = [
    "ALIMTALK_BASE_URL",
    "IDEMPOTENCY_HEADER",
    "SIGNATURE_HEADER",
    "SMS_BASE_URL",
    "NhnGateway",
    "Webhook",
    "parse_webhook",
]

ALIMTALK_BASE_URL: Final = "https://api-alimtalk.cloud.toast.com"
SMS_BASE_URL: Final = "https://api-sms.cloud.toast.com"
IDEMPOTENCY_HEADER: Final = "X-NC-API-IDEMPOTENCY-KEY"
# NHN's webhooks carry the signature string entered in the console, as it was entered.
SIGNATURE_HEADER: Final = "X-Toast-Webhook-Signature"
# messageStatus of a MESSAGE_RESULT_UPDATE hook that is final (the others are still on their way).
_FINAL_STATUSES: Final = {"COMPLETED", "FAILED", "FAILED_AD", "CANCEL", "DUPLICATED"}
# Answers about the credentials rather than the message: every message of the request fails with them.
_AUTH_CODES: Final = {
    -1000: "invalid app key",
    -1001: "invalid secret key",
    -4004: "app key not found",
    -4005: "app key no longer in use",
}
# Transient on NHN's side: worth the same request again (with the same idempotency key).
_RETRYABLE_CODES: Final = {-9999, -1017}
# NHN's query dates are Korean time; a lost batch is looked for within this many days.
_KST: Final = ZoneInfo("Asia/Seoul")
LOOKUP_DAYS: Final = 7
_PAGE_SIZE: Final = 1000
_MAX_PAGES: Final = 20
# MMS attachments: JPEG files of at most 300 KB, uploaded beforehand (attachfile/binaryUpload);
# an uploaded file is reused for the same image URL for an hour.
MMS_IMAGE_LIMIT: Final = 300 * 1024
_UPLOAD_TTL: Final = 3600.0


@dataclass(frozen=True, slots=True)
class _Request:
    service: str  # alimtalk | friendtalk | sms | mms
    path: str
    body: dict[str, Any]
    deliveries: list[str]
    key: str  # X-NC-API-IDEMPOTENCY-KEY


@dataclass(frozen=True, slots=True)
class Webhook:
    """What one NHN SMS webhook call says: final results, and numbers that opted out by 080 call."""

    event: str
    reports: list[DeliveryReport]
    opted_out: list[str]


def parse_webhook(doc: Any) -> Webhook:
    """An NHN SMS webhook body: ``{"event": …, "hooks": [...]}`` (other fields are NHN's bookkeeping)."""
    event = str(doc.get("event") or "") if isinstance(doc, dict) else ""
    hooks = doc.get("hooks") if isinstance(doc, dict) else None
    items = [h for h in hooks if isinstance(h, dict)] if isinstance(hooks, list) else []
    reports: list[DeliveryReport] = []
    opted_out: list[str] = []
    if event == "MESSAGE_RESULT_UPDATE":
        for hook in items:
            status, request_id, seq = hook.get("messageStatus"), hook.get("requestId"), hook.get("recipientSeq")
            if status not in _FINAL_STATUSES or not request_id or seq is None:
                continue
            # senderType names the endpoint family (e.g. NORMAL_SMS); LMS and MMS go through /sender/mms.
            service = "sms" if str(hook.get("senderType") or "").endswith("SMS") else "mms"
            code = str(hook.get("resultCode") or status)
            delivery = str(hook.get("recipientGroupingKey") or "") or None
            reports.append(DeliveryReport(f"{service}:{request_id}:{seq}", status == "COMPLETED", code, delivery))
    elif event == "UNSUBSCRIBE":
        opted_out = [str(h["recipientNo"]) for h in items if isinstance(h.get("recipientNo"), str)]
    return Webhook(event, reports, opted_out)


# SMS v3.0 msgStatus: 0 failed, 1 requested, 2 in progress, 3 delivered, 4 reservation cancelled,
# 5 failed as a duplicate, 6 failed (ad restriction), 7 waiting to be resent (ad restriction).
_SMS_FINAL: Final = {"0", "3", "4", "5", "6"}


def _sms_report(row: Mapping[str, Any]) -> tuple[bool, str] | None:
    """``(delivered, code)`` of a final SMS v3.0 list row; None while the message is on its way."""
    state = str(row.get("msgStatus"))
    if state not in _SMS_FINAL:
        return None
    return state == "3", str(row.get("resultCode") or state)


def _kakao_report(row: Mapping[str, Any]) -> tuple[bool, str] | None:
    """``(delivered, code)`` of a final AlimTalk/FriendTalk v2.3 list row; None while on its way."""
    state = str(row.get("messageStatus"))
    if state not in ("COMPLETED", "FAILED", "CANCEL"):
        return None
    code = str(row.get("resultCode") or state)
    if state == "COMPLETED" and code == "1000":
        return True, code
    # A fallback text that reached the phone counts as delivered, with its own code.
    if row.get("resendStatus") == "RSC04":
        return True, "RSC04"
    return False, code


class NhnGateway:
    """Sends ``PhoneMessage`` batches through NHN Cloud; see the module docstring."""

    name = "nhn"
    # Final results are asked for (``poll``): NHN Cloud's webhooks are optional.
    polled = True
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
        self._alimtalk_key = str(config.get("alimtalkAppKey") or "")
        self._alimtalk_secret = str(config.get("alimtalkSecretKey") or "")
        self._sender_key = str(config.get("senderKey") or "")
        self._sms_key = str(config.get("smsAppKey") or "")
        self._sms_secret = str(config.get("smsSecretKey") or "")
        self._alimtalk_base = str(config.get("alimtalkBaseUrl") or ALIMTALK_BASE_URL).rstrip("/")
        self._sms_base = str(config.get("smsBaseUrl") or SMS_BASE_URL).rstrip("/")
        self._sender_number = sender_number.replace("-", "")
        self._session = session
        self._owns_session = session is None
        # Images come from URLs campaigns name: fetched apart from the gateway's own session, public only.
        self._images = images or ImageFetcher()
        self._owns_images = images is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._clock = clock
        self._uploads: dict[str, tuple[int, float]] = {}

    # -- sending ---------------------------------------------------------------------------------

    async def send_batch(
        self, messages: list[PhoneMessage], *, batch_key: str, maybe_sent: bool = False
    ) -> list[PhoneResult]:
        results: dict[str, PhoneResult] = {}
        for message in messages:
            problem = self._unsendable(message)
            if problem is not None:
                results[message.delivery_id] = PhoneResult(message.delivery_id, "FAILED", error_code=problem)
        todo = [m for m in messages if m.delivery_id not in results]
        if todo and maybe_sent:
            for found in await self.lookup(todo, batch_key=batch_key):
                results[found.delivery_id] = found
            todo = [m for m in todo if m.delivery_id not in results]
        attachments: dict[str, tuple[int, ...]] = {}
        for m in todo:
            if m.kind == "MMS":
                try:
                    attachments[m.delivery_id] = tuple([await self._attachment(url) for url in m.image_urls])
                except ImageRefused as exc:
                    results[m.delivery_id] = PhoneResult(m.delivery_id, "FAILED", error_code=exc.code)
        todo = [m for m in todo if m.delivery_id not in results]
        for request in self._requests(todo, batch_key=batch_key, attachments=attachments):
            refused, answered = await self._send(request)
            if refused is not None and maybe_sent:
                # After a lost answer, a refused request may be NHN refusing a repeated idempotency
                # key (the first request went through): what NHN holds is SENT, the rest UNKNOWN.
                group = [m for m in todo if m.delivery_id in set(request.deliveries)]
                held = {r.delivery_id: r for r in await self.lookup(group, batch_key=batch_key)}
                answered = [held.get(d) or PhoneResult(d, "UNKNOWN", error_code=refused) for d in request.deliveries]
            for result in answered:
                results[result.delivery_id] = result
        return [results[m.delivery_id] for m in messages]

    def _unsendable(self, message: PhoneMessage) -> str | None:
        if message.channel == "kakao" and not (self._alimtalk_key and self._alimtalk_secret and self._sender_key):
            return "PROVIDER_NOT_CONFIGURED"
        if message.channel == "sms" and not (self._sms_key and self._sms_secret and self._sender_number):
            return "PROVIDER_NOT_CONFIGURED"
        return None

    async def _attachment(self, url: str) -> int:
        """NHN's file id for the image at ``url``: fetched, then uploaded (attachfile/binaryUpload)."""
        cached = self._uploads.get(url)
        if cached is not None and cached[1] > self._clock():
            return cached[0]
        image = await self._images.jpeg(url, limit=MMS_IMAGE_LIMIT, timeout=self._timeout)
        body = {
            "fileName": hashlib.sha256(image).hexdigest()[:32] + ".jpg",
            "createUser": "magpie",
            "fileBody": base64.b64encode(image).decode(),
        }
        path = f"{self._sms_base}/sms/v3.0/appKeys/{self._sms_key}/attachfile/binaryUpload"
        headers = {"Content-Type": "application/json;charset=UTF-8", "X-Secret-Key": self._sms_secret}
        status, doc = await self._call("POST", path, headers=headers, data=compact_json(body))
        ok, code = self._header(status, doc)
        data = ((doc.get("body") or {}).get("data") or {}) if isinstance(doc, dict) else {}
        if not ok or not isinstance(data.get("fileId"), int):
            raise ImageRefused(f"NHN_{code}" if not ok else "NHN_NO_FILE_ID")
        self._uploads[url] = (data["fileId"], self._clock() + _UPLOAD_TTL)
        return int(data["fileId"])

    def _requests(
        self, messages: list[PhoneMessage], *, batch_key: str, attachments: Mapping[str, tuple[int, ...]]
    ) -> list[_Request]:
        groups: dict[tuple[str, ...], list[PhoneMessage]] = {}
        for m in messages:
            if m.kind == "alimtalk":
                key: tuple[str, ...] = ("alimtalk", m.template_code or "")
            elif m.kind == "brand":
                key = ("friendtalk",)
            else:
                # An SMS request has one body for all its recipients: personalised texts go one by one.
                files = ",".join(str(i) for i in attachments.get(m.delivery_id, ()))
                key = ("sms" if m.kind == "SMS" else "mms", m.text, m.title or "", "ad" if m.marketing else "", files)
            groups.setdefault(key, []).append(m)
        requests: list[_Request] = []
        for key, group in groups.items():
            ids = [m.delivery_id for m in group]
            if key[0] == "alimtalk":
                body: dict[str, Any] = {
                    "senderKey": self._sender_key,
                    "templateCode": key[1],
                    "senderGroupingKey": batch_key,
                    "recipientList": [self._alimtalk_recipient(m) for m in group],
                }
                path = f"{self._alimtalk_base}/alimtalk/v2.3/appkeys/{self._alimtalk_key}/messages"
            elif key[0] == "friendtalk":
                body = {
                    "senderKey": self._sender_key,
                    "senderGroupingKey": batch_key,
                    "recipientList": [
                        {
                            "recipientNo": m.national_number,
                            "content": m.text,
                            **({"imageUrl": m.image_urls[0]} if m.image_urls else {}),
                            "buttons": [{"ordering": i + 1, **b} for i, b in enumerate(m.buttons)],
                            "isAd": True,
                            "recipientGroupingKey": m.delivery_id,
                        }
                        for m in group
                    ],
                }
                path = f"{self._alimtalk_base}/friendtalk/v2.3/appkeys/{self._alimtalk_key}/messages"
            else:
                first = group[0]
                endpoint = ("ad-" if first.marketing else "") + key[0]
                body = {
                    "body": first.text,
                    "sendNo": self._sender_number,
                    "senderGroupingKey": batch_key,
                    "recipientList": [
                        {"recipientNo": m.national_number, "recipientGroupingKey": m.delivery_id} for m in group
                    ],
                }
                if key[0] == "mms":
                    body["title"] = first.title or ""
                if attachments.get(first.delivery_id):
                    body["attachFileIdList"] = list(attachments[first.delivery_id])
                path = f"{self._sms_base}/sms/v3.0/appKeys/{self._sms_key}/sender/{endpoint}"
            digest = hashlib.sha256("\n".join([batch_key, key[0], *sorted(ids)]).encode()).hexdigest()
            requests.append(_Request(service=key[0], path=path, body=body, deliveries=ids, key=digest[:40]))
        return requests

    def _alimtalk_recipient(self, m: PhoneMessage) -> dict[str, Any]:
        recipient: dict[str, Any] = {
            "recipientNo": m.national_number,
            "templateParameter": m.template_parameters,
            "recipientGroupingKey": m.delivery_id,
        }
        if m.fallback is not None:
            recipient["resendParameter"] = {
                "isResend": True,
                "resendType": m.fallback.kind,
                "resendContent": m.fallback.text,
                **({"resendTitle": m.fallback.title} if m.fallback.title else {}),
                "resendSendNo": self._sender_number,
            }
        else:
            recipient["resendParameter"] = {"isResend": False}
        return recipient

    def _secret(self, service: str) -> str:
        return self._alimtalk_secret if service in ("alimtalk", "friendtalk") else self._sms_secret

    async def _send(self, request: _Request) -> tuple[str | None, list[PhoneResult]]:
        """``(code when NHN refused the whole request, per-delivery results)``."""
        headers = {
            "Content-Type": "application/json;charset=UTF-8",
            "X-Secret-Key": self._secret(request.service),
            IDEMPOTENCY_HEADER: request.key,
        }
        status, doc = await self._call("POST", request.path, headers=headers, data=compact_json(request.body))
        header = self._header(status, doc)
        if request.service in ("sms", "mms"):
            data = ((doc.get("body") or {}).get("data") or {}) if isinstance(doc, dict) else {}
            request_id, results = data.get("requestId"), data.get("sendResultList") or []
        else:
            message = (doc.get("message") or {}) if isinstance(doc, dict) else {}
            request_id, results = message.get("requestId"), message.get("sendResults") or []
        if not header[0]:
            code = f"NHN_{header[1]}"
            return code, [PhoneResult(d, "FAILED", error_code=code) for d in request.deliveries]
        by_key = {str(r.get("recipientGroupingKey")): r for r in results if isinstance(r, dict)}
        out: list[PhoneResult] = []
        for delivery in request.deliveries:
            r = by_key.get(delivery)
            if r is None:
                out.append(PhoneResult(delivery, "FAILED", error_code="NHN_NO_RESULT"))
                continue
            result_code = r.get("resultCode")
            if result_code in (0, "0"):
                message_id = f"{request.service}:{request_id}:{r.get('recipientSeq')}"
                out.append(PhoneResult(delivery, "SENT", provider_message_id=message_id))
            else:
                out.append(PhoneResult(delivery, "FAILED", error_code=f"NHN_{result_code}"))
        return None, out

    # -- what NHN holds of a batch -------------------------------------------------------------------

    async def lookup(self, messages: list[PhoneMessage], *, batch_key: str) -> list[PhoneResult]:
        """The messages of batch ``batch_key`` NHN holds, found by ``senderGroupingKey`` and matched by
        ``recipientGroupingKey``; raises ``ProviderUnavailable`` when NHN cannot be asked."""
        wanted: dict[str, set[str]] = {}
        for m in messages:
            if m.kind == "alimtalk":
                service = "alimtalk"
            elif m.kind == "brand":
                service = "friendtalk"
            else:
                service = "sms" if m.kind == "SMS" else "mms"
            wanted.setdefault(service, set()).add(m.delivery_id)
        now = datetime.fromtimestamp(self._clock(), _KST)
        since = datetime.fromtimestamp(self._clock() - LOOKUP_DAYS * 86_400, _KST)
        found: list[PhoneResult] = []
        for service, deliveries in wanted.items():
            fmt = "%Y-%m-%d %H:%M:%S" if service in ("sms", "mms") else "%Y-%m-%d %H:%M"
            query = {
                "senderGroupingKey": batch_key,
                "startRequestDate": since.strftime(fmt),
                "endRequestDate": now.strftime(fmt),
            }
            for row in await self._listed(service, query):
                delivery = str(row.get("recipientGroupingKey") or "")
                if delivery in deliveries and row.get("requestId") and row.get("recipientSeq") is not None:
                    deliveries.discard(delivery)
                    message_id = f"{service}:{row['requestId']}:{row['recipientSeq']}"
                    found.append(PhoneResult(delivery, "SENT", provider_message_id=message_id))
        return found

    async def _listed(self, service: str, query: Mapping[str, str]) -> list[dict[str, Any]]:
        """Every row of one of NHN's message lists (AlimTalk/FriendTalk v2.3, SMS v3.0 ``/sender/sms`` or
        ``/sender/mms``) for ``query``, page by page."""
        if service in ("sms", "mms"):
            url = f"{self._sms_base}/sms/v3.0/appKeys/{self._sms_key}/sender/{service}"
            secret = self._sms_secret
        else:
            url = f"{self._alimtalk_base}/{service}/v2.3/appkeys/{self._alimtalk_key}/messages"
            secret = self._alimtalk_secret
        rows: list[dict[str, Any]] = []
        for page in range(1, _MAX_PAGES + 1):
            params = {**query, "pageNum": str(page), "pageSize": str(_PAGE_SIZE)}
            status, doc = await self._call("GET", url, headers={"X-Secret-Key": secret}, params=params)
            ok, code = self._header(status, doc)
            if not ok:
                raise ProviderUnavailable(f"NHN_{code}", "NHN Cloud could not list the messages")
            if service in ("sms", "mms"):
                listing = (doc.get("body") or {}) if isinstance(doc, dict) else {}
                items = listing.get("data") or []
            else:
                listing = (doc.get("messageSearchResultResponse") or {}) if isinstance(doc, dict) else {}
                items = listing.get("messages") or []
            rows.extend(r for r in items if isinstance(r, dict))
            if not items or len(rows) >= int(listing.get("totalCount") or 0):
                break
        return rows

    @staticmethod
    def _header(status: int, doc: Any) -> tuple[bool, int]:
        """``(isSuccessful, resultCode)``; raises for transient failures and refused credentials."""
        header = doc.get("header") if isinstance(doc, dict) else None
        if not isinstance(header, dict):
            if status == 429 or status >= 500:
                raise ProviderUnavailable(f"HTTP_{status}", "NHN Cloud is unavailable")
            raise ProviderRejected(f"HTTP_{status}", "NHN Cloud answered without a result header")
        code = int(header.get("resultCode") or 0)
        if code in _AUTH_CODES:
            raise ProviderRejected(f"NHN_{code}", f"NHN Cloud refused the credentials: {_AUTH_CODES[code]} ({code})")
        if code in _RETRYABLE_CODES or status == 429 or status >= 500:
            raise ProviderUnavailable(f"NHN_{code}" if code else f"HTTP_{status}", str(header.get("resultMessage")))
        return bool(header.get("isSuccessful")), code

    # -- final results -------------------------------------------------------------------------------

    async def poll(self, provider_message_ids: list[str]) -> list[DeliveryReport]:
        """Ask NHN for the final result of accepted messages (its message lists by ``requestId``); those
        still in flight are left out."""
        by_request: dict[tuple[str, str], set[str]] = {}
        for message_id in provider_message_ids:
            service, _, rest = message_id.partition(":")
            request_id, _, seq = rest.rpartition(":")
            by_request.setdefault((service, request_id), set()).add(seq)
        reports: list[DeliveryReport] = []
        for (service, request_id), seqs in by_request.items():
            for row in await self._listed(service, {"requestId": request_id}):
                seq = str(row.get("recipientSeq"))
                if seq not in seqs:
                    continue
                report = _sms_report(row) if service in ("sms", "mms") else _kakao_report(row)
                if report is not None:
                    delivered, code = report
                    delivery = str(row.get("recipientGroupingKey") or "") or None
                    reports.append(DeliveryReport(f"{service}:{request_id}:{seq}", delivered, code, delivery))
        return reports

    # -- HTTP ------------------------------------------------------------------------------------

    async def _call(self, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return await request_json(self._session, method, url, timeout=self._timeout, what="NHN Cloud", **kwargs)

    async def aclose(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None
        if self._owns_images:
            await self._images.aclose()
