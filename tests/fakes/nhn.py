"""A fake NHN Cloud on 127.0.0.1: KakaoTalk Bizmessage AlimTalk and FriendTalk v2.3, SMS v3.0.

It checks the app key in the path and ``X-Secret-Key`` (answering NHN's -1000/-1001 result codes),
fills registered AlimTalk templates from ``templateParameter`` (-3004 when a placeholder has no value),
replays the first answer for a repeated ``X-NC-API-IDEMPOTENCY-KEY``, and answers result polls.
For benchmarks: ``python -m tests.fakes.nhn --port 0`` prints ``READY <port>``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import sys
from typing import Any

from aiohttp import web

from tests.fakes.gateway import Accepted, GatewayFake
from tests.fakes.server import serve_until_signalled

APP_KEY = "nhn-app-key"
SECRET_KEY = "nhn-secret-key"
SMS_APP_KEY = "nhn-sms-app-key"
SMS_SECRET_KEY = "nhn-sms-secret-key"
SENDER_KEY = "a" * 40
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
        self._replays: dict[str, asyncio.Future[tuple[int, Any]]] = {}
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

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/alimtalk/v2.3/appkeys/{appkey}/messages", self._kakao)
        app.router.add_post("/friendtalk/v2.3/appkeys/{appkey}/messages", self._kakao)
        app.router.add_get("/alimtalk/v2.3/appkeys/{appkey}/messages", self._kakao_results)
        app.router.add_get("/friendtalk/v2.3/appkeys/{appkey}/messages", self._kakao_results)
        app.router.add_post("/sms/v3.0/appKeys/{appkey}/sender/{kind}", self._sms)
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
        """A repeated key gets the first answer; a repeat while the first is still being handled waits
        for it, as an idempotency store that locks the key does."""
        key = request.headers.get("X-NC-API-IDEMPOTENCY-KEY")
        if key is not None:
            first = self._replays.get(key)
            if first is not None:
                status, body = await first
                return web.json_response(body, status=status)
        failure = await self.before_send()
        if failure is not None:
            return failure
        answer: asyncio.Future[tuple[int, Any]] = asyncio.get_running_loop().create_future()
        if key is not None:
            self._replays[key] = answer
        doc = await request.json()
        status, body = handle(doc)
        answer.set_result((status, body))
        await self.after_accept(request)
        return web.json_response(body, status=status)

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
                    "requestId": request_id,
                    "recipientSeq": seq,
                    "recipientNo": number,
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
        rows = self._results.get(request.query.get("requestId", ""), [])
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

    def _take_sms(self, kind: str, doc: Any) -> tuple[int, Any]:
        if doc.get("sendNo") not in self.senders:
            return 200, {"header": _header(-1003, "Unregistered send number")}
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
            accepted.append(Accepted(number, kind, text, f"{request_id}:{seq}", {"title": doc.get("title")}))
            failed = number in self.undeliverable
            stored.append(
                {
                    "requestId": request_id,
                    "recipientSeq": seq,
                    "recipientNo": number,
                    "msgStatus": "0" if failed else "3",
                    "resultCode": "3015" if failed else "1000",
                    "recipientGroupingKey": r.get("recipientGroupingKey"),
                }
            )
        self._take(accepted)
        self._results[request_id] = stored
        data = {"requestId": request_id, "statusCode": "2", "sendResultList": results}
        return 200, {"header": _header(), "body": {"data": data}}

    async def _sms_results(self, request: web.Request) -> web.StreamResponse:
        refused = self._auth(request, SMS_APP_KEY, SMS_SECRET_KEY)
        if refused is not None:
            return refused
        rows = self._results.get(request.match_info["request_id"], [])
        return web.json_response({"header": _header(), "body": {"data": rows}})


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
