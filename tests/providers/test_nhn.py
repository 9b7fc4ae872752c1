"""NhnGateway against the fake NHN Cloud: request shapes, authentication, per-recipient codes,
retries that ask NHN first, fallback texts and result polling."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from magpie.providers.base import Fallback, ProviderRejected, ProviderUnavailable
from magpie.providers.http import ImageFetcher
from magpie.providers.nhn import NhnGateway
from tests.fakes.gateway import JPEG
from tests.fakes.nhn import DUPLICATE_CODE, FakeNhn
from tests.providers.phone_messages import TEMPLATE, alimtalk, sms

T = TypeVar("T")


@pytest.fixture
def nhn() -> Iterator[FakeNhn]:
    with FakeNhn(templates={"ORDER_SHIPPED": TEMPLATE}) as fake:
        yield fake


def run(nhn: FakeNhn, body: Callable[[NhnGateway], Awaitable[T]], **config: Any) -> T:
    async def main() -> T:
        # The fake serves images from loopback: allowed explicitly, as MAGPIE_FETCH_ALLOW_CIDRS would.
        images = ImageFetcher(allow=[ipaddress.ip_network("127.0.0.0/8")])
        gateway = NhnGateway(
            config={**nhn.config(), **config}, sender_number="02-1234-5678", images=images, timeout=2.0
        )
        try:
            return await body(gateway)
        finally:
            await gateway.aclose()
            await images.aclose()

    return asyncio.run(main())


def test_alimtalk_posts_v23_recipient_list_with_template_parameters(nhn: FakeNhn) -> None:
    results = run(nhn, lambda g: g.send_batch([alimtalk("d1"), alimtalk("d2", "+821033334444")], batch_key="b1"))
    assert [r.status for r in results] == ["SENT", "SENT"]
    assert all(r.provider_message_id and r.provider_message_id.startswith("alimtalk:") for r in results)
    accepted = nhn.accepted
    assert [a.to for a in accepted] == ["01011112222", "01033334444"]
    assert accepted[0].text == "홍길동님, 주문 A-1이 출발했어요"
    assert accepted[0].fields["templateParameter"] == {"name": "홍길동", "order": "A-1"}
    assert accepted[0].fields["resendParameter"] == {"isResend": False}
    assert nhn.send_requests == 1


@pytest.mark.parametrize(
    ("config", "code"),
    [
        pytest.param({"alimtalkSecretKey": "wrong"}, "NHN_-1001", id="wrong-secret-key"),
        pytest.param({"alimtalkAppKey": "wrong"}, "NHN_-1000", id="wrong-app-key"),
    ],
)
def test_refused_credentials_are_a_clear_provider_error(nhn: FakeNhn, config: dict[str, str], code: str) -> None:
    with pytest.raises(ProviderRejected) as info:
        run(nhn, lambda g: g.send_batch([alimtalk("d1")], batch_key="b1"), **config)
    assert info.value.code == code
    assert "refused the credentials" in info.value.message
    assert nhn.accepted == []


def test_missing_template_parameter_fails_that_recipient_with_the_gateway_code(nhn: FakeNhn) -> None:
    bad = alimtalk("d2", "+821033334444", template_parameters={"name": "x"})
    results = run(nhn, lambda g: g.send_batch([alimtalk("d1"), bad], batch_key="b1"))
    assert (results[0].status, results[1].status, results[1].error_code) == ("SENT", "FAILED", "NHN_-3004")


def test_unknown_template_fails_every_recipient_of_the_request(nhn: FakeNhn) -> None:
    results = run(nhn, lambda g: g.send_batch([alimtalk("d1", template_code="NOPE")], batch_key="b1"))
    assert (results[0].status, results[0].error_code) == ("FAILED", "NHN_-3003")


def test_retry_after_a_dropped_answer_asks_nhn_first_and_sends_nothing_twice(nhn: FakeNhn) -> None:
    nhn.drop_after_accept = 1
    batch = [alimtalk("d1"), alimtalk("d2", "+821033334444"), sms("d3")]
    with pytest.raises(ProviderUnavailable):
        run(nhn, lambda g: g.send_batch(batch, batch_key="b1"))
    assert len(nhn.accepted) == 2  # NHN took the AlimTalk request; magpie never heard back
    results = run(nhn, lambda g: g.send_batch(batch, batch_key="b1", maybe_sent=True))
    assert [r.status for r in results] == ["SENT", "SENT", "SENT"]
    assert nhn.sent_twice() == [] and len(nhn.accepted) == 3
    first = {a.to: a.message_id.split(":")[0] for a in nhn.accepted if a.kind == "alimtalk"}
    assert results[0].provider_message_id == f"alimtalk:{first['01011112222']}:1"


def test_a_repeated_idempotency_key_is_refused_and_never_recorded_failed(nhn: FakeNhn) -> None:
    batch = [sms("d1")]
    assert run(nhn, lambda g: g.send_batch(batch, batch_key="b1"))[0].status == "SENT"
    # NHN fails a request repeating a key within 10 minutes; a plain resend reads as refused...
    again = run(nhn, lambda g: g.send_batch(batch, batch_key="b1"))
    assert (again[0].status, again[0].error_code) == ("FAILED", f"NHN_{DUPLICATE_CODE}")
    # ...so a resend that may follow an accepted request asks first, and finds it.
    asked = run(nhn, lambda g: g.send_batch(batch, batch_key="b1", maybe_sent=True))
    assert asked[0].status == "SENT" and asked[0].provider_message_id
    assert len(nhn.accepted) == 1


def test_a_refused_resend_nhn_holds_nothing_of_is_unknown_not_failed(nhn: FakeNhn) -> None:
    nhn.senders.clear()  # every send is refused (-1003)
    results = run(nhn, lambda g: g.send_batch([sms("d1")], batch_key="b1", maybe_sent=True))
    assert (results[0].status, results[0].error_code) == ("UNKNOWN", "NHN_-1003")


def test_lookup_lists_by_sender_grouping_key_and_request_dates(nhn: FakeNhn) -> None:
    batch = [alimtalk("d1"), sms("d2", "+821033334444"), sms("d3", kind="LMS", title="t", text="긴 문자")]

    async def body(g: NhnGateway) -> Any:
        await g.send_batch(batch, batch_key="b1")
        await g.send_batch([sms("d9")], batch_key="other")
        return await g.lookup([*batch, sms("d9"), sms("d4")], batch_key="b1")

    found = {r.delivery_id: r for r in run(nhn, body)}
    assert sorted(found) == ["d1", "d2", "d3"]
    assert found["d3"].provider_message_id and found["d3"].provider_message_id.startswith("mms:")
    assert nhn.queries == 3


def test_lookup_that_nhn_cannot_answer_is_unavailable(nhn: FakeNhn) -> None:
    nhn.fail_queries = 1
    with pytest.raises(ProviderUnavailable):
        run(nhn, lambda g: g.lookup([sms("d1")], batch_key="b1"))


def test_5xx_is_retryable_and_then_sends_once(nhn: FakeNhn) -> None:
    nhn.fail_5xx = 1
    with pytest.raises(ProviderUnavailable) as info:
        run(nhn, lambda g: g.send_batch([sms("d1")], batch_key="b1"))
    assert info.value.code == "HTTP_500"
    results = run(nhn, lambda g: g.send_batch([sms("d1")], batch_key="b1"))
    assert results[0].status == "SENT"
    assert len(nhn.accepted) == 1


def test_sms_and_marketing_lms_use_their_endpoints(nhn: FakeNhn) -> None:
    ad = "(광고)magpie\n" + "봄 세일 " * 20 + "\n무료수신거부 080-123-4567"
    lms = sms("d2", text=ad, kind="LMS", title="봄 세일", marketing=True)
    results = run(nhn, lambda g: g.send_batch([sms("d1"), lms], batch_key="b1"))
    assert [r.status for r in results] == ["SENT", "SENT"]
    assert [a.kind for a in nhn.accepted] == ["sms", "ad-mms"]
    assert nhn.accepted[1].fields == {"title": "봄 세일"}


def test_unregistered_sender_number_fails_with_nhn_code(nhn: FakeNhn) -> None:
    async def body(_: NhnGateway) -> Any:
        gateway = NhnGateway(config=nhn.config(), sender_number="02-9999-9999")
        try:
            return await gateway.send_batch([sms("d1")], batch_key="b1")
        finally:
            await gateway.aclose()

    results = run(nhn, body)
    assert (results[0].status, results[0].error_code) == ("FAILED", "NHN_-1003")


def test_mms_uploads_its_image_then_names_it_in_attach_file_id_list(nhn: FakeNhn) -> None:
    url = nhn.image_url("sale.jpg", JPEG)
    mms = [sms(f"d{i}", f"+82101111000{i}", kind="MMS", title="봄 세일", image_urls=(url,)) for i in range(2)]
    results = run(nhn, lambda g: g.send_batch(mms, batch_key="b1"))
    assert [r.status for r in results] == ["SENT", "SENT"]
    assert len(nhn.files) == 1  # one upload for the image both messages carry
    assert [a.kind for a in nhn.accepted] == ["mms", "mms"]
    assert nhn.accepted[0].fields["images"] == [hashlib.sha256(JPEG).hexdigest()]


@pytest.mark.parametrize(
    ("name", "data", "code"),
    [
        pytest.param("photo.png", b"\x89PNG\r\n\x1a\n" + bytes(32), "MMS_IMAGE_NOT_JPEG", id="not-a-jpeg"),
        pytest.param("huge.jpg", JPEG + bytes(300 * 1024), "MMS_IMAGE_TOO_LARGE", id="over-300-kb"),
        pytest.param("gone.jpg", None, "MMS_IMAGE_UNAVAILABLE", id="not-found"),
    ],
)
def test_mms_image_nhn_cannot_take_fails_that_recipient_before_any_send(
    nhn: FakeNhn, name: str, data: bytes | None, code: str
) -> None:
    url = nhn.image_url(name, data) if data is not None else f"{nhn.base_url}/__fake/images/{name}"
    results = run(nhn, lambda g: g.send_batch([sms("d1", kind="MMS", image_urls=(url,))], batch_key="b"))
    assert (results[0].status, results[0].error_code) == ("FAILED", code)
    assert nhn.send_requests == 0 and nhn.files == {}


def test_unreachable_kakao_user_gets_the_fallback_text_and_polling_reports_it(nhn: FakeNhn) -> None:
    nhn.kakao_unreachable.add("01011112222")
    message = alimtalk("d1", fallback=Fallback(kind="SMS", text="주문 A-1 출발"))
    plain = alimtalk("d2", "+821033334444")

    async def body(g: NhnGateway) -> Any:
        sent = await g.send_batch([message, plain], batch_key="b1")
        return sent, await g.poll([r.provider_message_id for r in sent if r.provider_message_id])

    sent, reports = run(nhn, body)
    assert [r.status for r in sent] == ["SENT", "SENT"]
    resend = nhn.accepted[0].fields["resendParameter"]
    assert resend["isResend"] is True and resend["resendType"] == "SMS" and resend["resendSendNo"] == "0212345678"
    assert [a.kind for a in nhn.accepted] == ["alimtalk", "fallback", "alimtalk"]
    by_delivery = {r.delivery_id: r for r in reports}
    assert by_delivery["d1"].delivered and by_delivery["d1"].code == "RSC04"
    assert by_delivery["d2"].delivered and by_delivery["d2"].code == "1000"


def test_polling_reports_carrier_failures(nhn: FakeNhn) -> None:
    nhn.undeliverable.add("01011112222")

    async def body(g: NhnGateway) -> Any:
        sent = await g.send_batch([sms("d1"), sms("d2", "+821033334444", text="다른 문자")], batch_key="b1")
        return await g.poll([r.provider_message_id for r in sent if r.provider_message_id])

    reports = {r.delivery_id: r for r in run(nhn, body)}
    assert (reports["d1"].delivered, reports["d1"].code) == (False, "3015")
    assert reports["d2"].delivered


def test_connection_refused_is_retryable() -> None:
    gateway_config = {
        "alimtalkAppKey": "k",
        "alimtalkSecretKey": "s",
        "senderKey": "x",
        "alimtalkBaseUrl": "http://127.0.0.1:9",
    }

    async def main() -> None:
        gateway = NhnGateway(config=gateway_config, timeout=1.0)
        try:
            await gateway.send_batch([alimtalk("d1")], batch_key="b")
        finally:
            await gateway.aclose()

    with pytest.raises(ProviderUnavailable) as info:
        asyncio.run(main())
    assert info.value.code == "CONNECTION_ERROR"
