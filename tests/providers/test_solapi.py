"""SolapiGateway against the fake Solapi: HMAC authorization, message types, failedMessageList,
reconciliation before a retry, and delivery reports."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import aiohttp
import pytest

from magpie.providers.base import Fallback, PhoneMessage, ProviderRejected, ProviderUnavailable
from magpie.providers.http import ImageFetcher
from magpie.providers.solapi import SolapiGateway, authorization, parse_report, verify_authorization
from tests.fakes.gateway import JPEG
from tests.fakes.solapi import API_KEY, API_SECRET, FakeSolapi
from tests.providers.phone_messages import TEMPLATE, sms
from tests.providers.phone_messages import alimtalk as _alimtalk

T = TypeVar("T")


@pytest.fixture
def solapi() -> Iterator[FakeSolapi]:
    with FakeSolapi(templates={"KA01TP1": TEMPLATE}) as fake:
        yield fake


def alimtalk(delivery: str, to: str = "+821011112222", **changes: Any) -> PhoneMessage:
    return _alimtalk(delivery, to, template_code="KA01TP1", **changes)


def run(
    solapi: FakeSolapi,
    body: Callable[[SolapiGateway], Awaitable[T]],
    *,
    clock: Callable[[], float] = time.time,
    **config: Any,
) -> T:
    async def main() -> T:
        # The fake serves images from loopback: allowed explicitly, as MAGPIE_FETCH_ALLOW_CIDRS would.
        images = ImageFetcher(allow=[ipaddress.ip_network("127.0.0.0/8")])
        gateway = SolapiGateway(
            config={**solapi.config(), **config}, sender_number="02-1234-5678", images=images, clock=clock
        )
        try:
            return await body(gateway)
        finally:
            await gateway.aclose()
            await images.aclose()

    return asyncio.run(main())


def test_authorization_round_trips_and_field_names_are_case_insensitive() -> None:
    now = 1_800_000_000.0
    header = authorization(api_key="k", secret="s", now=now, salt="abc")
    assert header.startswith("HMAC-SHA256 apiKey=k, date=2027-01-15T08:00:00.000Z, salt=abc, signature=")
    assert verify_authorization(header, secrets_by_key={"k": "s"}, now=now) is None
    shouting = header.replace("apiKey=", "APIKEY=").replace("signature=", "Signature=")
    assert verify_authorization(shouting, secrets_by_key={"k": "s"}, now=now) is None
    assert verify_authorization(header, secrets_by_key={"k": "other"}, now=now) == "SignatureDoesNotMatch"
    assert verify_authorization(header, secrets_by_key={"k": "s"}, now=now + 16 * 60) == "RequestTimeTooSkewed"


def test_send_many_detail_carries_types_kakao_options_and_our_delivery_ids(solapi: FakeSolapi) -> None:
    lms = sms("d3", "+821055556666", text="긴 문자 " * 20, kind="LMS", title="공지")
    results = run(solapi, lambda g: g.send_batch([alimtalk("d1"), sms("d2", "+821033334444"), lms], batch_key="b"))
    assert [r.status for r in results] == ["SENT", "SENT", "SENT"]
    assert all(r.provider_message_id and r.provider_message_id.startswith("M4V") for r in results)
    ata, text, long = (a.fields for a in solapi.accepted)
    assert (ata["type"], text["type"], long["type"]) == ("ATA", "SMS", "LMS")
    assert ata["kakaoOptions"]["variables"] == {"#{name}": "홍길동", "#{order}": "A-1"}
    assert ata["kakaoOptions"]["disableSms"] is True
    assert ata["kakaoOptions"]["buttons"] == [
        {"buttonType": "WL", "buttonName": "배송 조회", "linkMo": "https://shop.example/o/A-1"}
    ]
    assert long["subject"] == "공지" and ata["customFields"] == {"magpieDeliveryId": "d1"}
    assert solapi.send_requests == 1


def test_failed_message_list_fails_only_those_messages_with_solapi_codes(solapi: FakeSolapi) -> None:
    wrong_text = alimtalk("d2", "+821033334444", text="다른 문장")
    results = run(solapi, lambda g: g.send_batch([alimtalk("d1"), wrong_text], batch_key="b"))
    assert (results[0].status, results[1].status, results[1].error_code) == ("SENT", "FAILED", "SOLAPI_1043")


@pytest.mark.parametrize(
    ("config", "clock", "code"),
    [
        pytest.param({"apiSecret": "wrong"}, time.time, "SOLAPI_SignatureDoesNotMatch", id="wrong-secret"),
        pytest.param({"apiKey": "NOPE"}, time.time, "SOLAPI_InvalidAPIKey", id="unknown-key"),
        pytest.param({}, lambda: time.time() - 20 * 60, "SOLAPI_RequestTimeTooSkewed", id="clock-20-minutes-slow"),
    ],
)
def test_refused_authorization_is_a_clear_provider_error(
    solapi: FakeSolapi, config: dict[str, str], clock: Callable[[], float], code: str
) -> None:
    with pytest.raises(ProviderRejected) as info:
        run(solapi, lambda g: g.send_batch([sms("d1")], batch_key="b"), clock=clock, **config)
    assert info.value.code == code
    assert "refused the credentials" in info.value.message
    assert solapi.accepted == []


def test_clock_skew_within_fifteen_minutes_is_accepted(solapi: FakeSolapi) -> None:
    results = run(solapi, lambda g: g.send_batch([sms("d1")], batch_key="b"), clock=lambda: time.time() - 14 * 60)
    assert results[0].status == "SENT"


def test_a_replayed_signature_is_refused(solapi: FakeSolapi) -> None:
    header = authorization(api_key=API_KEY, secret=API_SECRET, now=time.time(), salt="same-salt")

    async def post() -> tuple[int, Any]:
        async with aiohttp.ClientSession() as session:
            answers = []
            for _ in range(2):
                async with session.post(
                    f"{solapi.base_url}/messages/v4/send-many/detail",
                    json={"messages": []},
                    headers={"authorization": header},
                ) as response:
                    answers.append((response.status, await response.json()))
            return answers[1]

    status, doc = asyncio.run(post())
    assert (status, doc["errorCode"]) == (401, "DuplicatedSignature")


def test_retry_after_an_accepted_but_unanswered_batch_asks_first_and_sends_nothing_twice(solapi: FakeSolapi) -> None:
    solapi.drop_after_accept = 1
    batch = [alimtalk("d1"), sms("d2", "+821033334444"), sms("d3", "+821033334444", text="둘째")]
    with pytest.raises(ProviderUnavailable):
        run(solapi, lambda g: g.send_batch(batch, batch_key="b"))
    assert len(solapi.accepted) == 3
    results = run(solapi, lambda g: g.send_batch([*batch, sms("d4", "+821077778888")], batch_key="b", maybe_sent=True))
    assert [r.status for r in results] == ["SENT"] * 4
    assert solapi.sent_twice() == []
    assert len(solapi.accepted) == 4
    first = {a.fields["customFields"]["magpieDeliveryId"]: a.message_id for a in solapi.accepted}
    assert {r.delivery_id: r.provider_message_id for r in results} == first


def test_5xx_is_retryable(solapi: FakeSolapi) -> None:
    solapi.fail_5xx = 1
    with pytest.raises(ProviderUnavailable):
        run(solapi, lambda g: g.send_batch([sms("d1")], batch_key="b"))
    assert solapi.accepted == []


def test_fallback_rides_as_a_replacement_and_enables_sms(solapi: FakeSolapi) -> None:
    message = alimtalk("d1", fallback=Fallback(kind="LMS", text="주문 A-1 출발 안내", title="배송"))
    run(solapi, lambda g: g.send_batch([message], batch_key="b"))
    sent = solapi.accepted[0].fields
    assert sent["kakaoOptions"]["disableSms"] is False
    assert sent["replacements"] == [
        {"to": "01011112222", "from": "0212345678", "text": "주문 A-1 출발 안내", "type": "LMS", "subject": "배송"}
    ]


def test_delivery_reports_say_delivered_or_the_carrier_code(solapi: FakeSolapi) -> None:
    solapi.undeliverable.add("01033334444")
    run(solapi, lambda g: g.send_batch([sms("d1"), sms("d2", "+821033334444")], batch_key="b"))
    reports = {r.delivery_id: r for r in parse_report(solapi.reports[-1])}
    assert reports["d1"].delivered and reports["d1"].code == "4000"
    assert (reports["d2"].delivered, reports["d2"].code) == (False, "3040")
    assert parse_report([{"messageId": "M1", "statusCode": "3000"}]) == []  # still pending


def test_mms_uploads_its_image_to_storage_then_sends_its_image_id(solapi: FakeSolapi) -> None:
    url = solapi.image_url("sale.jpg", JPEG)
    mms = [sms(f"d{i}", f"+82101111000{i}", kind="MMS", title="봄 세일", image_urls=(url,)) for i in range(2)]
    results = run(solapi, lambda g: g.send_batch(mms, batch_key="b"))
    assert [r.status for r in results] == ["SENT", "SENT"]
    [(file_id, data)] = solapi.files.items()  # one upload for the image both messages carry
    assert data == JPEG
    assert [(a.kind, a.fields["imageId"], a.fields["subject"]) for a in solapi.accepted] == [
        ("MMS", file_id, "봄 세일")
    ] * 2


@pytest.mark.parametrize(
    ("images", "code"),
    [
        pytest.param({"a.jpg": JPEG, "b.jpg": JPEG}, "MMS_ONE_IMAGE_ONLY", id="two-images"),
        pytest.param({"big.jpg": JPEG + bytes(200 * 1024)}, "MMS_IMAGE_TOO_LARGE", id="over-200-kb"),
        pytest.param({"a.gif": b"GIF89a" + bytes(16)}, "MMS_IMAGE_NOT_JPEG", id="not-a-jpeg"),
    ],
)
def test_mms_image_solapi_cannot_take_fails_that_recipient_before_any_send(
    solapi: FakeSolapi, images: dict[str, bytes], code: str
) -> None:
    urls = tuple(solapi.image_url(name, data) for name, data in images.items())
    results = run(solapi, lambda g: g.send_batch([sms("d1", kind="MMS", image_urls=urls)], batch_key="b"))
    assert (results[0].status, results[0].error_code) == ("FAILED", code)
    assert solapi.send_requests == 0 and solapi.files == {}


def test_lookup_reports_a_message_refused_at_registration_as_failed(solapi: FakeSolapi) -> None:
    solapi.senders.clear()
    refused = run(solapi, lambda g: g.send_batch([sms("d1")], batch_key="b"))
    assert (refused[0].status, refused[0].error_code) == ("FAILED", "SOLAPI_1062")
    solapi.fail_queries = 1
    with pytest.raises(ProviderUnavailable):
        run(solapi, lambda g: g.lookup([sms("d1")], batch_key="b"))


def brand(delivery: str, **changes: Any) -> PhoneMessage:
    fields: dict[str, Any] = {
        "delivery_id": delivery,
        "to": "+821011112222",
        "channel": "kakao",
        "kind": "brand",
        "text": "겨울 세일이 시작됐어요",
        "buttons": ({"type": "WL", "name": "보러 가기", "linkMo": "https://shop.example/sale"},),
        "marketing": True,
    }
    return PhoneMessage(**{**fields, **changes})


def test_brand_message_is_free_form_bms_with_targeting_and_bubble(solapi: FakeSolapi) -> None:
    results = run(solapi, lambda g: g.send_batch([brand("d1")], batch_key="b"))
    assert results[0].status == "SENT"
    [sent] = solapi.accepted
    assert sent.kind == "BMS_FREE" and sent.text == "겨울 세일이 시작됐어요"
    assert sent.fields["kakaoOptions"]["bms"] == {
        "targeting": "I",
        "chatBubbleType": "TEXT",
        "buttons": [{"linkType": "WL", "name": "보러 가기", "linkMobile": "https://shop.example/sale"}],
    }


def test_brand_message_image_is_uploaded_as_bms_and_sent_as_an_image_bubble(solapi: FakeSolapi) -> None:
    url = solapi.image_url("sale.jpg", JPEG)
    results = run(solapi, lambda g: g.send_batch([brand("d1", image_urls=(url,))], batch_key="b"), bmsTargeting="M")
    assert results[0].status == "SENT"
    [(file_id, kind)] = solapi.file_types.items()
    bms = solapi.accepted[0].fields["kakaoOptions"]["bms"]
    assert (kind, bms["chatBubbleType"], bms["imageId"], bms["targeting"]) == ("BMS", "IMAGE", file_id, "M")


def test_fake_refuses_a_template_brand_type_without_its_template(solapi: FakeSolapi) -> None:
    async def post() -> Any:
        now = time.time()
        headers = {"Authorization": authorization(api_key=API_KEY, secret=API_SECRET, now=now)}
        message = {"to": "01011112222", "from": "0212345678", "text": "x", "type": "BMS_TEXT"}
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                solapi.base_url + "/messages/v4/send-many/detail", json={"messages": [message]}, headers=headers
            ) as response,
        ):
            return await response.json()

    doc = asyncio.run(post())
    assert doc["failedMessageList"][0]["statusCode"] == "1010"


def test_lookup_follows_the_message_list_past_its_first_page(solapi: FakeSolapi) -> None:
    solapi.list_limit = 2
    solapi.drop_after_accept = 1
    with pytest.raises(ProviderUnavailable):
        run(solapi, lambda g: g.send_batch([sms("d1")], batch_key="b"))
    # Newer messages to the same number push the batch's message off the first page.
    run(solapi, lambda g: g.send_batch([sms(f"n{i}", text=f"다른 문자 {i}") for i in range(5)], batch_key="later"))
    results = run(solapi, lambda g: g.send_batch([sms("d1")], batch_key="b", maybe_sent=True))
    assert results[0].status == "SENT"
    assert solapi.sent_twice() == [] and len(solapi.accepted) == 6
