"""A fake Solapi messages v4 on 127.0.0.1: ``send-many/detail``, ``list``, and delivery reports.

It verifies ``Authorization: HMAC-SHA256 apiKey=…, date=…, salt=…, signature=…`` on its own (field
names in any case; a date more than 15 minutes off its clock, an unknown key, a reused salt or a wrong
signature answer 401 with Solapi's error codes), refuses unregistered sender numbers and AlimTalk text
that does not match its template per message in ``failedMessageList``, and can POST delivery reports.
For benchmarks: ``python -m tests.fakes.solapi --port 0`` prints ``READY <port>``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hashlib
import hmac
import itertools
import json
import re
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from tests.fakes.gateway import Accepted, GatewayFake
from tests.fakes.server import serve_until_signalled

API_KEY = "NCSFAKEAPIKEY001"
API_SECRET = "FAKESECRETFAKESECRETFAKESECRET12"
PF_ID = "KA01PF000000000000000000000001"
_PLACEHOLDER = re.compile(r"#\{([^{}#]+)\}")
TYPES = {"SMS", "LMS", "MMS", "ATA", "BMS_FREE"}
# Brand message template types: valid, but only with a registered brand message template (templateId).
TEMPLATE_BMS = {"BMS_TEXT", "BMS_IMAGE", "BMS_WIDE", "BMS_WIDE_ITEM_LIST", "BMS_CAROUSEL_FEED", "BMS_PREMIUM_VIDEO"}
MAX_MMS_FILE_BYTES = 200 * 1024
MAX_BMS_FILE_BYTES = 500 * 1024
BUBBLES = {"TEXT", "IMAGE", "WIDE", "WIDE_ITEM_LIST", "COMMERCE", "CAROUSEL_FEED", "CAROUSEL_COMMERCE", "PREMIUM_VIDEO"}
# Solapi's message status codes (its "메시지 상태 코드" table) the fake answers with.
MISSING_FIELD = "1010"  # 필수 입력 값 미입력
BAD_TYPE = "1025"  # 잘못된 메시지 타입
UNKNOWN_IMAGE = "1034"  # imageId가 존재하지 않습니다
BAD_PFID = "1041"  # 유효한 플러스 친구 값이 아닙니다
BAD_TEMPLATE = "1042"  # 유효한 템플릿 아이디가 아닙니다
TEMPLATE_MISMATCH = "1043"  # 등록한 템플릿과 내용이 다릅니다
UNREGISTERED_SENDER = "1062"  # 발신번호 미등록
KAKAO_NON_USER = "3104"  # 카카오톡 미사용자
SMS_TIMEOUT = "3040"  # 전송시간 초과


class FakeSolapi(GatewayFake):
    """See the module docstring. ``templates``: templateId -> registered text; ``undeliverable``:
    numbers whose reports say the message did not arrive (3104 for Kakao messages, 3040 for texts);
    ``report_url``: where reports are POSTed."""

    name = "solapi"

    def __init__(
        self, *, templates: dict[str, str] | None = None, clock: Callable[[], float] = time.time, **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.templates = dict(templates or {})
        self.clock = clock
        self.senders = {"0212345678"}
        self.undeliverable: set[str] = set()
        self.report_url: str | None = None
        self.reports: list[list[dict[str, Any]]] = []
        self._salts: set[str] = set()
        self._ids = itertools.count(1)
        self._messages: dict[str, dict[str, Any]] = {}
        self.list_limit = 100  # the most messages one page of /messages/v4/list holds
        self.files: dict[str, bytes] = {}
        self.file_types: dict[str, str] = {}

    def config(self) -> dict[str, str]:
        return {"apiKey": API_KEY, "apiSecret": API_SECRET, "pfId": PF_ID, "baseUrl": self.base_url}

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/messages/v4/send-many/detail", self._send)
        app.router.add_get("/messages/v4/list", self._list)
        app.router.add_post("/storage/v1/files", self._upload)

    def _refuse(self, request: web.Request) -> web.Response | None:
        value = request.headers.get("authorization", "")
        scheme, _, rest = value.partition(" ")
        fields = {}
        for part in rest.split(","):
            k, sep, v = part.strip().partition("=")
            if sep:
                fields[k.lower()] = v
        code = None
        if scheme != "HMAC-SHA256" or not {"apikey", "date", "salt", "signature"} <= set(fields):
            code = "InvalidAuthorization"
        elif fields["apikey"] != API_KEY:
            code = "InvalidAPIKey"
        else:
            try:
                when = datetime.fromisoformat(fields["date"].replace("Z", "+00:00")).timestamp()
            except ValueError:
                when = 0.0
            expected = hmac.new(API_SECRET.encode(), (fields["date"] + fields["salt"]).encode(), hashlib.sha256)
            if abs(self.clock() - when) > 15 * 60:
                code = "RequestTimeTooSkewed"
            elif not hmac.compare_digest(expected.hexdigest(), fields["signature"]):
                code = "SignatureDoesNotMatch"
            elif fields["salt"] in self._salts:
                code = "DuplicatedSignature"
            else:
                self._salts.add(fields["salt"])
        if code is None:
            return None
        return web.json_response({"errorCode": code, "errorMessage": f"{code}: authentication failed"}, status=401)

    async def _send(self, request: web.Request) -> web.StreamResponse:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        failure = await self.before_send()
        if failure is not None:
            return failure
        doc = await request.json()
        group_id = f"G4V2026{next(self._ids):014d}"
        failed, listed, accepted, reports = [], [], [], []
        for m in doc.get("messages") or []:
            message_id = f"M4V2026{next(self._ids):014d}"
            code, text = self._check(m)
            item = {
                "to": m.get("to"),
                "from": m.get("from"),
                "type": m.get("type"),
                "country": "82",
                "messageId": message_id,
                "customFields": m.get("customFields") or {},
            }
            if code is not None:
                failed.append({**item, "statusCode": code, "statusMessage": "refused", "accountId": "1"})
                continue
            listed.append({**item, "statusCode": "2000", "statusMessage": "정상 접수(이통사로 접수 예정)"})
            accepted.append(Accepted(str(m.get("to")), str(m.get("type")), text, message_id, dict(m)))
            failure = KAKAO_NON_USER if str(m.get("type")) in ("ATA", "BMS_FREE") else SMS_TIMEOUT
            final = failure if m.get("to") in self.undeliverable else "4000"
            self._messages[message_id] = {
                **item,
                "_id": message_id,
                "groupId": group_id,
                "statusCode": final,
                "text": text,
            }
            data = {**item, "groupId": group_id, "statusCode": final, "dateReceived": "2026-11-26T00:00:00Z"}
            # Solapi's single report: the message under "data", with the event's id and retry count.
            reports.append({"eventDataId": f"ED{message_id}", "data": data, "retryCount": 0})
        self._take(accepted)
        await self.after_accept(request)
        if reports and self.report_url:
            asyncio.get_running_loop().create_task(self._report(reports))
        self.reports.append(reports)
        count = {"total": len(listed) + len(failed), "registeredFailed": len(failed), "registeredSuccess": len(listed)}
        body = {
            "failedMessageList": failed,
            "groupInfo": {"groupId": group_id, "status": "SENDING", "count": count},
            "messageList": listed,
        }
        return web.json_response(body)

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        """storage/v1/files: ``file`` (Base64), ``name``, ``type``; an MMS file is a JPEG of at most 200 KB."""
        refused = self._refuse(request)
        if refused is not None:
            return refused
        doc = await request.json()
        try:
            data = base64.b64decode(str(doc.get("file") or ""), validate=True)
        except binascii.Error:
            data = b""
        limit = {"MMS": MAX_MMS_FILE_BYTES, "BMS": MAX_BMS_FILE_BYTES}.get(str(doc.get("type")))
        if limit is None or not data.startswith(b"\xff\xd8\xff") or len(data) > limit:
            return web.json_response(
                {"errorCode": "ValidationError", "errorMessage": "type MMS or BMS: a JPEG within its size"}, status=400
            )
        file_id = f"ST01FZ2026{next(self._ids):014d}"
        self.files[file_id] = data
        self.file_types[file_id] = str(doc["type"])
        return web.json_response(
            {"fileId": file_id, "type": doc.get("type"), "name": doc.get("name"), "originalName": doc.get("name")}
        )

    def _check(self, m: dict[str, Any]) -> tuple[str | None, str]:
        text = str(m.get("text") or "")
        kind = m.get("type")
        if kind in TEMPLATE_BMS and not (m.get("kakaoOptions") or {}).get("templateId"):
            return MISSING_FIELD, text
        if kind not in TYPES:
            return BAD_TYPE, text
        if kind == "MMS" and self.file_types.get(str(m.get("imageId"))) != "MMS":
            return UNKNOWN_IMAGE, text
        if m.get("from") not in self.senders:
            return UNREGISTERED_SENDER, text
        if kind in ("ATA", "BMS_FREE"):
            options = m.get("kakaoOptions") or {}
            if options.get("pfId") != PF_ID:
                return BAD_PFID, text
            if kind == "ATA":
                template = self.templates.get(str(options.get("templateId")))
                if template is None:
                    return BAD_TEMPLATE, text
                variables = options.get("variables") or {}
                try:
                    filled = _PLACEHOLDER.sub(lambda g: str(variables["#{" + g.group(1) + "}"]), template)
                except KeyError:
                    return MISSING_FIELD, text
                if filled != text:
                    return TEMPLATE_MISMATCH, text
            else:
                bms = options.get("bms") or {}
                if bms.get("targeting") not in ("I", "M", "N") or bms.get("chatBubbleType") not in BUBBLES:
                    return MISSING_FIELD, text
                if bms["chatBubbleType"] == "IMAGE" and self.file_types.get(str(bms.get("imageId"))) != "BMS":
                    return UNKNOWN_IMAGE, text
        return None, text

    async def _report(self, reports: list[dict[str, Any]]) -> None:
        import aiohttp

        async with aiohttp.ClientSession() as session, session.post(str(self.report_url), json=reports) as response:
            await response.read()

    async def _list(self, request: web.Request) -> web.StreamResponse:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        failure = self.before_query()
        if failure is not None:
            return failure
        criteria, value = request.query.get("criteria"), request.query.get("value")
        newest_first = [k for k, v in reversed(self._messages.items()) if criteria == "to" and v.get("to") == value]
        start = request.query.get("startKey")
        if start in newest_first:
            newest_first = newest_first[newest_first.index(start) :]
        limit = min(int(request.query.get("limit", "20")), self.list_limit)
        page, rest = newest_first[:limit], newest_first[limit:]
        body: dict[str, Any] = {"startKey": start, "limit": limit, "messageList": {k: self._messages[k] for k in page}}
        if rest:
            body["nextKey"] = rest[0]
        return web.json_response(body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.solapi", description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--templates", default="{}", help="JSON object: templateId -> registered text")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    fake = FakeSolapi(templates=json.loads(args.templates), port=args.port, record=not args.quiet)
    asyncio.run(serve_until_signalled(fake))
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
