"""A fake NHN Cloud on 127.0.0.1: KakaoTalk Bizmessage AlimTalk and FriendTalk v2.3, SMS v3.0.

It checks the app key in the path and ``X-Secret-Key`` (answering NHN's -1000/-1001 result codes),
fills registered AlimTalk templates from ``templateParameter`` (-3004 when a placeholder has no value),
fails a request that repeats an ``X-NC-API-IDEMPOTENCY-KEY`` within 10 minutes (as NHN's API guides
say; they name no result code, so the fake answers ``DUPLICATE_CODE``, its own stand-in), lists what
it holds by ``requestId`` or by request dates with ``senderGroupingKey`` / ``recipientGroupingKey``,
answers result polls, and writes the SMS service's webhook calls (``webhooks``: a
``MESSAGE_RESULT_UPDATE`` per text request; ``unsubscribe`` builds an ``UNSUBSCRIBE`` one) with the
headers NHN sends them with (``webhook_headers``).
For benchmarks: ``python -m tests.fakes.nhn --port 0`` prints ``READY <port>``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hashlib
import itertools
import json
import re
import sys
import time
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from tests.fakes.gateway import Accepted, GatewayFake
from tests.fakes.server import serve_until_signalled

APP_KEY = "nhn-app-key"
SECRET_KEY = "nhn-secret-key"
SMS_APP_KEY = "nhn-sms-app-key"
SMS_SECRET_KEY = "nhn-sms-secret-key"
SENDER_KEY = "a" * 40
# Not NHN's: its guides say a repeated idempotency key fails the request without naming the code.
DUPLICATE_CODE = -9010
# Not NHN's either: the fake's answer to an MMS naming a file it never uploaded, or a bad upload.
UNKNOWN_FILE_CODE = -9011
BAD_FILE_CODE = -9012
MAX_FILE_BYTES = 300 * 1024
_KAKAO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}$")
_SMS_DATE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
_PLACEHOLDER = re.compile(r"#\{([^{}#]+)\}")


def _header(code: int = 0, message: str = "SUCCESS") -> dict[str, Any]:
    return {"resultCode": code, "resultMessage": message, "isSuccessful": code == 0}


class FakeNhn(GatewayFake):
    """See the module docstring. ``templates``: code -> registered text. ``kakao_unreachable``: numbers
    without KakaoTalk (AlimTalk fails with 3018, then the fallback text is sent if asked for).
    ``undeliverable``: numbers whose text messages fail at the carrier."""

    name = "nhn"

    def __init__(self, *, templates: dict[str, str] | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.templates = dict(templates or {})
        self.kakao_unreachable: set[str] = set()
        self.undeliverable: set[str] = set()
        self.senders = {"0212345678"}
        self._ids = itertools.count(1)
        self.files: dict[int, bytes] = {}
        self.idempotency_window = 600.0
        self.webhook_signature = "nhn-webhook-signature"
        self.webhooks: list[dict[str, Any]] = []
        self._hooks = itertools.count(1)
        self._keys: dict[str, float] = {}
        self._results: dict[str, list[dict[str, Any]]] = {}

    def config(self) -> dict[str, str]:
        """The ``providers.nhn`` settings that authenticate against this fake."""
        return {
            "alimtalkAppKey": APP_KEY,
            "alimtalkSecretKey": SECRET_KEY,
            "senderKey": SENDER_KEY,
            "smsAppKey": SMS_APP_KEY,
            "smsSecretKey": SMS_SECRET_KEY,
            "alimtalkBaseUrl": self.base_url,
            "smsBaseUrl": self.base_url,
        }

    def webhook_headers(self, signature: str | None = None) -> dict[str, str]:
        return {
            "Content-Type": "application/json;charset=UTF-8",
            "X-Toast-Webhook-Signature": self.webhook_signature if signature is None else signature,
        }

    def _envelope(self, event: str, hooks: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "hooksId": f"2026{next(self._hooks):020d}",
            "webhookConfigId": "fake-webhook-config",
            "productName": "SMS",
            "appKey": SMS_APP_KEY,
            "event": event,
            "hooks": hooks,
        }

    def unsubscribe(self, number: str) -> dict[str, Any]:
        """The webhook call NHN makes when ``number`` calls the 080 opt-out line."""
        hook = {
            "hookId": f"2026{next(self._hooks):020d}",
            "recipientNo": number,
            "unsubscribeNo": "0801234567",
            "enterpriseName": "magpie",
            "createdDateTime": "2026-11-26T12:00:00.000+09:00",
        }
        return self._envelope("UNSUBSCRIBE", [hook])

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/alimtalk/v2.3/appkeys/{appkey}/messages", self._kakao)
        app.router.add_post("/friendtalk/v2.3/appkeys/{appkey}/messages", self._kakao)
        app.router.add_get("/alimtalk/v2.3/appkeys/{appkey}/messages", self._kakao_results)
        app.router.add_get("/friendtalk/v2.3/appkeys/{appkey}/messages", self._kakao_results)
        app.router.add_post("/sms/v3.0/appKeys/{appkey}/sender/{kind}", self._sms)
        app.router.add_get("/sms/v3.0/appKeys/{appkey}/sender/{kind}", self._sms_list)
        app.router.add_post("/sms/v3.0/appKeys/{appkey}/attachfile/binaryUpload", self._upload)
        app.router.add_get("/sms/v3.0/appKeys/{appkey}/sender/{kind}/{request_id}", self._sms_results)

    # -- authentication and idempotency ----------------------------------------------------------

    @staticmethod
    def _auth(request: web.Request, app_key: str, secret: str) -> web.Response | None:
        if request.match_info["appkey"] != app_key:
            return web.json_response({"header": _header(-1000, "Invalid appKey")})
        if request.headers.get("X-Secret-Key") != secret:
            return web.json_response({"header": _header(-1001, "Invalid secretKey")})
        return None

    async def _idempotent(self, request: web.Request, handle: Any) -> web.StreamResponse:
        """A key seen in the last 10 minutes fails the request, as NHN documents it."""
        failure = await self.before_send()
        if failure is not None:
            return failure
        key = request.headers.get("X-NC-API-IDEMPOTENCY-KEY")
        if key is not None:
            now = time.monotonic()
            seen = self._keys.get(key)
            if seen is not None and now - seen < self.idempotency_window:
                return web.json_response({"header": _header(DUPLICATE_CODE, "Duplicated request")})
            self._keys[key] = now
        doc = await request.json()
        status, body = handle(doc)
        await self.after_accept(request)
        return web.json_response(body, status=status)

    def _listing(self, request: web.Request, kinds: set[str], date: re.Pattern[str]) -> list[dict[str, Any]] | None:
        """Rows held for a list query: by requestId, or by request dates (both required) and grouping keys."""
        query = request.query
        if "requestId" in query:
            rows = list(self._results.get(query["requestId"], []))
        elif date.match(query.get("startRequestDate", "")) and date.match(query.get("endRequestDate", "")):
            start, end = (datetime.fromisoformat(query[k]) for k in ("startRequestDate", "endRequestDate"))
            if not timedelta(0) <= end - start <= timedelta(days=30):
                return None  # AlimTalk v2.3: the request date range is at most 30 days
            rows = [r for stored in self._results.values() for r in stored]
        else:
            return None
        rows = [r for r in rows if r["_kind"] in kinds]
        for field in ("senderGroupingKey", "recipientGroupingKey"):
            if field in query:
                rows = [r for r in rows if r.get(field) == query[field]]
        page, size = int(query.get("pageNum", "1")), int(query.get("pageSize", "15"))
        return [{k: v for k, v in r.items() if k != "_kind"} for r in rows[(page - 1) * size : page * size]]

    # -- KakaoTalk ------------------------------------------------------------------------------------

    async def _kakao(self, request: web.Request) -> web.StreamResponse:
        refused = self._auth(request, APP_KEY, SECRET_KEY)
        if refused is not None:
            return refused
        service = request.path.split("/")[1]
        return await self._idempotent(request, lambda doc: self._take_kakao(service, doc))

    def _take_kakao(self, service: str, doc: Any) -> tuple[int, Any]:
        if doc.get("senderKey") != SENDER_KEY:
            return 200, {"header": _header(-2017, "Not exist sender")}
        code = doc.get("templateCode")
        if service == "alimtalk" and code not in self.templates:
            return 200, {"header": _header(-3003, "Not exist template")}
        request_id = f"2026{next(self._ids):012d}"
        results, accepted, stored = [], [], []
        for seq, r in enumerate(doc.get("recipientList") or [], start=1):
            number = str(r.get("recipientNo"))
            if service == "alimtalk":
                params = r.get("templateParameter") or {}
                try:
                    text = _PLACEHOLDER.sub(lambda m, p=params: str(p[m.group(1)]), self.templates[code])
                except KeyError:
                    results.append(
                        {
                            "recipientSeq": seq,
                            "recipientNo": number,
                            "resultCode": -3004,
                            "resultMessage": "Invalid template parameter",
                            "recipientGroupingKey": r.get("recipientGroupingKey"),
                        }
                    )
                    continue
            else:
                text = str(r.get("content") or "")
            results.append(
                {
                    "recipientSeq": seq,
                    "recipientNo": number,
                    "resultCode": 0,
                    "resultMessage": "SUCCESS",
                    "recipientGroupingKey": r.get("recipientGroupingKey"),
                }
            )
            accepted.append(Accepted(number, service, text, f"{request_id}:{seq}", dict(r)))
            resend = r.get("resendParameter") or {}
            unreachable = number in self.kakao_unreachable
            stored.append(
                {
                    "_kind": service,
                    "requestId": request_id,
                    "recipientSeq": seq,
                    "recipientNo": number,
                    "senderGroupingKey": doc.get("senderGroupingKey"),
                    "messageStatus": "FAILED" if unreachable else "COMPLETED",
                    "resultCode": "3018" if unreachable else "1000",
                    "resendStatus": ("RSC04" if unreachable and resend.get("isResend") else "RSC01"),
                    "recipientGroupingKey": r.get("recipientGroupingKey"),
                }
            )
            if unreachable and resend.get("isResend"):
                accepted.append(
                    Accepted(
                        number, "fallback", str(resend.get("resendContent")), f"{request_id}:{seq}:r", dict(resend)
                    )
                )
        self._take(accepted)
        self._results[request_id] = stored
        header = _header() if any(r["resultCode"] == 0 for r in results) else _header(-2999, "All recipients failed")
        return 200, {"header": header, "message": {"requestId": request_id, "sendResults": results}}

    async def _kakao_results(self, request: web.Request) -> web.StreamResponse:
        refused = self._auth(request, APP_KEY, SECRET_KEY)
        if refused is not None:
            return refused
        if "requestId" not in request.query:
            failure = self.before_query()
            if failure is not None:
                return failure
        service = request.path.split("/")[1]
        rows = self._listing(request, {service}, _KAKAO_DATE)
        if rows is None:
            return web.json_response({"header": _header(-2000, "requestId or startRequestDate/endRequestDate")})
        return web.json_response(
            {"header": _header(), "messageSearchResultResponse": {"messages": rows, "totalCount": len(rows)}}
        )

    # -- SMS ------------------------------------------------------------------------------------------

    async def _sms(self, request: web.Request) -> web.StreamResponse:
        refused = self._auth(request, SMS_APP_KEY, SMS_SECRET_KEY)
        if refused is not None:
            return refused
        kind = request.match_info["kind"]
        return await self._idempotent(request, lambda doc: self._take_sms(kind, doc))

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        """attachfile/binaryUpload: a JPEG (jpg/jpeg name, at most 300 KB) as Base64 in ``fileBody``."""
        refused = self._auth(request, SMS_APP_KEY, SMS_SECRET_KEY)
        if refused is not None:
            return refused
        doc = await request.json()
        name = str(doc.get("fileName") or "")
        try:
            data = base64.b64decode(str(doc.get("fileBody") or ""), validate=True)
        except binascii.Error:
            data = b""
        if not name.endswith((".jpg", ".jpeg")) or not doc.get("createUser") or len(name) > 45:
            return web.json_response({"header": _header(BAD_FILE_CODE, "fileName (jpg, jpeg) and createUser")})
        if not data.startswith(b"\xff\xd8\xff") or len(data) > MAX_FILE_BYTES:
            return web.json_response({"header": _header(BAD_FILE_CODE, "fileBody: a JPEG of at most 300 KB")})
        file_id = next(self._ids)
        self.files[file_id] = data
        body = {"data": {"fileId": file_id, "fileName": name, "filePath": f"0/fake/{file_id}"}}
        return web.json_response({"header": _header(), "body": body})

    def _take_sms(self, kind: str, doc: Any) -> tuple[int, Any]:
        if doc.get("sendNo") not in self.senders:
            return 200, {"header": _header(-1003, "Unregistered send number")}
        files = doc.get("attachFileIdList") or []
        if any(f not in self.files for f in files) or (files and not kind.endswith("mms")):
            return 200, {"header": _header(UNKNOWN_FILE_CODE, "attachFileIdList names no uploaded file")}
        text = str(doc.get("body") or "")
        if kind.startswith("ad-") and not (text.startswith("(광고)") and "080" in text):
            return 200, {"header": _header(-2002, "An advertisement needs (광고) and a free opt-out number")}
        size = sum(1 if ord(c) < 0x80 else 2 for c in text)
        if size > (90 if kind.endswith("sms") else 2000):
            return 200, {"header": _header(-2000, "Body is too long")}
        request_id = f"2026{next(self._ids):012d}"
        results, accepted, stored = [], [], []
        for seq, r in enumerate(doc.get("recipientList") or [], start=1):
            number = str(r.get("recipientNo"))
            results.append(
                {
                    "recipientNo": number,
                    "resultCode": 0,
                    "resultMessage": "SUCCESS",
                    "recipientSeq": seq,
                    "recipientGroupingKey": r.get("recipientGroupingKey"),
                }
            )
            fields: dict[str, Any] = {"title": doc.get("title")}
            if files:
                fields["images"] = [hashlib.sha256(self.files[f]).hexdigest() for f in files]
            accepted.append(Accepted(number, kind, text, f"{request_id}:{seq}", fields))
            failed = number in self.undeliverable
            stored.append(
                {
                    "_kind": kind.removeprefix("ad-"),
                    "requestId": request_id,
                    "recipientSeq": seq,
                    "recipientNo": number,
                    "senderGroupingKey": doc.get("senderGroupingKey"),
                    "msgStatus": "0" if failed else "3",
                    "resultCode": "3015" if failed else "1000",
                    "recipientGroupingKey": r.get("recipientGroupingKey"),
                }
            )
        self._take(accepted)
        self._results[request_id] = stored
        sender_type = ("AD_" if kind.startswith("ad-") else "NORMAL_") + kind.removeprefix("ad-").upper()
        hooks = [
            {
                "hookId": f"2026{next(self._hooks):020d}",
                "senderType": sender_type,
                "requestId": request_id,
                "recipientSeq": row["recipientSeq"],
                "requestDate": "2026-11-26T12:00:00",
                "receiveDate": "2026-11-26T12:00:02",
                "sendNo": doc.get("sendNo"),
                "recipientNo": row["recipientNo"],
                "messageStatus": "FAILED" if row["msgStatus"] == "0" else "COMPLETED",
                "recipientGroupingKey": row["recipientGroupingKey"],
                "senderGroupingKey": row["senderGroupingKey"],
                "resultCode": row["resultCode"],
            }
            for row in stored
        ]
        self.webhooks.append(self._envelope("MESSAGE_RESULT_UPDATE", hooks))
        data = {"requestId": request_id, "statusCode": "2", "sendResultList": results}
        return 200, {"header": _header(), "body": {"data": data}}

    async def _sms_list(self, request: web.Request) -> web.StreamResponse:
        refused = self._auth(request, SMS_APP_KEY, SMS_SECRET_KEY)
        if refused is not None:
            return refused
        failure = self.before_query()
        if failure is not None:
            return failure
        rows = self._listing(request, {request.match_info["kind"]}, _SMS_DATE)
        if rows is None:
            return web.json_response({"header": _header(-2000, "requestId or startRequestDate/endRequestDate")})
        return web.json_response({"header": _header(), "body": {"totalCount": len(rows), "data": rows}})

    async def _sms_results(self, request: web.Request) -> web.StreamResponse:
        """One message: ``/sender/{kind}/{requestId}?recipientSeq=`` (required) answers ``body.data`` as an object."""
        refused = self._auth(request, SMS_APP_KEY, SMS_SECRET_KEY)
        if refused is not None:
            return refused
        seq = request.query.get("recipientSeq")
        rows = [r for r in self._results.get(request.match_info["request_id"], []) if str(r["recipientSeq"]) == seq]
        if seq is None or not rows:
            return web.json_response({"header": _header(-2000, "recipientSeq is required")})
        return web.json_response(
            {"header": _header(), "body": {"data": {k: v for k, v in rows[0].items() if k != "_kind"}}}
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.nhn", description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--templates", default="{}", help="JSON object: template code -> registered text")
    parser.add_argument("--quiet", action="store_true", help="count requests but do not record messages")
    args = parser.parse_args(argv)
    fake = FakeNhn(templates=json.loads(args.templates), port=args.port, record=not args.quiet)
    asyncio.run(serve_until_signalled(fake))
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
