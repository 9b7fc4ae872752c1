"""Rendered Kakao and text messages, as the dispatcher hands them to a gateway, for the gateway tests."""

from __future__ import annotations

from typing import Any

from magpie.providers.base import PhoneMessage

TEMPLATE = "#{name}님, 주문 #{order}이 출발했어요"


def alimtalk(
    delivery: str, to: str = "+821011112222", *, template_code: str = "ORDER_SHIPPED", **changes: Any
) -> PhoneMessage:
    fields: dict[str, Any] = {
        "delivery_id": delivery,
        "to": to,
        "channel": "kakao",
        "kind": "alimtalk",
        "text": "홍길동님, 주문 A-1이 출발했어요",
        "template_code": template_code,
        "template_parameters": {"name": "홍길동", "order": "A-1"},
        "buttons": ({"type": "WL", "name": "배송 조회", "linkMo": "https://shop.example/o/A-1"},),
    }
    return PhoneMessage(**{**fields, **changes})


def sms(delivery: str, to: str = "+821011112222", text: str = "주문이 출발했어요", **changes: Any) -> PhoneMessage:
    fields: dict[str, Any] = {"delivery_id": delivery, "to": to, "channel": "sms", "kind": "SMS", "text": text}
    return PhoneMessage(**{**fields, **changes})
